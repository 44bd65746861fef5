#!/usr/bin/env python3
"""PreMoe reference outputs for Switchyard, computed with Hugging Face transformers.

Usage:
    python3 tools/make_premoe_goldens.py --golden tests/fixtures/golden --out tests/fixtures/premoe
    python3 tools/make_premoe_goldens.py --golden tests/fixtures/golden --out tests/fixtures/premoe \
        --verify-switchyard build-prune/tools/cli/switchyard     # also load `prune build` output in transformers

For every MoE golden fixture (tests/fixtures/golden, made by tools/make_goldens.py):

1. TCESS straight from transformers' router logits (`output_router_logits=True`, the router's linear output
   before softmax/sigmoid, no score-correction bias): for each token t and MoE layer l,
   m_t[e] = z_t[e] if e is among the k largest logits of t (ties: lower index) and, when r > 0,
   softmax(z_t)[e] > r; else 0. s_l[e] = mean over all tokens of all calibration sequences (float64).
   Written to <out>/<fixture>.json as "cases" (several k / r) plus the calibration sequences.
2. For the fixtures in PRUNED: PEP with k = 1 on the calibration sequences (keep the M highest-scoring experts
   per layer; equal scores keep the lower id), a pruned checkpoint built here in Python (router rows, router
   bias and score bias sliced; kept experts renumbered 0..M-1 in ascending original id; config expert count
   = M; DeepSeek group-limited routing turned off: n_group = topk_group = 1, topk_method "greedy"), saved,
   reloaded with from_pretrained, and its logits on the fixture's prompt written to <out>/<fixture>_keepM*.npy.

Deterministic (fixed seeds, one thread). CPU only. Never needed at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

# (fixture, keep M, experts per token or 0 = the model's top-k): pruned-logit references.
PRUNED = [
    ("mixtral", 2, 0),
    ("mixtral_bf16", 2, 0),
    ("mixtral_sharded", 4, 0),
    ("mixtral_window", 3, 0),
    ("qwen2_moe", 3, 0),
    ("qwen3_moe", 4, 0),
    ("qwen3_moe", 2, 1),
    ("qwen3_moe_native", 2, 0),
    ("olmoe", 3, 0),
    ("olmoe_clip", 2, 0),
    ("qwen2_moe_sparse_step", 3, 0),
    ("deepseek_v2_lite", 2, 0),
    ("deepseek_v2_group", 4, 0),
    ("deepseek_v3", 4, 0),
    ("deepseek_v3", 3, 2),
    ("gpt_oss", 2, 0),
]
# (top_k, threshold) cases of TCESS; top_k larger than the expert count is skipped.
CASES = [(1, 0.0), (2, 0.0), (2, 0.3), (3, 0.0)]
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
SLICED = re.compile(
    r"^model\.layers\.(\d+)\.(mlp|block_sparse_moe)\.(gate\.weight|gate\.bias|gate\.e_score_correction_bias|"
    r"router\.weight|router\.bias|experts\.gate_up_proj|experts\.down_proj|experts\.gate_up_proj_bias|"
    r"experts\.down_proj_bias)$")
PER_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(mlp|block_sparse_moe)\.experts\.(\d+)\.(.+)$")


def dump_json(obj) -> str:
    """json.dumps(indent=1) with flat lists kept on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def load(path: str):
    cfg = json.load(open(os.path.join(path, "config.json")))
    disk = torch.bfloat16 if cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16" else torch.float32
    m = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=disk)
    return m.float().eval(), cfg


def expert_count(cfg: dict) -> int:
    for k in EXPERT_COUNT_KEYS:
        if isinstance(cfg.get(k), int):
            return cfg[k]
    raise ValueError("no expert count in config")


def router_logits(model, ids: list[int]) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_router_logits=True)
    return [r.detach().double().numpy().reshape(len(ids), -1) for r in out.router_logits]


def top_indices(z: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-z, kind="stable")[:k]  # descending, ties to the lower index


