#!/usr/bin/env python3
"""Thread-exact numpy emulation of flash_sm90_kernel in src/kernels/cuda/flash_attention_sm90.cu (causal prefill
attention on wgmma, head dims 128/128): a check of its tile staging (cp.async into the 128-byte swizzled layout),
its K-major (Q, K) and MN-major (V) descriptors, the accumulator and register-A fragments, the online softmax
with its masks and sinks, and its cp.async/barrier sequence, without a GPU (written 2026-12-05, when the kernel
was new and no device was lent; the GPU tests FlashAttentionMatchesCpu and GpuForwardFlash.* with sm90 are the
real check). Usage: python3 tools/flash_wgmma_emulation.py (numpy; about 15 seconds; exit 0 = every case matches
a float64 reference, no stage is read before its copies landed, and every deliberately broken variant is
caught). Keep it in step with the kernel.

Hardware model: tools/wgmma_gemm_emulation.py's (descriptors, 128-byte swizzle, accumulator fragment), plus
  * MN-major operand with the 128-byte swizzle (CUTLASS's canonical ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8
    bf16): element (k i, n j) of the instruction's 16 x N tile sits at the linear address start +
    (j // 64) * LBO + 2 (j % 64) + (i // 8) * SBO + 128 (i % 8), then the same address swizzle;
  * wgmma with A from registers (m64k16 bf16): thread t of the warpgroup, g = (t % 32) // 4, c = t % 4, row
    base 16 (t // 32): a[0] holds (g, 2c), (g, 2c+1) (low half first), a[1] (g+8, 2c..), a[2] (g, 2c+8..),
    a[3] (g+8, 2c+8..).
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wgmma_gemm_emulation as gemm  # noqa: E402  (exits 77 without numpy)
import numpy as np  # noqa: E402

BLOCK_M, BLOCK_N, D, THREADS = 128, 128, 128, 256
TILE_BYTES = BLOCK_N * D * 2
HALF = TILE_BYTES // 2
bf16 = gemm.bf16


def descriptor_mn(address, block_bytes):
    return ((address & 0x3FFFF) >> 4) | (((block_bytes >> 4) & 0x3FFF) << 16) | ((1024 >> 4) << 32) | (1 << 62)


def descriptor_read_mn(smem, desc, n):
    """The (16 x n) MN-major bf16 tile a wgmma reads as B through descriptor `desc` (128-byte swizzle)."""
    start = (desc & 0x3FFF) << 4
    lbo = ((desc >> 16) & 0x3FFF) << 4
    sbo = ((desc >> 32) & 0x3FFF) << 4
    i = np.arange(16)[:, None]
    j = np.arange(n)[None, :]
    linear = start + (j // 64) * lbo + 2 * (j % 64) + (i // 8) * sbo + 128 * (i % 8)
    physical = linear ^ (((linear >> 7) & 7) << 4)
    return smem[physical // 2]


# Fragment coordinates of the 128 threads of a warpgroup: acc index 4j + 2r + e -> (row, column).
_t = np.arange(128)
_w, _g, _c = _t // 32, (_t % 32) // 4, _t % 4
ACC_ROW = np.empty((128, 64), dtype=int)
ACC_COL = np.empty((128, 64), dtype=int)
for j in range(16):
    for r in range(2):
        for e in range(2):
            ACC_ROW[:, 4 * j + 2 * r + e] = 16 * _w + _g + 8 * r
            ACC_COL[:, 4 * j + 2 * r + e] = 8 * j + 2 * _c + e


def a_from_registers(p, broken=None):
    """The 64 x 16 A tile the instruction sees from the threads' registers p[t] = [(lo, hi)] x 4."""
    a = np.full((64, 16), np.nan)
    for t in range(128):
        w, g, c = t // 32, (t % 32) // 4, t % 4
        places = [(g, 2 * c), (g + 8, 2 * c), (g, 2 * c + 8), (g + 8, 2 * c + 8)]
        for reg, (row, col) in enumerate(places):
            a[16 * w + row, col] = p[t][reg][0]
            a[16 * w + row, col + 1] = p[t][reg][1]
    return a


