#!/usr/bin/env python3
"""How far bf16 rounding alone moves the logits of the golden fixtures, with Hugging Face transformers (fp32,
eager) as the outside reference: the yardstick for the GPU forward test's logits tolerance
(tests/gpu/gpu_forward_test.cc). Usage: python3 tools/bf16_error_reference.py [--random N] [FIXTURE ...]
(needs torch, transformers, numpy; measured 2026-12-05 with torch 2.15.0, transformers 5.25.0, numpy 2.4.6:
docs/benchmarks.md). With --random N, N random sequences per fixture give the spread instead.
Modes, all teacher-forced on the fp32 run's token ids (one no-cache forward over the whole sequence):
 a: model.to(bf16);  b: every parameter rounded to bf16, fp32 compute;
 c: GPU-like (src/model/gpu_forward.cc): dim>=2 params rounded to bf16, 1-D params (norms) fp32, inputs of
    every nn.Linear and of the MoE router rounded to bf16, the rest fp32;  d: c + keys/values rounded to bf16
    (the GPU's bf16 paged KV pool);  e (MLA models only, config kv_lora_rank): c with attention in the absorbed
    form: the pool holds the bf16 latent and rope key; per head q_lat = bf16(q_nope) @ W_UK (bf16 kv_b_proj),
    scores = q_lat.latent + q_pe.k_pe, softmax and P @ latent in fp32, then bf16(P @ latent) @ W_UV^T.
    'absorbed fp32 vs HF' runs that forward with no rounding against fp32: the algebra check (~1e-6).
rel = max|a-b|/max|b| (tests/test_util.cc relative_error); l2 = ||a-b||_2/||b||_2.
Rows marked '*' come at/after a token whose routed-expert set differs from fp32 (a routing flip)."""
import copy, json, os, sys
import numpy as np, torch, transformers
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden")
R = lambda t: t.to(torch.bfloat16).to(torch.float32)
rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # exactly tests/test_util.cc
l2 = lambda a, b: float((a - b).norm() / b.norm())
is_router = lambda m: type(m).__name__.lower().endswith("topkrouter")


def run(model, seq, n_rows):  # -> last n_rows logits, per-layer sorted expert ids (tokens, k)
    log = []
    hs = [m.register_forward_hook(lambda mod, i, o: log.append(torch.sort(o[2].reshape(len(seq), -1), -1).values))
          for m in model.modules() if is_router(m)]
    with torch.no_grad():
        lg = model(torch.tensor([seq])).logits[0, -n_rows:].float()
    for h in hs:
        h.remove()
    return lg, log


def first_flip(rts, ref_rts, n_tok):  # first token position whose routing differs in any layer
    pos = [int(torch.nonzero((x != y).any(-1))[0]) for x, y in zip(rts, ref_rts) if (x != y).any()]
    return min(pos, default=n_tok)


def load(name):
    d = os.path.join(ROOT, name)
    ref = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).float().eval()
    mod = sys.modules[type(ref).__module__]  # bf16 K/V for models flagged _kvbf16 (mode d), absorbed MLA for _mla
    if not hasattr(mod, "_orig_eager"):
        mod._orig_eager = mod.eager_attention_forward
        mod.eager_attention_forward = lambda m, q, k, v, *a, **kw: absorbed(m, q, k, v, a[0], kw["scaling"]) \
            if hasattr(m, "_mla") else mod._orig_eager(
                m, q, *((R(k), R(v)) if getattr(m, "_kvbf16", False) else (k, v)), *a, **kw)
    a, b, c = copy.deepcopy(ref).to(torch.bfloat16), copy.deepcopy(ref), copy.deepcopy(ref)
    with torch.no_grad():
        for p in b.parameters():
            p.copy_(R(p))
        for p in c.parameters():
            if p.dim() >= 2:
                p.copy_(R(p))
    for m in c.modules():
        if isinstance(m, torch.nn.Linear) or is_router(m):
            m.register_forward_pre_hook(lambda mod, args: (R(args[0]),) + tuple(args[1:]))
    dd = copy.deepcopy(c)
    for m in dd.modules():
        m._kvbf16 = True
    vs, x = {"a": a, "b": b, "c": c, "d": dd}, None
    if getattr(ref.config, "kv_lora_rank", None):  # mode e, and x: the same absorbed forward unrounded (check)
        vs["e"], x = mla(copy.deepcopy(c), R), mla(copy.deepcopy(ref), lambda t: t)
    return d, ref, vs, x


def mla(model, rd):  # the transformers forward computes q, the latent, k_pe and RoPE; expand_kv is skipped, so
    for m in model.modules():  # the attention function gets the latent and the roped k_pe as key and value
        if hasattr(m, "kv_b_proj"):
            m._mla, m.expand_kv = rd, lambda kv, kr: (kv, kr)
    return model


def absorbed(m, q, lat, kpe, mask, scaling):  # q (b, H, n, nope+rope); lat (b, 1, n, rank); kpe (b, 1, n, rope)
    rd, nope = m._mla, m.qk_nope_head_dim
    w = rd(m.kv_b_proj.weight).view(m.num_heads, nope + m.v_head_dim, -1)  # (H, nope+dv, rank): W_UK, W_UV
    lat, kpe = rd(lat), rd(kpe)  # the bf16 pool
    s = (rd(q[..., :nope]) @ w[:, :nope]) @ lat.transpose(2, 3) + q[..., nope:] @ kpe.transpose(2, 3)
    p = torch.softmax(s * scaling + (0 if mask is None else mask), -1, dtype=torch.float32)
    o = rd(p @ lat) @ w[:, nope:].transpose(1, 2)  # (b, H, n, dv)
    return o.transpose(1, 2).contiguous(), p