def tcess(logits_per_seq: list[list[np.ndarray]], k: int, r: float):
    """logits_per_seq[s][i]: (tokens, E) of the i-th MoE layer. Returns scores per layer and boundary gaps."""
    num_layers = len(logits_per_seq[0])
    e = logits_per_seq[0][0].shape[1]
    sums = np.zeros((num_layers, e))
    tokens = 0
    min_gap, min_thr_gap = np.inf, np.inf
    for seq in logits_per_seq:
        tokens += seq[0].shape[0]
        for i, z_all in enumerate(seq):
            for z in z_all:
                order = np.argsort(-z, kind="stable")
                if k < e:
                    min_gap = min(min_gap, z[order[k - 1]] - z[order[k]])
                p = np.exp(z - z.max())
                p /= p.sum()
                for j in order[:k]:
                    if r > 0:
                        min_thr_gap = min(min_thr_gap, abs(p[j] - r))
                        if p[j] <= r:
                            continue
                    sums[i, j] += z[j]
    return sums / tokens, tokens, float(min_gap), float(min_thr_gap)


def calibration(name: str, vocab: int, prompt: list[int]) -> list[list[int]]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return [rng.integers(0, vocab, 12).tolist(), rng.integers(0, vocab, 9).tolist(), prompt]


def ranking(scores: np.ndarray) -> list[int]:
    return sorted(range(len(scores)), key=lambda e: (-scores[e], e))


def pruned_config(cfg: dict, keep: int, ept: int) -> dict:
    c = dict(cfg)
    for k in EXPERT_COUNT_KEYS:
        if isinstance(c.get(k), int):
            c[k] = keep
    if ept:
        c["num_experts_per_tok"] = ept
    if isinstance(c.get("n_group"), int):
        c["n_group"] = 1
    if isinstance(c.get("topk_group"), int):
        c["topk_group"] = 1
    if c.get("topk_method") == "group_limited_greedy":
        c["topk_method"] = "greedy"
    return c


def pruned_tensors(path: str, kept: dict[int, list[int]]) -> dict[str, torch.Tensor]:
    out = {}
    for fn in sorted(os.listdir(path)):
        if not fn.endswith(".safetensors"):
            continue
        with safe_open(os.path.join(path, fn), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                m = SLICED.match(name)
                if m and int(m.group(1)) in kept:
                    out[name] = t[kept[int(m.group(1))]].contiguous()
                    continue
                m = PER_EXPERT.match(name)
                if m and int(m.group(1)) in kept:
                    layer, e = int(m.group(1)), int(m.group(3))
                    if e in kept[layer]:
                        new = f"model.layers.{layer}.{m.group(2)}.experts.{kept[layer].index(e)}.{m.group(4)}"
                        out[new] = t.contiguous()
                    continue
                out[name] = t
    return out


def pruned_logits(path: str, cfg: dict, kept: dict[int, list[int]], keep: int, ept: int, prompt: list[int]):
    with tempfile.TemporaryDirectory() as tmp:
        save_file(pruned_tensors(path, kept), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(pruned_config(cfg, keep, ept), f, indent=2)
        model, _ = load(tmp)
        with torch.no_grad():
            return model(torch.tensor([prompt])).logits[0].numpy().astype(np.float32)


def transformers_logits(path: str, prompt: list[int]) -> np.ndarray:
    model, _ = load(path)
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].numpy().astype(np.float32)


def make_fixture(golden_dir: str, name: str, out_dir: str) -> dict:
    path = os.path.join(golden_dir, name)
    golden = json.load(open(os.path.join(path, "golden.json")))
    model, cfg = load(path)
    e = expert_count(cfg)
    prompt = golden["prompt_ids"]
    seqs = calibration(name, cfg["vocab_size"], prompt)
    logits = [router_logits(model, s) for s in seqs]
    moe_layers = sorted({int(m.group(1)) for fn in os.listdir(path) if fn.endswith(".safetensors")
                         for m in [SLICED.match(k) for k in safe_open(os.path.join(path, fn), "pt").keys()] if m})
    assert len(logits[0]) == len(moe_layers), (name, len(logits[0]), moe_layers)
    result = {"fixture": name, "model_type": cfg["model_type"], "num_experts": e, "moe_layers": moe_layers,
              "sequences": seqs, "prompt_ids": prompt, "cases": [], "pruned": [],
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "numpy": np.__version__}}
    for k, r in CASES:
        if k > e:
            continue
        for label, use in (("all", logits), ("prompt", [logits[-1]])):
            scores, tokens, gap, thr_gap = tcess(use, k, r)
            result["cases"].append({"top_k": k, "threshold": r, "sequences": label, "num_tokens": tokens,
                                    "min_topk_gap": gap if np.isfinite(gap) else None,
                                    "min_threshold_gap": thr_gap if np.isfinite(thr_gap) else None,
                                    "layers": [{"layer": l, "scores": s.tolist()}
                                               for l, s in zip(moe_layers, scores)]})
    k1, _, _, _ = tcess(logits, 1, 0.0)
    for fixture, keep, ept in PRUNED:
        if fixture != name:
            continue
        ranks = [ranking(s) for s in k1]
        kept = {l: sorted(rk[:keep]) for l, rk in zip(moe_layers, ranks)}
        boundary = min(abs(s[rk[keep - 1]] - s[rk[keep]]) for s, rk in zip(k1, ranks))
        ref = pruned_logits(path, cfg, kept, keep, ept, prompt)
        fname = f"{name}_keep{keep}" + (f"_k{ept}" if ept else "") + ".npy"
        np.save(os.path.join(out_dir, fname), ref)
        full = transformers_logits(path, prompt)
        result["pruned"].append({"keep": keep, "experts_per_token": ept, "logits": fname,
                                 "kept_experts": [kept.get(l) for l in range(cfg["num_hidden_layers"])],
                                 "ranking_boundary_gap": float(boundary),
                                 "max_abs_change_vs_full": float(np.abs(ref - full).max())})
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        f.write(dump_json(result))
    return result


