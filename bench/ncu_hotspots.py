#!/usr/bin/env python3
"""Ranks the SASS instructions of each kernel in an Nsight Compute source-page CSV by sampled warp stalls.

Input: the output of `ncu --section SourceCounters --page source --print-source sass --csv PROGRAM` (a line
`"Kernel Name","<name>",` before each kernel's table; the profiled program's own output may come first).
Output, per kernel: the samples in all, then the N instructions holding the most samples (share of the
kernel's samples, address, instruction, times executed). A spin on a barrier shows as its branch back;
`wgmma.wait_group` as WARPGROUP.DEPBAR. Found on an H100 (2026-12-06) that the grouped GEMM's consumers spent
16.5% of samples spinning on their `full` barrier. Usage: python3 bench/ncu_hotspots.py ncu.csv [--top N]
"""
import argparse
import csv
import io
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"


def kernels(text):
    """[(kernel name, header, rows)] from the CSV text; SystemExit on input without a kernel table."""
    marker = '"Kernel Name",'
    parts = text.split(marker)
    if len(parts) < 2:
        raise SystemExit('ncu_hotspots: no "Kernel Name" line: not an ncu --page source --csv output')
    out = []
    for part in parts[1:]:
        name_line, _, table = part.partition("\n")
        name = next(csv.reader([name_line]))[0]
        rows = list(csv.reader(io.StringIO(table)))
        if not rows:
            raise SystemExit(f"ncu_hotspots: kernel {name!r} has no table")
        header = rows[0]
        for column in ("Address", "Source", SAMPLES, "Instructions Executed"):
            if column not in header:
                raise SystemExit(f"ncu_hotspots: kernel {name!r}: no column {column!r} (collect SourceCounters)")
        out.append((name, header, [r for r in rows[1:] if len(r) == len(header)]))
    return out


def number(text):
    try:
        return float(text.replace(",", "")) if text else 0.0
    except ValueError:
        raise SystemExit(f"ncu_hotspots: not a number: {text!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    if args.top < 1:
        raise SystemExit("ncu_hotspots: --top must be at least 1")
    with open(args.csv) as f:
        text = f.read()
    for name, header, rows in kernels(text):
        at = {c: header.index(c) for c in ("Address", "Source", SAMPLES, "Instructions Executed")}
        total = sum(number(r[at[SAMPLES]]) for r in rows)
        print(f"{name}\n  {int(total)} samples over {len(rows)} instructions")
        if total == 0:
            continue
        ranked = sorted(rows, key=lambda r: -number(r[at[SAMPLES]]))[:args.top]
        print("  | share | address | instruction | executed |\n  |---|---|---|---|")
        for r in ranked:
            share = 100 * number(r[at[SAMPLES]]) / total
            print(f"  | {share:.1f}% | {r[at['Address']]} | {' '.join(r[at['Source']].split())} | "
                  f"{int(number(r[at['Instructions Executed']]))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