def gputest_cases(V):  # tests/gpu/gpu_forward_test.cc: std::mt19937 rng(3); prompts of 13, 6, 1 ids rng()%V;
    bg = np.random.MT19937()  # then 3 decode steps feeding (7t+3s+1)%V. numpy legacy seeding == std::mt19937
    bg._legacy_seeding(3)
    raw, out, i = [int(x) for x in bg.random_raw(20)], [], 0
    for s, n in enumerate((13, 6, 1)):
        out.append((f"gpu_s{s}", [r % V for r in raw[i:i + n]] + [(7 * t + 3 * s + 1) % V for t in range(3)], 4))
        i += n
    return out


def compare(ref, vs, seq, n):  # -> list of row dicts
    f, fr = run(ref, seq, n)
    res = {k: run(m, seq, n) for k, m in vs.items()}
    rows = []
    for i in range(n):
        pos = len(seq) - n + i
        r = dict(row=i, l2norm=float(f[i].norm()), std=float(f[i].std()), absmax=float(f[i].abs().max()))
        for k, (lg, rts) in res.items():
            r[k] = (rel(lg[i], f[i]), l2(lg[i], f[i]), pos >= first_flip(rts, fr, len(seq)))
        rows.append(r)
    return rows


def check(x, ref, seqs):  # max row rel of the unrounded absorbed forward vs fp32 transformers
    with torch.no_grad():
        lg = [(x(torch.tensor([sq])).logits[0], ref(torch.tensor([sq])).logits[0]) for sq in seqs]
    return max(rel(a, b) for la, lb in lg for a, b in zip(la, lb))


note = lambda x, c: f"absorbed fp32 vs HF rel {c:.1e}" if x else "mode e n/a (no kv_lora_rank)"


def main(fixtures):
    out = {}
    for name in fixtures:
        d, ref, vs, x = load(name)
        g = json.load(open(os.path.join(d, "golden.json")))
        P = g["prompt_ids"]
        with torch.no_grad():
            chk = float((ref(torch.tensor([P])).logits[0] - torch.from_numpy(np.load(f"{d}/logits.npy"))).abs().max())
            seq = list(P)
            for _ in range(4):  # fp32 greedy, 4 tokens
                seq.append(int(ref(torch.tensor([seq])).logits[0, -1].argmax()))
        cases = [("golden", seq, 5)] + gputest_cases(ref.config.vocab_size)
        ec = note(x, check(x, ref, [c[1] for c in cases]) if x else 0)
        print(f"\n== {name}: |HF - logits.npy|max {chk:.1e}; greedy {seq[len(P):]} golden {g['greedy_ids'][:4]}; {ec}")
        print("case     row |f|_2   std  absmax | " + "".join(f"rel {k}     " for k in vs) + "| "
              + "".join(f"l2 {k}      " for k in vs).rstrip())
        allrows = []
        for cname, sq, n in cases:
            for r in compare(ref, vs, sq, n):
                r["case"] = cname
                allrows.append(r)
                fl = lambda k, j: f"{r[k][j]:.2e}{'*' if r[k][2] else ' '}"
                print(f"{cname:8s} {r['row']} {r['l2norm']:6.2f} {r['std']:5.2f} {r['absmax']:5.2f} | "
                      + " ".join(fl(k, 0) for k in vs) + " | " + " ".join(fl(k, 1) for k in vs))
        for grp in ("golden", "gpu_s"):
            sel = [r for r in allrows if r["case"].startswith(grp)]
            mx = lambda k, j: max([r[k][j] for r in sel if not r[k][2]], default=float("nan"))
            print(f"MAX {grp:6s} (no flip): " + "  ".join(f"{k}: rel {mx(k, 0):.2e} l2 {mx(k, 1):.2e}" for k in vs))
        out[name] = allrows
        print("versions: torch", torch.__version__, "transformers", transformers.__version__, "numpy", np.__version__)


def spread(fixtures, n, seed=0):  # rel over n random sequences (1-13 prompt ids + 3 decode ids), flip-free rows
    rng = np.random.default_rng(seed)
    for name in fixtures:
        _, ref, vs, x = load(name)
        V = ref.config.vocab_size
        acc, nflip, nrows, xc = {k: [] for k in vs}, {k: 0 for k in vs}, 0, 0.0
        for _ in range(n):
            seq = [int(t) for t in rng.integers(0, V, int(rng.integers(1, 14)) + 3)]
            xc = max(xc, check(x, ref, [seq])) if x else xc
            for r in compare(ref, vs, seq, 4):
                nrows += 1
                for k in vs:
                    if r[k][2]:
                        nflip[k] += 1
                    else:
                        acc[k].append(r[k][0])
        print(f"{name}: {nrows} rows; {note(x, xc)}")
        for k in vs:
            v = np.array(acc[k])
            print(f"  {k}: median {np.median(v):.2e} p99 {np.quantile(v, .99):.2e} max {v.max():.2e} "
                  f"share>2e-2 {np.mean(v > 2e-2):.3f} share>3e-2 {np.mean(v > 3e-2):.4f} rows after a flip {nflip[k]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    n = 0
    if args[:1] == ["--random"]:
        n, args = int(args[1]), args[2:]
    names = args or ["deepseek_v2_lite", "deepseek_v2_group", "deepseek_v3", "qwen3_moe"]
    spread(names, n) if n else main(names)
