"""What the benchmarks' argument tests share: run a bench binary on each bad argument list and expect a non-zero
exit with the given words in its error message (no GPU needed: the checks run before any device call)."""
import os
import subprocess

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "configs", "qwen3_30b_a3b.json")


def check_bad_arguments(bench, cases):
    """cases: (argument list, expected words in stderr). Returns the process exit code: 0 if every case fails as
    expected, 1 otherwise."""
    failed = 0
    for args, expected in cases:
        p = subprocess.run([bench, *args], capture_output=True, text=True, timeout=60)
        if p.returncode == 0 or expected not in p.stderr:
            print(f"FAIL {args}: rc={p.returncode}, stderr={p.stderr.strip()!r}, wanted {expected!r}")
            failed += 1
        else:
            print(f"ok   {args}: {p.stderr.strip()}")
    return 1 if failed else 0
