#!/usr/bin/env python3
"""bench_gpu_decode's argument checks (no GPU needed: they run before any device call): bad --ab sets and batch
lists exit non-zero with a message that says what is wrong."""
import os
import subprocess
import sys

BENCH = sys.argv[1]
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "configs", "qwen3_30b_a3b.json")

CASES = [
    (["--ab", "SY_X"], "--ab takes SY_NAME=VALUE words"),
    (["--ab", "FOO=1"], "--ab takes SY_NAME=VALUE words"),
    (["--ab", "SY_=1"], "--ab takes SY_NAME=VALUE words"),
    (["--ab", "SY_x=1"], "--ab takes SY_NAME=VALUE words"),
    (["--ab", "SY_X=1; ;SY_Y=0"], "--ab has an empty set"),
    (["--ab", ""], "--ab needs at least one set"),
    (["--ab", "SY_X=1", "--ep"], "--ab runs on one GPU"),
    (["--ab", "SY_X=1", "--ab-batches", "0"], "batch sizes must be 1 or more"),
    (["--batches", "2,-1"], "batch sizes must be 1 or more"),
    (["--ab"], "--ab needs a value"),
]

failed = 0
for args, expected in CASES:
    p = subprocess.run([BENCH, "--config", CONFIG, *args], capture_output=True, text=True, timeout=60)
    if p.returncode == 0 or expected not in p.stderr:
        print(f"FAIL {args}: rc={p.returncode}, stderr={p.stderr.strip()!r}, wanted {expected!r}")
        failed += 1
    else:
        print(f"ok   {args}: {p.stderr.strip()}")
sys.exit(1 if failed else 0)
