#!/usr/bin/env python3
"""Thread-by-thread emulation of make_dispatch_layout's chunked form (src/kernels/cuda/dispatch.cu:
chunk_count_kernel, expert_scan_kernel, chunk_rows_kernel; set_chunked_dispatch_layout), written 2026-12-06
before any GPU ran it (GpuOps.ChunkedDispatchLayoutMatchesCpu is the real check). It replays the three kernels'
arithmetic (chunks of KCHUNK assignments, each expert's warp scan over the chunks 32 at a time, the offsets
from lanes' runs of experts, rounds of THREADS lanes in warps of 32, match.any groups, the per-warp counts,
each expert's running next row) and compares the rows with the reference layout: experts in
order, each expert's assignments in assignment order (sy::moe::make_dispatch_layout). Deliberately broken
variants (lanes ranked without the earlier warps, next rows not advanced between rounds, chunk bases without
the expert offsets) must be caught. Usage: python3 tools/chunked_layout_emulation.py (standard library only,
seconds; exit 0 = every case matches and every broken variant is caught). Keep it in step with the kernels.
"""
import random
import sys

KCHUNK = 1024
THREADS = 256
WARPS = THREADS // 32


def reference(expert, num_experts):
    counts = [0] * num_experts
    for x in expert:
        if 0 <= x < num_experts:
            counts[x] += 1
    offsets = [0]
    for n in counts:
        offsets.append(offsets[-1] + n)
    row_assignment = [a for e in range(num_experts) for a, x in enumerate(expert) if x == e]
    return counts, offsets, row_assignment


def chunked(expert, num_experts, broken=None):
    assignments = len(expert)
    chunks = (assignments + KCHUNK - 1) // KCHUNK
    # chunk_count_kernel
    chunk_counts = [[0] * num_experts for _ in range(chunks)]
    for c in range(chunks):
        for a in range(c * KCHUNK, min((c + 1) * KCHUNK, assignments)):
            x = expert[a]
            if 0 <= x < num_experts:
                chunk_counts[c][x] += 1
    # expert_scan_kernel: a warp per expert, 32 chunks per step, inclusive shuffle scan plus the carry.
    first = [[0] * num_experts for _ in range(chunks)]
    counts = [0] * num_experts
    for e in range(num_experts):
        carry = 0
        for c0 in range(0, chunks, 32):
            v = [chunk_counts[c][e] if c < chunks else 0 for c in range(c0, c0 + 32)]
            incl = [sum(v[: lane + 1]) for lane in range(32)]
            for lane in range(32):
                if c0 + lane < chunks:
                    first[c0 + lane][e] = carry + incl[lane] - v[lane]
            carry += incl[31]
        counts[e] = carry
    # chunk_rows_kernel's prelude: warp 0, lane l sums experts [l * run, (l + 1) * run), an exclusive scan of
    # the lanes' sums, then each lane writes its run's offsets.
    run = (num_experts + 31) // 32
    sums = [sum(counts[min(l * run, num_experts):min(l * run + run, num_experts)]) for l in range(32)]
    incl = [sum(sums[: l + 1]) for l in range(32)]
    offsets = [0] * (num_experts + 1)
    for l in range(32):
        off = incl[l] - sums[l]
        for e in range(min(l * run, num_experts), min(l * run + run, num_experts)):
            offsets[e] = off
            off += counts[e]
    offsets[num_experts] = incl[31]
    off = offsets[num_experts]
    if broken != "no expert offsets":
        for e in range(num_experts):
            for c in range(chunks):
                first[c][e] += offsets[e]
    # chunk_rows_kernel
    row_assignment = [None] * off
    for c in range(chunks):
        nxt = list(first[c])
        lo, hi = c * KCHUNK, min((c + 1) * KCHUNK, assignments)
        for start in range(lo, hi, THREADS):
            warp_count = [[0] * num_experts for _ in range(WARPS)]
            ids = [expert[start + t] if start + t < hi else -1 for t in range(THREADS)]
            valid = [0 <= x < num_experts for x in ids]
            key = [x if v else -1 for x, v in zip(ids, valid)]
            rank = [0] * THREADS
            for t in range(THREADS):
                w, lane = divmod(t, 32)
                same = [l for l in range(32) if key[w * 32 + l] == key[t]]  # match.any
                rank[t] = sum(1 for l in same if l < lane)
                if valid[t] and rank[t] == 0:
                    warp_count[w][ids[t]] = len(same)
            for t in range(THREADS):
                if not valid[t]:
                    continue
                w = t // 32
                before = rank[t]
                if broken != "no earlier warps":
                    before += sum(warp_count[v][ids[t]] for v in range(w))
                row = nxt[ids[t]] + before
                if row_assignment[row] is not None:
                    return counts, offsets, None  # two assignments on one row
                row_assignment[row] = start + t
            if broken != "next rows not advanced":
                for e in range(num_experts):
                    nxt[e] += sum(warp_count[w][e] for w in range(WARPS))
    return counts, offsets, row_assignment


def main():
    rng = random.Random(7)
    cases = [
        ("random top-8 of 128, 600 tokens", [rng.randrange(128) for _ in range(4800)], 128),
        ("more than 32 chunks (two scan steps), 100 experts", [rng.randrange(100) for _ in range(40000)], 100),
        ("1000 experts (runs of 32 per lane)", [rng.randrange(1000) for _ in range(3000)], 1000),
        ("one expert over many chunks", [2] * 3000, 4),
        ("a part chunk last, 60 experts", [rng.randrange(60) for _ in range(2600)], 60),
        ("skewed: half on expert 0", [0 if rng.random() < 0.5 else rng.randrange(16) for _ in range(3000)], 16),
        ("ids out of range are skipped", [rng.choice([-1, 5, 1, 9, 3]) for _ in range(1500)], 8),
        ("fewer than a round", [rng.randrange(7) for _ in range(300)], 7),
    ]
    failures = 0
    for name, expert, e in cases:
        want = reference(expert, e)
        got = chunked(expert, e)
        if got != want:
            print(f"FAIL {name}: the chunked layout differs from the reference")
            failures += 1
        else:
            print(f"ok   {name} ({len(expert)} assignments, {e} experts)")
    for broken in ("no earlier warps", "next rows not advanced", "no expert offsets"):
        expert = [rng.randrange(32) for _ in range(2500)]
        if chunked(expert, 32, broken) == reference(expert, 32):
            print(f"FAIL the broken variant '{broken}' was not caught")
            failures += 1
        else:
            print(f"ok   broken variant caught: {broken}")
    print("ok" if failures == 0 else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
