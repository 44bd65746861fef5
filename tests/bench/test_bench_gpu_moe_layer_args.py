#!/usr/bin/env python3
"""bench_gpu_moe_layer's argument checks (no GPU needed: they run before any device call): bad token counts,
iteration counts and flags exit non-zero with a message that says what is wrong."""
import os
import subprocess
import sys

BENCH = sys.argv[1]
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "configs", "qwen3_30b_a3b.json")

CASES = [
    (["--config", CONFIG, "--tokens", "0"], "token counts must be 1 or more"),
    (["--config", CONFIG, "--tokens", "64,-2"], "token counts must be 1 or more"),
    (["--config", CONFIG, "--tokens", ""], "--tokens needs at least one count"),
    (["--config", CONFIG, "--iters", "0"], "--iters must be at least 1"),
    (["--config", CONFIG, "--paths", "x"], "unknown flag --paths"),
    (["--config", CONFIG, "--only"], "--only needs a value"),
    (["--tokens", "1"], "give --config"),
]

failed = 0
for args, expected in CASES:
    p = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=60)
    if p.returncode == 0 or expected not in p.stderr:
        print(f"FAIL {args}: rc={p.returncode}, stderr={p.stderr.strip()!r}, wanted {expected!r}")
        failed += 1
    else:
        print(f"ok   {args}: {p.stderr.strip()}")
sys.exit(1 if failed else 0)
