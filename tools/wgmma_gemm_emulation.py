#!/usr/bin/env python3
"""Thread-exact numpy emulation of grouped_gemm_sm90_kernel<kSwiGLU> in src/kernels/cuda/grouped_gemm_sm90.cu:
a check of the kernel's row-tile table, operand staging (cp.async into the 128-byte swizzled layout), wgmma
descriptor addressing, accumulator-fragment epilogue and cp.async/wgmma/barrier sequence that runs without a
GPU (written 2026-12-05, when the kernel was new and no device was lent; the GPU test
GpuGrouped.Sm90GroupedGemmMatchesCpu is the real check). Usage: python3 tools/wgmma_gemm_emulation.py (numpy,
under a minute; exit 0 = every case matches a float64 reference, the pipeline has no hazard, and every
deliberately broken variant is caught). Keep it in step with the kernel when either changes.

Model of the hardware (NVIDIA PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
  * Shared memory: a flat byte-addressed array of bf16 values (stored as float32 per 2-byte slot).
  * Matrix descriptor (sec. "Matrix Descriptor Format"): bits 0-13 start address >> 4, 16-29 leading byte
    offset >> 4, 32-45 stride byte offset >> 4, 62-63 swizzle (1 = 128 bytes). For a K-major operand with the
    128-byte swizzle, element (row i, k j) of the instruction's tile (j < 16, bf16) sits at the linear
    address start + (i // 8) * SBO + (i % 8) * 128 + 2 j, and the swizzle XORs address bits 4-6 with bits 7-9
    (the 16-byte chunk within a 128-byte row with the row within an 8-row, 1024-byte atom; atoms 1024-aligned).
  * wgmma.m64nNk16 f32 accumulator fragment (sec. "Register Fragments and Shared Memory Matrix Layouts"):
    thread t of the warpgroup holds d[4j + q] at row 16 (t // 32) + (t % 32) // 4 + 8 (q // 2), column
    8 j + 2 (t % 4) + (q % 2).
  * cp.async zero-fills when src_size is 0; groups complete in commit order per thread; wgmma groups likewise
    per warpgroup; __syncthreads orders everything the threads did before it.
"""
import sys

try:
    import numpy as np
except ImportError:  # CTest reads 77 as a skip
    print("numpy is not installed: skipped")
    sys.exit(77)

TILE_M, TILE_K, THREADS = 128, 64, 256
A_BYTES = TILE_M * TILE_K * 2
# The block tile's width and what follows from it (TileShape<kTileN> in the kernel); set_tile switches.
TILE_N, STAGES, STAGE_BYTES = 128, 5, 2 * A_BYTES


def set_tile(tile_n):
    global TILE_N, STAGES, STAGE_BYTES
    TILE_N, STAGES, STAGE_BYTES = tile_n, 5 if tile_n == 128 else 4, A_BYTES + tile_n * TILE_K * 2


