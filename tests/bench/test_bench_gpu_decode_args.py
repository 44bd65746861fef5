#!/usr/bin/env python3
"""bench_gpu_decode's argument checks (no GPU needed: they run before any device call): bad --ab sets and batch
lists exit non-zero with a message that says what is wrong."""
import sys

from bench_args import CONFIG, check_bad_arguments

BENCH = sys.argv[1]

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

sys.exit(check_bad_arguments(BENCH, [(["--config", CONFIG, *args], expected) for args, expected in CASES]))