def verify_switchyard(binary: str, golden_dir: str, out_dir: str) -> int:
    """Runs `prune profile` + `prune build` and loads the written checkpoints in transformers."""
    failures = 0
    for fixture, keep, ept in PRUNED:
        ref_json = json.load(open(os.path.join(out_dir, fixture + ".json")))
        entry = next(p for p in ref_json["pruned"] if p["keep"] == keep and p["experts_per_token"] == ept)
        ref = np.load(os.path.join(out_dir, entry["logits"]))
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "calib.txt")
            with open(data, "w") as f:
                f.write("\n".join(" ".join(map(str, s)) for s in ref_json["sequences"]) + "\n")
            src = os.path.join(golden_dir, fixture)
            store, out = os.path.join(tmp, "store"), os.path.join(tmp, "pruned")
            subprocess.run([binary, "prune", "profile", "--model", src, "--task", "calib", "--data", data,
                            "--store", store], check=True, capture_output=True)
            cmd = [binary, "prune", "build", "--model", src, "--store", store, "--task", "calib", "--keep",
                   str(keep), "--output", out]
            if ept:
                cmd += ["--experts-per-token", str(ept)]
            subprocess.run(cmd, check=True, capture_output=True)
            got = transformers_logits(out, ref_json["prompt_ids"])
            rel = float(np.abs(got - ref).max() / np.abs(ref).max())
            ok = rel <= 1e-5
            failures += not ok
            print(f"{fixture} keep {keep} k {ept or 'model'}: transformers on `prune build` output vs reference: "
                  f"rel {rel:.2e} {'ok' if ok else 'FAIL'}")
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", default="tests/fixtures/golden")
    ap.add_argument("--out", default="tests/fixtures/premoe")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--verify-switchyard", metavar="BINARY", help="check `prune build` output in transformers")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.verify_switchyard:
        return 1 if verify_switchyard(args.verify_switchyard, args.golden, args.out) else 0
    os.makedirs(args.out, exist_ok=True)
    for name in sorted(os.listdir(args.golden)):
        cfg_path = os.path.join(args.golden, name, "config.json")
        if not os.path.isfile(cfg_path) or (args.only and name not in args.only):
            continue
        cfg = json.load(open(cfg_path))
        if not any(isinstance(cfg.get(k), int) and cfg[k] > 0 for k in EXPERT_COUNT_KEYS):
            continue  # dense
        r = make_fixture(args.golden, name, args.out)
        gaps = [c["min_topk_gap"] for c in r["cases"] if c["min_topk_gap"] is not None]
        print(f"{name}: {len(r['cases'])} TCESS cases (min top-k gap {min(gaps):.2e}), "
              f"{len(r['pruned'])} pruned references")
    return 0


if __name__ == "__main__":
    sys.exit(main())
