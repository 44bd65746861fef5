#!/usr/bin/env python3
"""bench_gpu_moe_layer's argument checks (no GPU needed: they run before any device call): bad token counts,
iteration counts and flags exit non-zero with a message that says what is wrong."""
import sys

from bench_args import CONFIG, check_bad_arguments

BENCH = sys.argv[1]

CASES = [
    (["--config", CONFIG, "--tokens", "0"], "token counts must be 1 or more"),
    (["--config", CONFIG, "--tokens", "64,-2"], "token counts must be 1 or more"),
    (["--config", CONFIG, "--tokens", ""], "--tokens needs at least one count"),
    (["--config", CONFIG, "--iters", "0"], "--iters must be at least 1"),
    (["--config", CONFIG, "--paths", "x"], "unknown flag --paths"),
    (["--config", CONFIG, "--only"], "--only needs a value"),
    (["--tokens", "1"], "give --config"),
]

sys.exit(check_bad_arguments(BENCH, CASES))
