#!/usr/bin/env python3
"""Runs every `curl` example of README.md's "Serving" section against a live `switchyard serve`.

  python3 test_readme_examples.py --cli build/tools/cli/switchyard --readme README.md

Each example's URL port is rewritten to the test server's; each must exit 0 and print valid JSON (SSE for
streams, Prometheus text for /metrics).
"""
import argparse
import json
import re
import subprocess
import sys

from serve_harness import Server


def examples(readme):
    text = open(readme, encoding="utf-8").read()
    section = text.split("## Serving", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip().startswith("curl "):
                commands.append(cmd.strip())
    return commands


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--readme", required=True)
    args = ap.parse_args()
    commands = examples(args.readme)
    assert len(commands) >= 4, commands
    s = Server(args.cli)
    failed = 0
    try:
        for cmd in commands:
            cmd = cmd.replace("127.0.0.1:8000", f"{s.host}:{s.port}")
            out = subprocess.run(["bash", "-c", cmd + " --fail-with-body"], capture_output=True, text=True,
                                 timeout=120)
            try:
                assert out.returncode == 0, f"exit {out.returncode}: {out.stdout} {out.stderr}"
                if "/metrics" in cmd:
                    assert "switchyard_requests_total" in out.stdout
                elif '"stream": true' in cmd:
                    events = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
                    assert events[-1] == "[DONE]" and all(json.loads(e) for e in events[:-1]), out.stdout
                else:
                    j = json.loads(out.stdout)
                    assert "error" not in j, j
                print(f"ok   {cmd[:90]}")
            except (AssertionError, ValueError, IndexError) as e:
                failed += 1
                print(f"FAIL {cmd}\n  {e}")
    finally:
        code = s.stop()
    if code != 0:
        failed += 1
        print("FAIL server exit code", code)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