def bf16(a):
    """Round float64/float32 values to bf16 (round to nearest even), returned as float64."""
    a = np.asarray(a, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    sixteen = np.uint64(16)
    rounded = ((bits + np.uint64(0x7FFF) + ((bits >> sixteen) & np.uint64(1))) >> sixteen) << sixteen
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def swizzled(r, c, broken=None):
    if broken == "no_swizzle_write":
        return r * 128 + (c << 4)
    return r * 128 + ((c ^ (r & 7)) << 4)


def descriptor(address, broken=None):
    sbo = 512 if broken == "sbo" else 1024
    return ((address & 0x3FFFF) >> 4) | (1 << 16) | ((sbo >> 4) << 32) | (1 << 62)


def descriptor_read(smem, desc, rows):
    """The (rows x 16) K-major bf16 tile a wgmma reads through descriptor `desc` (128-byte swizzle)."""
    start = (desc & 0x3FFF) << 4
    sbo = ((desc >> 32) & 0x3FFF) << 4
    assert (desc >> 62) == 1, "only the 128-byte swizzle is modelled"
    i = np.arange(rows)[:, None]
    j = np.arange(16)[None, :]
    linear = start + (i // 8) * sbo + (i % 8) * 128 + 2 * j
    physical = linear ^ (((linear >> 7) & 7) << 4)
    return smem[physical // 2]


def row_tile_table(offsets, experts, max_tiles, broken=None):
    """row_tile_table_kernel, thread by thread: chunks of THREADS experts, a Hillis-Steele inclusive scan of their
    tile counts, each expert's tiles written from its exclusive prefix, the rest marked expert -1."""
    table = [None] * max_tiles
    carry = 0
    for e0 in range(0, experts, THREADS):
        lo = [offsets[e0 + t] if e0 + t < experts else 0 for t in range(THREADS)]
        count = [offsets[e0 + t + 1] - offsets[e0 + t] if e0 + t < experts else 0 for t in range(THREADS)]
        n = [(c + TILE_M - 1) // TILE_M if c > 0 else 0 for c in count]
        scan = list(n)
        d = 1
        while d < THREADS:
            scan = [scan[t] + (scan[t - d] if t >= d else 0) for t in range(THREADS)]
            d <<= 1
        for t in range(THREADS):
            first = carry + scan[t] - n[t]
            if broken == "table_inclusive":
                first = carry + scan[t]
            for i in range(n[t]):
                if first + i < max_tiles:
                    start = i * TILE_M
                    table[first + i] = (e0 + t, lo[t] + start, min(count[t] - start, TILE_M))
        carry += scan[THREADS - 1]
    for i in range(carry, max_tiles):
        table[i] = (-1, 0, 0)
    assert all(entry is not None for entry in table), "row tiles left unwritten"
    return table


def activation(g, u, limit, alpha):
    """The epilogue's activation: SwiGLU, or gpt-oss's clamped form when limit > 0 (as ops::clamped_swiglu)."""
    if limit > 0:
        g = np.minimum(g, limit)
        u = np.clip(u, -limit, limit)
        return (u + 1) * (g / (1 + np.exp(-alpha * g)))
    return g / (1 + np.exp(-g)) * u


def run_block(block, x, gather, top_k, table, w0, w1, y, n, k, swiglu, broken=None, hazards=None, bias=(None, None),
              limit=0.0, alpha=1.702):
    """Emulates one block of the kernel; writes its outputs into y (float64, NaN = untouched)."""
    experts = len(w0)
    n_tiles = -(-n // (TILE_N // 2 if swiglu else TILE_N))
    m_tile, n_tile = block // n_tiles, block % n_tiles
    expert, row0, rows = table[m_tile]
    if expert < 0:
        return
    smem = np.full((STAGES * STAGE_BYTES) // 2, np.nan)
    ring = 0  # the aligned ring starts at a 1024-byte boundary
    # Per-thread staging sources: A rows row_base + 32 i (i < 4), B rows row_base + 32 i (i < TILE_N / 32).
    src_a, src_b = {}, {}
    for t in range(THREADS):
        chunk, row_base = t & 7, t >> 3
        for i in range(4):
            r = row_base + 32 * i
            a_in = r < rows
            x_row = row0 + r
            if a_in and gather is not None:
                x_row = gather[x_row] // top_k
            src_a[t, i] = (a_in, x_row, chunk, r)
        for i in range(TILE_N // 32):
            r = row_base + 32 * i
            if swiglu:
                half = TILE_N // 2
                n_row = n_tile * half + (r % half)
                w = w1[expert] if r >= half else w0[expert]
                if broken == "gate_up_swapped":
                    w = w0[expert] if r >= half else w1[expert]
            else:
                n_row = n_tile * TILE_N + r
                w = w0[expert]
            b_in = n_row < n
            src_b[t, i] = (b_in, n_row, w, chunk, r)

    # Pipeline bookkeeping for the hazard check: per stage, the tile it holds and whether its loads landed.
    stage_tile = [None] * STAGES
    pending_loads = [[] for _ in range(THREADS)]  # per thread: list of groups, each a list of stages
    uncommitted = [[] for _ in range(THREADS)]
    wgmma_inflight = [[], []]  # per warpgroup: list of groups, each the stage it reads
    landed = set()  # (stage, tile) whose copies every thread has waited for and a barrier published

    def load_stage(kt, stage):
        # The stage must not be read by an in-flight wgmma group of any warpgroup.
        for wg in range(2):
            for group in wgmma_inflight[wg]:
                if group == stage and hazards is not None:
                    hazards.append(f"block {block}: loads tile {kt} into stage {stage} while warpgroup {wg} reads it")
        stage_tile[stage] = kt
        landed.discard(stage)
        k0 = kt * TILE_K
        a_base, b_base = ring + stage * STAGE_BYTES, ring + stage * STAGE_BYTES + A_BYTES
        for t in range(THREADS):
            stores = [(a_base, a_in, x[x_row] if a_in else None, chunk, r)
                      for a_in, x_row, chunk, r in (src_a[t, i] for i in range(4))]
            stores += [(b_base, b_in, w[n_row] if b_in else None, chunk, r)
                       for b_in, n_row, w, chunk, r in (src_b[t, i] for i in range(TILE_N // 32))]
            for base, inside, row_vals, chunk, r in stores:
                ok = inside and k0 + chunk * 8 < k
                at = swizzled(r, chunk, broken)
                vals = row_vals[k0 + chunk * 8: k0 + chunk * 8 + 8] if ok else np.zeros(8)
                smem[(base + at) // 2: (base + at) // 2 + 8] = vals
            uncommitted[t].append(stage)

    def commit():
        for t in range(THREADS):
            pending_loads[t].append(uncommitted[t])
            uncommitted[t] = []

    def wait_loads(pending):
        for t in range(THREADS):
            while len(pending_loads[t]) > pending:
                pending_loads[t].pop(0)

    def barrier():
        # Stages whose load groups have retired in every thread are published.
        for s in range(STAGES):
            if stage_tile[s] is not None and all(s not in sum(pending_loads[t], []) for t in range(THREADS)):
                landed.add(s)

    acc = np.zeros((2, 64, TILE_N))
    k_tiles = -(-k // TILE_K)
    lookahead = STAGES - 1 if broken == "too_far_ahead" else STAGES - 2
    for s in range(lookahead):
        if s < k_tiles:
            load_stage(s, s)
        commit()
    for kt in range(k_tiles):
        wait_loads(STAGES - 3 if broken != "wait_too_loose" else STAGES - 2)
        barrier()
        nxt = kt + lookahead
        if nxt < k_tiles:
            load_stage(nxt, nxt % STAGES)
        commit()
        stage = kt % STAGES
        if hazards is not None and (stage not in landed or stage_tile[stage] != kt):
            hazards.append(f"block {block}: tile {kt} read from stage {stage} before its loads landed")
        for wg in range(2):
            a_stage = ring + stage * STAGE_BYTES + wg * (TILE_M // 2) * 128
            if broken == "warpgroup_offset":
                a_stage = ring + stage * STAGE_BYTES
            b_stage = ring + stage * STAGE_BYTES + A_BYTES
            for kk in range(TILE_K // 16):
                a = descriptor_read(smem, descriptor(a_stage + kk * 32, broken), 64)
                b = descriptor_read(smem, descriptor(b_stage + kk * 32, broken), TILE_N)
                acc[wg] += a @ b.T
            wgmma_inflight[wg].append(stage)
            keep = 1 if broken != "wait_none" else 2
            while len(wgmma_inflight[wg]) > keep:  # wgmma.wait_group 1
                wgmma_inflight[wg].pop(0)
    wgmma_inflight = [[], []]

    # Epilogue from the fragments, a quad (lanes 4i..4i+3, one row pair) at a time: each lane's words (two bf16
    # columns) of four 8-column groups, the quad transpose of three xor exchanges, then one 16-byte group per
    # lane (store_tile and quad_transpose in grouped_gemm_sm90.cuh).
    out_tiles = TILE_N // 16 if swiglu else TILE_N // 8
    tile_col0 = n_tile * (TILE_N // 2 if swiglu else TILE_N)
    for wg in range(2):
        for t0 in range(0, 128, 4):
            quad = range(t0, t0 + 4)
            lane0 = t0 % 32
            r_top = wg * 64 + (t0 // 32) * 16 + lane0 // 4
            local = (t0 // 32) * 16 + lane0 // 4
            d = {}
            for t in quad:
                frag = np.empty(TILE_N // 2)
                for j in range(TILE_N // 8):
                    for e in range(4):
                        frag[4 * j + e] = acc[wg, local + 8 * (e // 2), 8 * j + 2 * (t % 4) + (e % 2)]
                d[t] = frag
            for j0 in range(0, out_tiles, 4):
                words = {}  # lane -> [group u] -> (top pair, bottom pair)
                for t in quad:
                    q = t % 4
                    words[t] = []
                    for u in range(4):
                        j = j0 + u
                        col = tile_col0 + 8 * j + 2 * q
                        v = np.zeros(4)
                        for e in range(4):
                            c = col + (e & 1) if broken != "bias_column" else col
                            col_in = col < n
                            b0 = bias[0][expert, c] if bias[0] is not None and col_in else 0.0
                            if swiglu:
                                up_j = j + TILE_N // 16 if broken != "up_column" else j + TILE_N // 32
                                b1 = bias[1][expert, c] if bias[1] is not None and col_in else 0.0
                                v[e] = activation(d[t][4 * j + e] + b0, d[t][4 * up_j + e] + b1, limit, alpha)
                            else:
                                v[e] = d[t][4 * j + e] + b0
                        words[t].append(((bf16(v[0]), bf16(v[1])), (bf16(v[2]), bf16(v[3]))))
                # quad_transpose: in exchange s, lane q sends its word of group q ^ s and files the word it gets
                # from lane q ^ s under position q ^ s.
                out = {t: list(words[t]) for t in quad}
                for s_ in (1, 2, 3):
                    sent = {}
                    for t in quad:
                        q = t % 4
                        partner = q ^ s_
                        sent[t] = words[t][partner if broken != "transpose_send" else q]
                    for t in quad:
                        q = t % 4
                        partner = q ^ s_
                        got = sent[t0 + partner]
                        out[t][partner if broken != "transpose_file" else s_] = got
                for t in quad:
                    q = t % 4
                    group_col = tile_col0 + 8 * (j0 + q)
                    if group_col >= n:
                        continue
                    for rr, half_row in ((r_top, 0), (r_top + 8, 1)):
                        if rr < rows:
                            for p_ in range(4):  # word p: columns 2p, 2p + 1 of the group
                                lo, hi = out[t][p_][half_row]
                                y[row0 + rr, group_col + 2 * p_] = lo
                                y[row0 + rr, group_col + 2 * p_ + 1] = hi


def launch(x, gather, top_k, offsets, w0, w1, n, k, swiglu, bias, limit, broken=None, hazards=None):
    rows = offsets[-1]
    experts = len(w0)
    n_tiles = -(-n // (TILE_N // 2 if swiglu else TILE_N))
    m_tiles = -(-rows // TILE_M) + min(rows, experts)
    y = np.full((rows, n), np.nan)
    table = row_tile_table(offsets, experts, m_tiles, broken)
    for block in range(m_tiles * n_tiles):
        run_block(block, x, gather, top_k, table, w0, w1, y, n, k, swiglu, broken, hazards, bias, limit)
    return y


def reference(x, gather, top_k, offsets, w0, w1, n, swiglu, bias, limit):
    rows = offsets[-1]
    y = np.zeros((rows, n))
    for e in range(len(w0)):
        for r in range(offsets[e], offsets[e + 1]):
            xr = x[gather[r] // top_k] if gather is not None else x[r]
            b0 = bias[0][e] if bias[0] is not None else 0.0
            if swiglu:
                b1 = bias[1][e] if bias[1] is not None else 0.0
                y[r] = activation(w0[e] @ xr + b0, w1[e] @ xr + b1, limit, 1.702)
            else:
                y[r] = w0[e] @ xr + b0
    return y


def make_case(rng, counts, n, k, tokens=None, top_k=1, swiglu=False, biased=False, limit=0.0):
    counts = list(counts)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
    rows = offsets[-1]
    experts = len(counts)
    w0 = [bf16(rng.standard_normal((n, k)) * 0.1) for _ in range(experts)]
    w1 = [bf16(rng.standard_normal((n, k)) * 0.1) for _ in range(experts)] if swiglu else None
    if tokens is None:
        x = bf16(rng.standard_normal((rows, k)))
        gather = None
    else:
        x = bf16(rng.standard_normal((tokens, k)))
        assert tokens * top_k == rows
        gather = rng.permutation(rows)  # a dispatch order: row r holds assignment gather[r] = t * top_k + s
    bias = (None, None)
    if biased:  # f32 bias rows per expert, large enough to move the clamp
        bias = (rng.standard_normal((experts, n)).astype(np.float32).astype(np.float64),
                rng.standard_normal((experts, n)).astype(np.float32).astype(np.float64) if swiglu else None)
    return x, gather, top_k, offsets, w0, w1, n, k, swiglu, bias, limit


def check(case, broken=None):
    x, gather, top_k, offsets, w0, w1, n, k, swiglu, bias, limit = case
    hazards = []
    try:
        y = launch(x, gather, top_k, offsets, w0, w1, n, k, swiglu, bias, limit, broken, hazards)
    except AssertionError as e:  # e.g. row-tile entries the table kernel never wrote (garbage on a GPU)
        return str(e), hazards
    want = reference(x, gather, top_k, offsets, w0, w1, n, swiglu, bias, limit)
    if np.isnan(y).any():
        return f"{int(np.isnan(y).sum())} outputs never written", hazards
    err = np.max(np.abs(y - want) / (np.abs(want) + 1e-2 * np.max(np.abs(want)) + 1e-30))
    return (None if err < 1e-2 else f"relative error {err:.3g}"), hazards


def main():
    rng = np.random.default_rng(7)
    cases = {
        # name: (counts, n, k, tokens, top_k, swiglu, biased, limit)
        "plain: uneven experts, an empty one, partial k tile": ([130, 0, 5, 1], 136, 200, None, 1, False, False, 0),
        "plain: one row": ([0, 1], 128, 64, None, 1, False, False, 0),
        "plain: every row on the last of 40 experts": ([0] * 39 + [129], 64, 72, None, 1, False, False, 0),
        "plain: 300 experts (two scan chunks), sparse": ([3 if e % 97 == 5 else 0 for e in range(300)] + [2], 64, 64,
                                                         None, 1, False, False, 0),
        "plain: bias rows (gpt-oss down)": ([9, 0, 20], 72, 64, None, 1, False, True, 0),
        "swiglu: gathered tokens, top-2": ([70, 0, 58, 0], 72, 136, 64, 2, True, False, 0),
        "swiglu: long k (pipeline wraps the ring twice)": ([3, 1], 64, 704, 2, 2, True, False, 0),
        "swiglu: biases and gpt-oss's clamp": ([12, 4, 0, 16], 136, 64, 16, 2, True, True, 0.5),
    }
    failures = 0
    built = {}
    for name, (counts, n, k, tokens, top_k, swiglu, biased, limit) in cases.items():
        built[name] = make_case(rng, counts, n, k, tokens, top_k, swiglu, biased, limit)
    built["plain: a third, nearly empty column tile"] = make_case(rng, [40, 3], 264, 64)
    for tile_n in (256, 128):  # 128 last: the broken variants below run with it
        set_tile(tile_n)
        for name, case in built.items():
            err, hazards = check(case)
            status = "ok" if err is None and not hazards else f"FAILED: {err or ''} {hazards[:2]}"
            failures += status != "ok"
            print(f"[{tile_n}-column tiles] {name}: {status}")
    # Broken variants of the kernel must each be caught by at least one case.
    for broken in ("no_swizzle_write", "sbo", "gate_up_swapped", "warpgroup_offset", "up_column", "wait_too_loose",
                   "too_far_ahead", "wait_none", "bias_column", "table_inclusive", "transpose_send", "transpose_file"):
        caught = False
        for name, case in built.items():
            err, hazards = check(case, broken)
            if err is not None or hazards:
                caught = True
                break
        print(f"broken variant {broken}: {'caught' if caught else 'NOT CAUGHT'}")
        failures += not caught
    print("all checks passed" if failures == 0 else f"{failures} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
