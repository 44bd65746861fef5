#!/usr/bin/env python3
"""Ranks the kernels of an Nsight Compute per-kernel summary by total time.

Input: the text of `ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel PROGRAM`
(bench/gpu_suite.sh writes it with SY_NCU=1). Output: one line per kernel launch configuration, total us,
invocations, mean us, grid and name, largest first. ncu flushes caches between kernels, so small kernels read
slower than inside a CUDA graph; use the ranking, not the sum, against a step time.
Usage: python3 bench/ncu_summary.py ncu.log [--top N]
"""
import re
import sys

HEADER = re.compile(r"^  (\S.*?) \((\d+), (\d+), (\d+)\)x\((\d+), (\d+), (\d+)\).*Invocations (\d+)")
METRIC = re.compile(r"gpu__time_duration\.sum\s+(\w+)\s+([\d.,]+)\s+([\d.,]+)\s+([\d.,]+)")
TO_US = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}


def parse(lines):
    rows = []
    for i, line in enumerate(lines):
        h = HEADER.match(line)
        if not h:
            continue
        for follow in lines[i + 1:i + 10]:
            m = METRIC.search(follow)
            if m:
                unit = m.group(1)
                if unit not in TO_US:
                    raise SystemExit(f"ncu_summary: unknown time unit '{unit}' in: {follow.strip()}")
                mean_us = float(m.group(4).replace(",", "")) * TO_US[unit]
                calls = int(h.group(8))
                rows.append((calls * mean_us, calls, mean_us, f"{h.group(2)}x{h.group(3)}x{h.group(4)}", h.group(1)))
                break
    return sorted(rows, reverse=True)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 40
    try:
        with open(argv[0], encoding="utf-8", errors="replace") as f:
            rows = parse(f.read().splitlines())
    except OSError as e:
        print(f"ncu_summary: cannot read {argv[0]}: {e.strerror}", file=sys.stderr)
        return 1
    if not rows:
        print(f"ncu_summary: no per-kernel gpu__time_duration.sum summary in {argv[0]}", file=sys.stderr)
        return 1
    total = sum(r[0] for r in rows)
    print(f"{'total us':>10} {'share':>6} {'calls':>6} {'mean us':>9}  {'grid':<10} kernel")
    for t, calls, mean, grid, name in rows[:top]:
        print(f"{t:10.1f} {100 * t / total:5.1f}% {calls:6d} {mean:9.2f}  {grid:<10} {name[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