def load_tile(smem, tile, src, row0, t, pending, broken=None):
    """load_tile: thread tid stages chunk tid % 16 of rows tid / 16 + 16 i. src: (rows, 128) bf16 values."""
    for tid in range(THREADS):
        chunk = tid & 15
        block, c = chunk >> 3, chunk & 7
        for i in range(8):
            r = (tid >> 4) + 16 * i
            vals = src[row0 + r, chunk * 8: chunk * 8 + 8] if row0 + r < t else np.zeros(8)
            at = tile + block * HALF + gemm.swizzled(r, c)
            if broken == "block_stride":
                at = tile + block * 8192 + gemm.swizzled(r, c)
            smem[at // 2: at // 2 + 8] = vals
        pending[tid][-1].add(tile)


def run_block(tile_entry, head, q, k, v, heads, kv_heads, scale, window, sinks, out, broken=None, hazards=None):
    row0, t, q0 = tile_entry
    kv_head = head // (heads // kv_heads)
    qh, kh, vh = q[row0:row0 + t, head], k[row0:row0 + t, kv_head], v[row0:row0 + t, kv_head]
    smem = np.full((5 * TILE_BYTES) // 2, np.nan)
    sq, sk, sv = 0, TILE_BYTES, 3 * TILE_BYTES
    scale_log2 = np.float32(scale * 1.4426950408889634)
    last_key = min(q0 + BLOCK_M - 1, t - 1)
    first_key = q0 - window + 1 if window > 0 and q0 - window + 1 > 0 else 0
    tile0 = first_key // BLOCK_N * BLOCK_N
    # cp.async bookkeeping: per thread, a list of groups (sets of tile bases); `landed`: bases published.
    pending = [[set()] for _ in range(THREADS)]
    landed = set()

    def commit():
        for tid in range(THREADS):
            pending[tid].append(set())

    def wait(n):  # cp.async.wait_group n: all but the n most recent committed groups are done
        for tid in range(THREADS):
            committed = pending[tid][:-1]
            while len(committed) > n:
                committed.pop(0)
            pending[tid] = committed + [pending[tid][-1]]

    def barrier():
        busy = set().union(*[set().union(*groups) for groups in pending])
        for base in list(written):
            if base not in busy:
                landed.add(base)

    written = set()

    def load(tile, src, r0):
        landed.discard(tile)
        written.add(tile)
        load_tile(smem, tile, src, r0, t, pending, broken)

    def use(tile, what):
        if hazards is not None and tile not in landed:
            hazards.append(f"tile q0={q0} head {head}: {what} read before its copies landed")

    load(sq, qh, q0)
    load(sk, kh, tile0)
    commit()
    load(sv, vh, tile0)
    commit()

    o = np.zeros((2, 128, 64))
    m = np.full((2, 128, 2), -np.inf)
    l = np.zeros((2, 128, 2))
    row_q = np.stack([q0 + wg * 64 + ACC_ROW[:, [0, 2]] for wg in range(2)])  # (2, 128, 2): rows r = 0, 1
    row_lo = row_q - window + 1 if window > 0 else np.zeros_like(row_q)
    stage = 0
    k0 = tile0
    while k0 <= last_key:
        more = k0 + BLOCK_N <= last_key
        k_tile = sk + stage * TILE_BYTES if broken != "k_stage" else sk + (stage ^ 1) * TILE_BYTES
        v_tile = sv + stage * TILE_BYTES
        wait(1 if broken != "wait_loose" else 2)
        barrier()
        use(sq, "Q")
        use(k_tile, "K")
        s = np.zeros((2, 128, 64))
        for wg in range(2):
            q_rows = sq + wg * 64 * 128 if broken != "q_rows" else sq
            S = np.zeros((64, 128))
            for kk in range(D // 16):
                at = (kk // 4) * HALF + (kk % 4) * 32
                A = gemm.descriptor_read(smem, gemm.descriptor(q_rows + at), 64)
                B = gemm.descriptor_read(smem, gemm.descriptor(k_tile + at), 128)
                S += A @ B.T
            s[wg] = S[ACC_ROW, ACC_COL]
        # While Q K^T runs: the next K tile into the other stage, then the barrier that publishes this V tile.
        if more:
            load(sk + (stage ^ 1) * TILE_BYTES, kh, k0 + BLOCK_N)
        commit()
        wait(1 if broken != "wait_loose" else 2)
        barrier()
        # Online softmax, thread by thread (vectorised), quad reductions over lanes 4q..4q+3.
        key = ACC_COL  # key offset within the tile of each fragment element
        for r in range(2):
            idx = [4 * j + 2 * r + e for j in range(16) for e in range(2)]
            hi = np.clip(row_q[:, :, r] - k0, -1, BLOCK_N)[:, :, None]
            lo = np.clip(row_lo[:, :, r] - k0, -1, BLOCK_N)[:, :, None]
            kk_ = key[None, :, idx]
            visible = (kk_ <= hi) & (kk_ >= lo) if broken != "mask" else (kk_ < hi) & (kk_ >= lo)
            x = np.where(visible, s[:, :, idx] * scale_log2, -np.inf)
            mx = x.max(axis=2)
            mx = mx.reshape(2, 32, 4).max(axis=2).repeat(4, axis=1)  # quad max
            m_new = np.maximum(m[:, :, r], mx)
            alpha = np.where(m_new == -np.inf, 1.0, np.exp2(m[:, :, r] - m_new))
            ex = np.where(x == -np.inf, 0.0, np.exp2(x - m_new[:, :, None]))
            s[:, :, idx] = ex
            ssum = ex.sum(axis=2).reshape(2, 32, 4).sum(axis=2).repeat(4, axis=1)
            l[:, :, r] = l[:, :, r] * alpha + ssum
            m[:, :, r] = m_new
            oidx = [4 * j + 2 * r + e for j in range(16) for e in range(2)]
            o[:, :, oidx] *= alpha[:, :, None]
        use(v_tile, "V")
        for wg in range(2):
            O = np.zeros((64, 128))
            for kk in range(BLOCK_N // 16):
                p = []
                for tt in range(128):
                    regs = [(s[wg, tt, 8 * kk], s[wg, tt, 8 * kk + 1]), (s[wg, tt, 8 * kk + 2], s[wg, tt, 8 * kk + 3]),
                            (s[wg, tt, 8 * kk + 4], s[wg, tt, 8 * kk + 5]), (s[wg, tt, 8 * kk + 6], s[wg, tt, 8 * kk + 7])]
                    if broken == "p_pack":
                        regs[1], regs[2] = regs[2], regs[1]
                    p.append([(bf16(a), bf16(b)) for a, b in regs])
                A = a_from_registers(p)
                lbo = HALF if broken != "lbo" else 1024
                step = 16 * 128 if broken != "v_step" else 16 * 64
                B = descriptor_read_mn(smem, descriptor_mn(v_tile + kk * step, lbo), 128)
                O += A @ B
            o[wg] += O[ACC_ROW, ACC_COL]
        if more:
            load(sv + (stage ^ 1) * TILE_BYTES, vh, k0 + BLOCK_N)
        commit()
        k0 += BLOCK_N
        stage ^= 1
    # Epilogue.
    for wg in range(2):
        for r in range(2):
            rows = row_q[wg, :, r]
            scale_o = np.ones(128)
            denom = l[wg, :, r].copy()
            if sinks is not None:
                sink = sinks[head] * 1.4426950408889634
                mf = np.maximum(m[wg, :, r], sink)
                scale_o = np.exp2(m[wg, :, r] - mf)
                denom = l[wg, :, r] * scale_o + np.exp2(sink - mf)
            inv = scale_o / denom
            for tt in range(128):
                if rows[tt] >= t:
                    continue
                for j in range(16):
                    for e in range(2):
                        out[row0 + rows[tt], head, 8 * j + 2 * _c[tt] + e] = o[wg, tt, 4 * j + 2 * r + e] * inv[tt]


def reference(q, k, v, sequences, heads, kv_heads, scale, window, sinks):
    out = np.full(q.shape, np.nan)
    for r0, r1 in sequences:
        for h in range(heads):
            kvh = h // (heads // kv_heads)
            for i in range(r1 - r0):
                lo = max(0, i - window + 1) if window > 0 else 0
                sc = (k[r0 + lo:r0 + i + 1, kvh] @ q[r0 + i, h]) * scale
                mx = sc.max() if sinks is None else max(sc.max(), sinks[h])
                w = np.exp(sc - mx)
                den = w.sum() + (np.exp(sinks[h] - mx) if sinks is not None else 0)
                out[r0 + i, h] = (w @ v[r0 + lo:r0 + i + 1, kvh]) / den
    return out


def run_case(sequences, total, heads, kv_heads, window, with_sinks, seed, broken=None):
    rng = np.random.default_rng(seed)
    q = bf16(rng.standard_normal((total, heads, D)))
    k = bf16(rng.standard_normal((total, kv_heads, D)))
    v = bf16(rng.standard_normal((total, kv_heads, D)))
    sinks = rng.standard_normal(heads) * 3 if with_sinks else None
    scale = 1 / math.sqrt(D) * 2.0  # a little sharper than usual: peaked rows expose misplaced scores
    out = np.full((total, heads, D), np.nan)
    table = [(r0, r1 - r0, q0) for r0, r1 in sequences for q0 in range(0, r1 - r0, BLOCK_M)]
    table.sort(key=lambda e: -e[2])
    hazards = []
    for entry in table:
        for h in range(heads):
            run_block(entry, h, q, k, v, heads, kv_heads, scale, window, sinks, out, broken, hazards)
    want = reference(q, k, v, sequences, heads, kv_heads, scale, window, sinks)
    covered = np.zeros(total, dtype=bool)
    for r0, r1 in sequences:
        covered[r0:r1] = True
    if np.isnan(out[covered]).any():
        return f"{int(np.isnan(out[covered]).sum())} outputs never written", hazards
    if not np.isnan(out[~covered]).all():
        return "rows outside every sequence were written", hazards
    err = np.max(np.abs(out[covered] - want[covered])) / np.max(np.abs(want[covered]))
    return (None if err < 2e-2 else f"max error {err:.3g} of the largest output"), hazards


def main():
    np.seterr(all="ignore")  # -inf - -inf in masked rows (both branches of np.where are evaluated); checked below
    cases = {
        # name: (sequences, total rows, heads, kv heads, window, sinks)
        "one sequence of 300 (three query and key tiles), GQA 2:1": ([(0, 300)], 300, 2, 1, 0, False),
        "packed: 1, 129 and 70 rows past row 0, sinks": ([(3, 4), (4, 133), (140, 210)], 215, 2, 2, 0, True),
        "window 100 over 260 rows (tiles skipped)": ([(0, 260)], 260, 2, 1, 100, False),
    }
    failures = 0
    for name, (seqs, total, heads, kv, window, sinks) in cases.items():
        err, hazards = run_case(seqs, total, heads, kv, window, sinks, 11)
        ok = err is None and not hazards
        failures += not ok
        print(f"{name}: {'ok' if ok else f'FAILED: {err} {hazards[:2]}'}")
    small = {"window 100 over 260 rows (tiles skipped)": cases["window 100 over 260 rows (tiles skipped)"],
             "one sequence of 300 (three query and key tiles), GQA 2:1":
                 cases["one sequence of 300 (three query and key tiles), GQA 2:1"]}
    for broken in ("block_stride", "k_stage", "wait_loose", "q_rows", "mask", "p_pack", "lbo", "v_step"):
        caught = False
        for name, (seqs, total, heads, kv, window, sinks) in small.items():
            err, hazards = run_case(seqs, total, heads, kv, window, sinks, 11, broken)
            if err is not None or hazards:
                caught = True
                break
        failures += not caught
        print(f"broken variant {broken}: {'caught' if caught else 'NOT CAUGHT'}")
    print("all checks passed" if failures == 0 else f"{failures} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
