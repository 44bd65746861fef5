#!/usr/bin/env python3
"""Generate training reference fixtures (gradients, AdamW trajectories) for Switchyard.

Usage:
    python3 tools/make_train_goldens.py --out tests/fixtures/train [--only NAME ...]

Inputs are the golden checkpoints in tests/fixtures/golden/<fixture>/ (made by tools/make_goldens.py).
Every model is loaded with

    AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32, attn_implementation="eager",
                                         experts_implementation="eager")

and kept in eval() mode while gradients are enabled (dropout is 0 everywhere and the only train-mode
difference in these MoE blocks, Mixtral's router jitter, is 0 in the configs; the script asserts that
train() gives bit-identical loss and gradients). Outputs:

    <out>/grad_<fixture>/grads.safetensors   fp32 dLoss/dParam for every parameter, CHECKPOINT tensor names
    <out>/grad_<fixture>/case.json           fixture, input_ids, target_ids, loss, versions, checks
    <out>/adamw_<fixture>/data.npy           int64 [steps*B*(T+1)] uniform random token ids
    <out>/adamw_<fixture>/steps.json         per-step loss / pre-clip grad norm, hyper-parameters, versions
    <out>/adamw_<fixture>/final.safetensors  fp32 parameters after `steps` AdamW steps, checkpoint names

transformers 5 keeps MoE experts fused in memory (mlp.experts.gate_up_proj [E,2I,H] = [gate; up] rows,
mlp.experts.down_proj [E,H,I]); for checkpoints stored in the per-expert Hub layout the fused gradients /
parameters are split back into the Hub names (Mixtral: block_sparse_moe.experts.e.{w1,w3,w2}.weight and
block_sparse_moe.gate.weight; others: mlp.experts.e.{gate,up,down}_proj.weight). The mapping is verified
against the checkpoint: the mapped in-memory parameters must reproduce every checkpoint tensor bit-exactly
(names, shapes and values), buffers (DeepSeek-V3 e_score_correction_bias) excepted.

Deterministic: CPU, one thread, deterministic algorithms, fixed seeds; each output directory is wiped and
rewritten, and rerunning produces byte-identical files.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import sys

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
try:
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
except Exception:  # pragma: no cover
    pass

sys.dont_write_bytecode = True  # importing make_goldens must not leave tools/__pycache__ behind
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_goldens import RouterProbe  # noqa: E402  (router selection-gap probe used for the goldens)

GOLDEN_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden")

GRAD_FIXTURES = [
    "mixtral", "qwen2_moe", "qwen3_moe", "qwen3_moe_native", "olmoe", "olmoe_clip",
    "deepseek_v2_lite", "deepseek_v3", "llama", "qwen3", "gpt_oss",
]

# AdamW trajectory runs: fixture -> data seed
ADAMW_FIXTURES = {"mixtral": 11001, "qwen2_moe": 12001, "deepseek_v3": 16001, "gpt_oss": 17001}
ADAMW = dict(
    B=2, T=8, steps=20, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0,
)

# float64 finite-difference sanity check of the fp32 gradients (does not affect any written file)
FD_SEED = 424242
FD_EPS = 1e-2  # fp32 internals (RMSNorm, router softmax upcast to fp32) limit the fp64 copy
FD_MAX_REL_ERR = 2e-2


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def dump_json(obj) -> str:
    """json.dumps(indent=2) with flat lists kept on one line (floats keep their full repr)."""
    text = json.dumps(obj, indent=2)
    return re.sub(
        r"\[\s*([^\[\]{}]*?)\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    ) + "\n"


def versions() -> dict:
    return {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "safetensors_version": safetensors.__version__,
        "numpy_version": np.__version__,
    }


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    out = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(path, fn), "pt") as f:
                for k in f.keys():
                    assert k not in out, (path, k)
                    out[k] = f.get_tensor(k)
    return out


def load_model(fixture: str, experts_implementation: str = "eager"):
    d = os.path.join(GOLDEN_ROOT, fixture)
    model = AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager", experts_implementation=experts_implementation
    )
    model.eval()
    assert model.config._experts_implementation == experts_implementation, model.config._experts_implementation
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32, (fixture, n, p.dtype)
    return model


def check_no_train_noise(model) -> None:
    cfg = model.config
    for key in ("attention_dropout", "hidden_dropout", "router_jitter_noise", "embd_pdrop", "resid_pdrop"):
        v = getattr(cfg, key, None)
        assert v in (None, 0, 0.0), (key, v)
    assert not getattr(cfg, "output_router_logits", False), "aux loss would be added"
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Dropout):
            assert mod.p == 0.0, (name, mod.p)


# --------------------------------------------------------------------------------------
# in-memory (transformers 5) names  ->  checkpoint names
# --------------------------------------------------------------------------------------
def is_hub_layout(ckpt_keys) -> bool:
    return any(re.search(r"\.experts\.\d+\.", k) for k in ckpt_keys)


def to_checkpoint(named: dict[str, torch.Tensor], model_type: str, hub: bool) -> dict[str, torch.Tensor]:
    """Map {in-memory name: tensor} to {checkpoint name: tensor}, splitting fused experts if `hub`."""
    out: dict[str, torch.Tensor] = {}

    def put(k, t):
        assert k not in out, k
        out[k] = t.detach().contiguous().clone()

    for name, t in named.items():
        if not hub:
            put(name, t)
            continue
        ck = name
        if model_type == "mixtral":
            ck = ck.replace(".mlp.", ".block_sparse_moe.")
        if name.endswith("experts.gate_up_proj"):
            assert model_type != "gpt_oss"
            base = ck[: -len("gate_up_proj")]
            E, two_i, _ = t.shape
            inter = two_i // 2
            assert two_i == 2 * inter
            for e in range(E):
                if model_type == "mixtral":
                    put(f"{base}{e}.w1.weight", t[e, :inter])
                    put(f"{base}{e}.w3.weight", t[e, inter:])
                else:
                    put(f"{base}{e}.gate_proj.weight", t[e, :inter])
                    put(f"{base}{e}.up_proj.weight", t[e, inter:])
        elif name.endswith("experts.down_proj"):
            base = ck[: -len("down_proj")]
            for e in range(t.shape[0]):
                put(f"{base}{e}.{'w2' if model_type == 'mixtral' else 'down_proj'}.weight", t[e])
        else:
            assert t.dim() <= 2, (name, tuple(t.shape))
            put(ck, t)
    return out


def param_dict(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())  # tied parameters appear once (embed_tokens)


def verify_mapping(model, ckpt: dict[str, torch.Tensor], hub: bool) -> tuple[set[str], set[str]]:
    """Mapped parameters + persistent buffers must reproduce the checkpoint exactly. Returns
    (checkpoint names of parameters, checkpoint names of buffers)."""
    mt = model.config.model_type
    mapped_p = to_checkpoint(param_dict(model), mt, hub)
    buffers = {n: b for n, b in model.named_buffers() if n in model.state_dict()}  # persistent only
    mapped_b = to_checkpoint(buffers, mt, hub)
    assert not set(mapped_p) & set(mapped_b)
    if getattr(model.config, "tie_word_embeddings", False):
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert "lm_head.weight" not in ckpt and "lm_head.weight" not in mapped_p
    got = set(mapped_p) | set(mapped_b)
    if got != set(ckpt):
        raise RuntimeError(
            f"name mismatch: only mapped {sorted(got - set(ckpt))[:8]}, only checkpoint {sorted(set(ckpt) - got)[:8]}"
        )
    for k, t in {**mapped_p, **mapped_b}.items():
        if t.shape != ckpt[k].shape or t.dtype != ckpt[k].dtype:
            raise RuntimeError(f"{k}: mapped {tuple(t.shape)} {t.dtype} vs checkpoint {tuple(ckpt[k].shape)} "
                               f"{ckpt[k].dtype}")
        if not torch.equal(t, ckpt[k]):
            raise RuntimeError(f"{k}: mapped values differ from checkpoint")
    return set(mapped_p), set(mapped_b)


def save_tensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    # one metadata key only: safetensors writes the metadata map in hash order (not reproducible for >1 key)
    assert len(metadata) == 1
    for k, t in tensors.items():
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), k
    save_file({k: tensors[k] for k in sorted(tensors)}, path, metadata=metadata)


# --------------------------------------------------------------------------------------
# gradient fixtures
# --------------------------------------------------------------------------------------
def loss_and_grads(model, inputs: torch.Tensor, targets: torch.Tensor):
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        logits = model(input_ids=inputs[None]).logits[0]
        assert logits.dtype in (torch.float32, torch.float64)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
    grads = {}
    for n, p in model.named_parameters():
        if p.grad is None:
            raise RuntimeError(f"parameter {n} received no gradient")
        grads[n] = p.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    return loss.detach(), logits.detach(), grads


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def fd_check(model, inputs, targets, grads: dict[str, torch.Tensor]) -> dict:
    """Central finite difference in float64 along a random direction vs. the fp32 autograd gradient."""
    m64 = copy.deepcopy(model).double()
    g = torch.Generator().manual_seed(FD_SEED)
    params = dict(m64.named_parameters())
    dirs = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}
    norm = math.sqrt(sum(float((d * d).sum()) for d in dirs.values()))
    dirs = {n: d / norm for n, d in dirs.items()}

    @torch.no_grad()
    def f(sign: float) -> float:
        for n, p in params.items():
            p.add_(dirs[n], alpha=sign * FD_EPS)
        v = float(F.cross_entropy(m64(input_ids=inputs[None]).logits[0], targets))
        for n, p in params.items():
            p.sub_(dirs[n], alpha=sign * FD_EPS)
        return v

    fd = (f(1.0) - f(-1.0)) / (2 * FD_EPS)
    ad = sum(float((grads[n].double() * dirs[n]).sum()) for n in params)
    rel = abs(fd - ad) / max(abs(fd), 1e-12)
    return {"fd_directional": fd, "autograd_directional": ad, "rel_err": rel}


def unrouted_experts(grads_ck: dict[str, torch.Tensor]) -> list[str]:
    """Per-expert checkpoint tensors (hub layout) whose gradient is exactly zero."""
    out = []
    for k, t in grads_ck.items():
        if re.search(r"\.experts\.\d+\.", k) and not bool(t.any()):
            out.append(k)
    return sorted(out)


def make_grad_fixture(fixture: str, root: str) -> dict:
    gdir = os.path.join(GOLDEN_ROOT, fixture)
    with open(os.path.join(gdir, "golden.json")) as f:
        golden = json.load(f)
    ckpt = read_checkpoint(gdir)
    hub = is_hub_layout(ckpt)
    model = load_model(fixture)
    check_no_train_noise(model)
    mt = model.config.model_type
    param_names, buffer_names = verify_mapping(model, ckpt, hub)

    ids = list(golden["prompt_ids"]) + list(golden["greedy_ids"])
    inputs = torch.tensor(ids[:-1], dtype=torch.long)
    targets = torch.tensor(ids[1:], dtype=torch.long)

    probe = RouterProbe(model)
    loss, logits, grads = loss_and_grads(model, inputs, targets)
    probe.close()
    router_margin = probe.min_margin if probe.calls else None

    # sanity: causal prefix logits == the golden prompt logits
    ref_logits = torch.from_numpy(np.load(os.path.join(gdir, "logits.npy")))
    prompt_diff = float((logits[: ref_logits.shape[0]] - ref_logits).abs().max())
    assert prompt_diff <= 1e-4, (fixture, prompt_diff)

    # train() must change nothing (dropout 0, router jitter 0, no aux loss)
    model.train()
    loss_t, _, grads_t = loss_and_grads(model, inputs, targets)
    model.eval()
    assert torch.equal(loss, loss_t), (fixture, float(loss), float(loss_t))
    train_diff = max_abs_diff(grads, grads_t)
    assert train_diff == 0.0, (fixture, "train() changes gradients", train_diff)

    # the default (grouped_mm) experts kernel must agree with the eager reference
    kernel_diff = None
    if any(n.endswith("experts.gate_up_proj") for n in grads):
        alt = load_model(fixture, "grouped_mm")
        loss_g, _, grads_g = loss_and_grads(alt, inputs, targets)
        kernel_diff = max(abs(float(loss_g - loss)), max_abs_diff(grads, grads_g))
        assert kernel_diff < 1e-4, (fixture, "grouped_mm vs eager", kernel_diff)
        del alt

    fd = fd_check(model, inputs, targets, grads)
    assert fd["rel_err"] < FD_MAX_REL_ERR, (fixture, fd)

    grads_ck = to_checkpoint(grads, mt, hub)
    assert set(grads_ck) == param_names
    for k, t in grads_ck.items():
        assert t.shape == ckpt[k].shape, (k, t.shape, ckpt[k].shape)

    out_dir = os.path.join(root, f"grad_{fixture}")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    save_tensors(grads_ck, os.path.join(out_dir, "grads.safetensors"),
                 {"description": f"{fixture}: dLoss/dParam, fp32"})
    grad_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in grads.values()))
    case = {
        "fixture": fixture,
        "model_type": mt,
        "input_ids": inputs.tolist(),
        "target_ids": targets.tolist(),
        "loss": float(loss),
        "loss_definition": "F.cross_entropy(model(input_ids=[input_ids]).logits[0], target_ids), mean over tokens",
        "grad_total_norm": grad_norm,
        "num_tensors": len(grads_ck),
        "checkpoint_layout": "hub (fused experts split per expert)" if hub else "as stored (no split)",
        "omitted_buffers": sorted(buffer_names),
        "tied_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
        "zero_grad_expert_tensors": unrouted_experts(grads_ck),
        "router_min_margin": router_margin,
        "checks": {
            "prompt_logits_vs_golden_max_abs_diff": prompt_diff,
            "train_mode_vs_eval_mode_max_abs_grad_diff": train_diff,
            "grouped_mm_vs_eager_max_abs_diff": kernel_diff,
            "fp64_finite_difference": fd,
        },
        **versions(),
    }
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        f.write(dump_json(case))
    return case


# --------------------------------------------------------------------------------------
# AdamW trajectory fixtures
# --------------------------------------------------------------------------------------
def make_adamw_fixture(fixture: str, seed: int, root: str) -> dict:
    gdir = os.path.join(GOLDEN_ROOT, fixture)
    ckpt = read_checkpoint(gdir)
    hub = is_hub_layout(ckpt)
    model = load_model(fixture)
    check_no_train_noise(model)
    mt = model.config.model_type
    param_names, buffer_names = verify_mapping(model, ckpt, hub)
    vocab = model.config.vocab_size
    B, T, steps = ADAMW["B"], ADAMW["T"], ADAMW["steps"]

    rng = np.random.default_rng(seed)
    data = rng.integers(0, vocab, size=steps * B * (T + 1), dtype=np.int64)

    params = list(model.parameters())
    opt = torch.optim.AdamW(
        params, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"],
        amsgrad=False, maximize=False, foreach=False, fused=False,
    )
    losses, grad_norms, router_margins, v3_selected, unrouted = [], [], [], [], []
    for s in range(steps):
        rows = torch.from_numpy(data[s * B * (T + 1):(s + 1) * B * (T + 1)].reshape(B, T + 1).copy())
        x, y = rows[:, :T], rows[:, 1:]
        opt.zero_grad(set_to_none=True)
        probe = RouterProbe(model)
        with torch.enable_grad():
            logits = model(input_ids=x).logits
            assert logits.shape == (B, T, vocab) and logits.dtype == torch.float32
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            loss.backward()
        for n, p in model.named_parameters():
            if p.grad is None:
                raise RuntimeError(f"step {s}: parameter {n} received no gradient")
        idle = []
        for n, p in model.named_parameters():
            if n.endswith("experts.gate_up_proj"):
                layer = int(re.search(r"layers\.(\d+)\.", n).group(1))
                idle += [f"L{layer}E{e}" for e in range(p.shape[0]) if not bool(p.grad[e].any())]
        unrouted.append(idle)
        gn = torch.nn.utils.clip_grad_norm_(params, ADAMW["max_grad_norm"], norm_type=2.0, foreach=False)
        opt.step()
        losses.append(float(loss.detach()))
        grad_norms.append(float(gn))
        router_margins.append(probe.min_margin)
        v3_selected.append(probe.min_selected_v3)
        probe.close()

    # buffers (e_score_correction_bias) must be untouched
    with torch.no_grad():
        final = to_checkpoint(param_dict(model), mt, hub)
        buf = to_checkpoint({n: b for n, b in model.named_buffers() if n in model.state_dict()}, mt, hub)
        for k, t in buf.items():
            assert torch.equal(t, ckpt[k]), k
    assert set(final) == param_names
    for k, t in final.items():
        assert t.shape == ckpt[k].shape, k

    out_dir = os.path.join(root, f"adamw_{fixture}")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    np.save(os.path.join(out_dir, "data.npy"), data)
    save_tensors(final, os.path.join(out_dir, "final.safetensors"),
                 {"description": f"{fixture}: parameters after {steps} AdamW steps, fp32"})
    max_change = max(float((final[k] - ckpt[k]).abs().max()) for k in final)
    info = {
        "fixture": fixture,
        "model_type": mt,
        "B": B,
        "T": T,
        "steps": steps,
        "vocab_size": vocab,
        "data_file": "data.npy",
        "data_seed": seed,
        "data_generator": f"numpy.random.default_rng({seed}).integers(0, {vocab}, size={steps * B * (T + 1)}, "
        "dtype=int64)",
        "batch_layout": "step s, row i = ids[(s*B+i)*(T+1) : (s*B+i+1)*(T+1)]; inputs = row[:T], targets = row[1:]",
        "loss_definition": "mean cross-entropy over all B*T targets, computed before the update of that step",
        "hyperparameters": {
            "optimizer": "torch.optim.AdamW (foreach=False, amsgrad=False), all parameters, constant lr",
            "lr": ADAMW["lr"],
            "betas": list(ADAMW["betas"]),
            "eps": ADAMW["eps"],
            "weight_decay": ADAMW["weight_decay"],
            "max_grad_norm": ADAMW["max_grad_norm"],
            "clip": "torch.nn.utils.clip_grad_norm_(params, 1.0): total L2 norm over all grads; "
            "grads *= min(1, max_norm / (total_norm + 1e-6))",
        },
        "losses": losses,
        "grad_norms": grad_norms,
        "grad_norms_note": "pre-clip total L2 norm (return value of clip_grad_norm_)",
        "router_min_margins": router_margins,
        "router_min_margins_note": "per step, smallest gap at any expert-selection boundary over all B*T tokens "
        "and MoE layers (same measure as golden.json router_min_margin); small values mean a tiny weight "
        "difference can flip a routing decision and make trajectories diverge",
        "unrouted_experts": unrouted,
        "unrouted_experts_note": "per step, experts (layer L, expert E) that no token selected: their gradient is "
        "exactly 0, yet torch AdamW still applies weight decay and the moment/bias-correction update to them",
        **({"v3_min_selected_score_plus_bias": v3_selected} if mt == "deepseek_v3" else {}),
        "final_file": "final.safetensors",
        "final_num_tensors": len(final),
        "final_omitted_buffers": sorted(buffer_names),
        "final_max_abs_change_vs_checkpoint": max_change,
        **versions(),
    }
    with open(os.path.join(out_dir, "steps.json"), "w") as f:
        f.write(dump_json(info))
    return info


def dir_size(d: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/train")
    ap.add_argument("--only", nargs="*", default=None,
                    help="output names to (re)generate, e.g. grad_mixtral adamw_qwen2_moe")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    all_names = [f"grad_{f}" for f in GRAD_FIXTURES] + [f"adamw_{f}" for f in ADAMW_FIXTURES]
    unknown = set(args.only or []) - set(all_names)
    if unknown:
        ap.error(f"unknown output(s): {sorted(unknown)}; choose from {all_names}")

    def wanted(n):
        return args.only is None or n in args.only

    for fx in GRAD_FIXTURES:
        if wanted(f"grad_{fx}"):
            torch.manual_seed(0)
            case = make_grad_fixture(fx, args.out)
            d = os.path.join(args.out, f"grad_{fx}")
            print(f"grad_{fx:18s} loss {case['loss']!r:22s} |g| {case['grad_total_norm']:.6g} "
                  f"tensors {case['num_tensors']:3d} zero-grad experts {len(case['zero_grad_expert_tensors']):2d} "
                  f"fd rel {case['checks']['fp64_finite_difference']['rel_err']:.2e} router {case['router_min_margin']} "
                  f"mm {case['checks']['grouped_mm_vs_eager_max_abs_diff']} {dir_size(d) / 1024:.0f} KiB",
                  flush=True)
    for fx, seed in ADAMW_FIXTURES.items():
        if wanted(f"adamw_{fx}"):
            torch.manual_seed(0)
            info = make_adamw_fixture(fx, seed, args.out)
            d = os.path.join(args.out, f"adamw_{fx}")
            print(f"adamw_{fx}: {dir_size(d) / 1024:.0f} KiB, max change "
                  f"{info['final_max_abs_change_vs_checkpoint']:.4g}, min router margin "
                  f"{min(info['router_min_margins']):.3g}")
            print("  losses    ", " ".join(f"{v:.4f}" for v in info["losses"]))
            print("  grad_norms", " ".join(f"{v:.3f}" for v in info["grad_norms"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
