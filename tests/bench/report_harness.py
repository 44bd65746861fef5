"""What the report scripts' tests share: run a bench/ script on made-up input written to a temporary file, and
collect failed checks into one exit code."""
import os
import subprocess
import sys
import tempfile

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")


def run_script(script, text, *args, suffix=".txt"):
    """bench/<script> on a file holding `text`, with `args`; the finished process (stdout, stderr captured)."""
    with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False) as f:
        f.write(text)
        path = f.name
    try:
        return subprocess.run([sys.executable, os.path.join(BENCH, script), path, *args], capture_output=True,
                              text=True)
    finally:
        os.unlink(path)


class Checks:
    """check(condition, what) records failures; finish() prints them and returns the exit code."""

    def __init__(self):
        self.failures = []

    def check(self, condition, what):
        if not condition:
            self.failures.append(what)

    def finish(self):
        for f in self.failures:
            print("FAIL:", f)
        print("all checks passed" if not self.failures else f"{len(self.failures)} checks failed")
        return 1 if self.failures else 0
