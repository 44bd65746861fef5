#!/usr/bin/env python3
"""Where a decode step's time goes, from a chain trace (bench/chain_trace_injection.cpp's lines).

Kernels launched from CUDA graphs (graph node != 0) are grouped into replays: a replay ends where the GPU sat
idle for more than --gap-us (the next kernel starts that long after every earlier one has ended), so a long
kernel that started on time (the LM head) stays in its replay. Within a replay each kernel's in-chain cost is its end minus the
previous kernel's end: under programmatic dependent launch a kernel starts early and waits, so its own
duration (end - start) overstates what it adds, while the end-to-end difference is what the step pays for it.
Kernels are keyed by name and grid, so the same GEMV on different shapes (q|k|v, o, the LM head) stay apart.
A per-layer line sums the kernels that run once per layer (the most common repeat count above one).
With --eager, the host-launched kernels instead (a benchmark outside graphs, e.g. bench_gpu_moe_layer --only):
each kernel's summed duration and its share of all of them, the GPU's busy time (the union of the kernels'
intervals) and the span from the first start to the last end, so idle gaps between launches show too.
Usage: chain_trace_report.py TRACE [--gap-us 50] [--min-kernels 20] [--eager]
"""
import argparse
import collections
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--gap-us", type=float, default=50.0, help="an idle gap this long ends a replay")
    ap.add_argument("--min-kernels", type=int, default=20, help="replays with fewer kernels are left out")
    ap.add_argument("--eager", action="store_true", help="report the host-launched kernels, not graph replays")
    args = ap.parse_args()
    rows, eager = [], []
    with open(args.trace) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 9:
                sys.exit(f"{args.trace}:{n}: expected 9 fields, got {len(parts)}")
            try:
                start, end, gx, gy, gz, bx, cx, node = (int(p) for p in parts[:8])
            except ValueError:
                sys.exit(f"{args.trace}:{n}: the first 8 fields must be integers (not a number in {line.strip()!r})")
            key = f"{parts[8]} grid({gx},{gy},{gz})x{bx}" + (f" cluster {cx}" if cx > 1 else "")
            if node != 0:
                rows.append((end, start, key))
            else:
                eager.append((start, end, key))
    if args.eager:
        report_eager(args.trace, eager)
        return
    if not rows:
        sys.exit(f"{args.trace}: no kernels launched from CUDA graphs")
    rows.sort()
    replays, current = [], [rows[0]]
    last_end = rows[0][0]
    for r in rows[1:]:
        if r[1] - last_end > args.gap_us * 1000:  # idle since every earlier kernel ended
            replays.append(current)
            current = []
        current.append(r)
        last_end = max(last_end, r[0])
    replays.append(current)
    replays = [r for r in replays if len(r) >= args.min_kernels]
    if not replays:
        sys.exit(f"{args.trace}: no replay with at least {args.min_kernels} kernels")
    # Replays of different lengths are different graphs (greedy, sampled, ...): report the most common length.
    length = collections.Counter(len(r) for r in replays).most_common(1)[0][0]
    replays = [r for r in replays if len(r) == length]
    cost = collections.defaultdict(float)
    duration = collections.defaultdict(float)
    count = collections.Counter()
    order = {}
    step_total = 0.0
    for rep in replays:
        step_total += (rep[-1][0] - rep[0][1]) / 1000
        prev_end = rep[0][1]  # the first kernel pays from its own start
        for end, start, key in rep:
            cost[key] += (end - prev_end) / 1000
            duration[key] += (end - start) / 1000
            count[key] += 1
            order.setdefault(key, len(order))
            prev_end = end
    steps = len(replays)
    print(f"{steps} replays of {length} kernels; mean replay {step_total / steps:.1f} us (first start to last end)")
    # Per layer: the kernels that run the most common number of times per replay above once (the layer count).
    repeats = collections.Counter(round(count[k] / steps) for k in cost if count[k] > steps)
    if repeats:
        layers = repeats.most_common(1)[0][0]
        per_layer = sum(cost[k] for k in cost if round(count[k] / steps) == layers) / steps / layers
        rest = step_total / steps - per_layer * layers
        print(f"per layer ({layers} per replay): {per_layer:.1f} us in chain; the rest of the replay {rest:.1f} us")
    print()
    print("| kernel (grid x block) | per replay | in-chain us each | duration us each | share of replay |")
    print("|---|---|---|---|---|")
    for key in sorted(cost, key=lambda k: -cost[k]):
        per = count[key] / steps
        print(f"| {key} | {per:g} | {cost[key] / count[key]:.2f} | {duration[key] / count[key]:.2f} | "
              f"{100 * cost[key] / step_total:.1f}% |")


def report_eager(trace, kernels):
    """Summed durations of host-launched kernels by name and grid, against the GPU's busy time and the span."""
    if not kernels:
        sys.exit(f"{trace}: no host-launched kernels")
    kernels.sort()
    busy, cover_end = 0, None
    for start, end, _ in kernels:  # the union of the intervals: overlapping kernels count once
        if cover_end is None or start > cover_end:
            busy += end - start
            cover_end = end
        elif end > cover_end:
            busy += end - cover_end
            cover_end = end
    span = max(e for _, e, _ in kernels) - kernels[0][0]
    total = collections.defaultdict(int)
    count = collections.Counter()
    for start, end, key in kernels:
        total[key] += end - start
        count[key] += 1
    summed = sum(total.values())
    print(f"{len(kernels)} kernels; busy {busy / 1000:.1f} us of a {span / 1000:.1f} us span "
          f"({100 * busy / span if span else 100:.1f}%)")
    print()
    print("| kernel (grid x block) | launches | duration us each | total us | share of kernel time |")
    print("|---|---|---|---|---|")
    for key in sorted(total, key=lambda k: -total[k]):
        print(f"| {key} | {count[key]} | {total[key] / count[key] / 1000:.2f} | {total[key] / 1000:.1f} | "
              f"{100 * total[key] / summed:.1f}% |")


if __name__ == "__main__":
    main()
