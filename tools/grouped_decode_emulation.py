#!/usr/bin/env python3
"""Lane-level numpy emulation of grouped_decode_kernel<kD, kHeads> in src/kernels/cuda/grouped_decode_attention.cu:
a check, without a GPU, of the kernel's per-lane dims, the transposing butterfly that leaves lane l with the
(head, key) sum l, the per-step online softmax with its shuffles, and the merge of the cluster's blocks
(written 2026-12-05, when the kernel was new and the session's device time was spent; the GPU test
GroupedDecodeAttentionMatchesCpu is the real check). Usage: python3 tools/grouped_decode_emulation.py (numpy;
under a minute; exit 0 = the emulated kernel matches a plain softmax attention on every case (groups of
1, 3, 4, 8 and 16 query heads, head dims 64 and 128, 1 to 130 keys, with and without window and sinks) and
every deliberately broken variant (butterfly halves swapped, probabilities shuffled from the wrong lane, the
rescale of the accumulators left out) is caught; exit 77 without numpy). Keep it in step with the kernel.
"""
import sys

try:
    import numpy as np
except ImportError:
    print("numpy not installed: skipped")
    sys.exit(77)
rng = np.random.default_rng(0)
INF = np.inf

def kernel(q, K, V, pos, window, sinks, scale, kHeads, kD, kCluster=8, kWarps=4, broken=None):
    group = q.shape[0]
    kStep = 32 // kHeads; kPer = kD // 32
    first = max(0, pos - window + 1) if window > 0 else 0
    ln = pos - first + 1 if pos >= 0 else 0
    run = (ln + kCluster - 1) // kCluster
    partial = np.zeros((kCluster, group, kD + 2), np.float32)
    for rank in range(kCluster):
        lo = first + rank * run; hi = min(pos, lo + run - 1)
        for warp in range(kWarps):
            # per-lane state (all lanes hold m,l per head; acc per lane dims)
            qv = np.zeros((32, kHeads, kPer), np.float32)
            for u in range(kHeads):
                hl = warp * kHeads + u
                for lane in range(32):
                    qv[lane, u] = q[min(hl, group - 1), lane*kPer:(lane+1)*kPer] if hl < group else 0
            m = np.full(kHeads, -INF, np.float32); l = np.zeros(kHeads, np.float32)
            acc = np.zeros((32, kHeads, kPer), np.float32)
            j0 = lo
            while j0 <= hi:
                kt = np.zeros((kStep, kD), np.float32); vt = np.zeros((kStep, kD), np.float32)
                for key in range(kStep):
                    if j0 + key <= hi:
                        kt[key] = K[j0 + key]; vt[key] = V[j0 + key]
                s = np.zeros((32, 32), np.float32)  # [lane][value]
                for lane in range(32):
                    for key in range(kStep):
                        kf = kt[key, lane*kPer:(lane+1)*kPer]
                        for u in range(kHeads):
                            s[lane, u*kStep + key] = np.dot(qv[lane, u], kf)
                o = 16
                while o >= 1:
                    new = s.copy()
                    for lane in range(32):
                        upper = (lane & o) != 0
                        partner = lane ^ o
                        for x in range(o):
                            send_p = s[partner, x] if (partner & o) else s[partner, x + o]
                            keep = s[lane, x + o] if upper else s[lane, x]
                            if broken == "butterfly":
                                send_p = s[partner, x + o] if (partner & o) else s[partner, x]
                            new[lane, x] = keep + send_p
                    s = new
                    o //= 2
                score = np.zeros(32, np.float32); ok = np.zeros(32, bool)
                for lane in range(32):
                    my_head, my_key = lane // kStep, lane % kStep
                    ok[lane] = (j0 + my_key <= hi) and (warp*kHeads + my_head < group)
                    score[lane] = s[lane, 0] * scale if ok[lane] else -INF
                step_max = np.array([score[(lane // kStep)*kStep:(lane // kStep + 1)*kStep].max() for lane in range(32)])
                m_new = np.array([max(m[lane // kStep], step_max[lane]) for lane in range(32)], np.float32)
                prob = np.array([np.exp(score[ln_] - m_new[ln_]) if ok[ln_] else 0 for ln_ in range(32)], np.float32)
                step_sum = np.array([prob[(lane // kStep)*kStep:(lane // kStep + 1)*kStep].sum() for lane in range(32)])
                for u in range(kHeads):
                    mu = m_new[u*kStep]; su = step_sum[u*kStep]
                    corr = 1.0 if mu == -INF else np.exp(m[u] - mu)
                    l[u] = l[u]*corr + su; m[u] = mu
                    if broken != "rescale":
                        acc[:, u, :] *= corr
                for key in range(kStep):
                    for lane in range(32):
                        vf = vt[key, lane*kPer:(lane+1)*kPer]
                        for u in range(kHeads):
                            src = key * kHeads + u if broken == "shuffle" else u * kStep + key
                            acc[lane, u] += prob[src] * vf
                j0 += kStep
            for u in range(kHeads):
                hl = warp*kHeads + u
                if hl >= group: continue
                partial[rank, hl, 0] = m[u]; partial[rank, hl, 1] = l[u]
                for lane in range(32):
                    partial[rank, hl, 2 + lane*kPer: 2 + (lane+1)*kPer] = acc[lane, u]
    out = np.zeros((group, kD), np.float32)
    for hl in range(group):
        sink = sinks[hl] if sinks is not None else -INF
        gm = max([sink] + [partial[b, hl, 0] for b in range(kCluster)])
        denom = np.exp(sink - gm) if sinks is not None else 0.0
        f = [0.0 if partial[b, hl, 0] == -INF else np.exp(partial[b, hl, 0] - gm) for b in range(kCluster)]
        denom += sum(partial[b, hl, 1] * f[b] for b in range(kCluster))
        out[hl] = sum(partial[b, hl, 2:] * f[b] for b in range(kCluster)) / denom if pos >= 0 else np.nan
    return out

def reference(q, K, V, pos, window, sinks, scale):
    first = max(0, pos - window + 1) if window > 0 else 0
    out = []
    for h in range(q.shape[0]):
        sc = K[first:pos+1] @ q[h] * scale
        mx = sc.max() if sinks is None else max(sc.max(), sinks[h])
        w = np.exp(sc - mx); den = w.sum() + (np.exp(sinks[h] - mx) if sinks is not None else 0)
        out.append((w[:, None] * V[first:pos+1]).sum(0) / den)
    return np.array(out)

def run(broken=None):
    rng = np.random.default_rng(0)
    worst = 0.0
    for group, kD in [(1, 128), (3, 64), (4, 128), (8, 128), (16, 64)]:
        kHeads = 1 if group <= 4 else (2 if group <= 8 else 4)
        for n_keys in [1, 37, 130]:
            for window, use_sinks in [(0, False), (50, True)]:
                q = rng.standard_normal((group, kD)).astype(np.float32)
                K = rng.standard_normal((n_keys, kD)).astype(np.float32)
                V = rng.standard_normal((n_keys, kD)).astype(np.float32)
                sinks = rng.standard_normal(group).astype(np.float32) * 2 if use_sinks else None
                pos = n_keys - 1
                got = kernel(q, K, V, pos, window, sinks, 1 / np.sqrt(kD), kHeads, kD, broken=broken)
                want = reference(q, K, V, pos, window, sinks, 1 / np.sqrt(kD))
                worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    return worst


worst = run()
print("grouped decode kernel: worst relative error", worst)
ok = worst < 1e-4
for variant in ["butterfly", "shuffle", "rescale"]:
    err = run(variant)
    caught = err > 1e-2
    print(f"broken variant '{variant}': relative error {err:.3g}, {'caught' if caught else 'NOT CAUGHT'}")
    ok = ok and caught
sys.exit(0 if ok else 1)
