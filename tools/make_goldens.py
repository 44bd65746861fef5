#!/usr/bin/env python3
"""Generate small golden fixtures for Switchyard from Hugging Face transformers.

Usage:
    python3 tools/make_goldens.py --out tests/fixtures/golden [--only NAME ...]

For every fixture a tiny random model is built with transformers (fp32, eager
attention, fixed seed), its weights are re-initialised so that logits are well
spread, it is saved with `save_pretrained(..., safe_serialization=True)`, loaded
back from disk, and the reference outputs are computed from the *reloaded*
model in fp32 on CPU:

    <out>/<name>/config.json            as written by save_pretrained
    <out>/<name>/model*.safetensors     (+ model.safetensors.index.json if sharded)
    <out>/<name>/logits.npy             float32 (prompt_len, vocab) = model(prompt).logits[0]
    <out>/<name>/golden.json            prompt/greedy ids, margins, layout, versions

The script is deterministic and re-runnable (each fixture directory is wiped
and rewritten). CPU only.
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
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()  # "Writing model shards" / "Loading weights"
try:
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
except Exception:  # pragma: no cover
    pass

NEW_TOKENS = 8
# A fixture is accepted only if every greedy step's best/second logit gap and every router
# selection gap are above these thresholds; otherwise the seed is bumped (deterministically).
MIN_TOP2_MARGIN = 2e-2
MIN_ROUTER_MARGIN = 1e-3
MAX_ATTEMPTS = 20
MIN_DISTINCT_GREEDY = 5

# --------------------------------------------------------------------------------------
# Fixture specifications
# --------------------------------------------------------------------------------------
# layout:
#   "hub"        per-expert tensors with the names used by real Hub checkpoints
#                (what save_pretrained writes by default in transformers 5: it reverts its
#                internal fused expert tensors to the original per-expert format).
#   "fused"      transformers-5 internal fused 3D expert tensors
#                (save_pretrained(..., save_original_format=False)).
#   "gpt_oss"    gpt-oss fused expert tensors (that *is* the Hub layout for gpt-oss, minus MXFP4).
#   "dense"      no experts.

YARN_V2 = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
}

FIXTURES: list[dict] = [
    dict(
        name="mixtral",
        model_type="mixtral",
        seed=1001,
        prompt_len=9,
        layout="hub",
        variation="GQA 4 q heads / 2 kv heads, top-2 of 4 experts, rope_theta 1e4",
        config=dict(
            vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="mixtral_window",
        model_type="mixtral",
        seed=1002,
        prompt_len=10,
        layout="hub",
        variation="sliding_window=4 (< prompt), 3 heads / 1 kv head (MQA, odd head count), rope_theta 1e6",
        config=dict(
            vocab_size=112, hidden_size=48, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=3, num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2,
            sliding_window=4, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="mixtral_bf16",
        model_type="mixtral",
        seed=1003,
        prompt_len=8,
        layout="hub",
        save_dtype="bfloat16",
        variation="mixtral weights stored as bfloat16; reference = fp32 math on bf16-rounded weights",
        config=dict(
            vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="qwen2_moe",
        model_type="qwen2_moe",
        seed=2001,
        prompt_len=11,
        layout="hub",
        variation="shared expert + sigmoid shared_expert_gate, norm_topk_prob False, mlp_only_layers=[0] "
        "(dense layer 0), decoder_sparse_step 1, 3 layers, qkv bias",
        config=dict(
            vocab_size=144, hidden_size=40, intermediate_size=48, moe_intermediate_size=16,
            shared_expert_intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, num_experts=6, num_experts_per_tok=2, norm_topk_prob=False,
            mlp_only_layers=[0], decoder_sparse_step=1, qkv_bias=True, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="qwen2_moe_sparse_step",
        model_type="qwen2_moe",
        seed=2002,
        prompt_len=7,
        layout="hub",
        variation="decoder_sparse_step=2 (layers 1 MoE, 0/2 dense), norm_topk_prob True, top-3 of 4",
        config=dict(
            vocab_size=100, hidden_size=32, intermediate_size=40, moe_intermediate_size=20,
            shared_expert_intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, num_experts=4, num_experts_per_tok=3, norm_topk_prob=True,
            mlp_only_layers=[], decoder_sparse_step=2, qkv_bias=True, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="qwen3_moe",
        model_type="qwen3_moe",
        seed=3001,
        prompt_len=9,
        layout="hub",
        variation="explicit head_dim 16 != hidden/heads (48/4=12), per-head q/k RMSNorm, norm_topk_prob True, "
        "top-2 of 8",
        config=dict(
            vocab_size=120, hidden_size=48, intermediate_size=64, moe_intermediate_size=24,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="qwen3_moe_native",
        model_type="qwen3_moe",
        seed=3002,
        prompt_len=8,
        layout="fused",
        variation="transformers-5 native fused expert layout (gate_up_proj/down_proj 3D), 6 heads / 2 kv heads, "
        "norm_topk_prob False, top-2 of 4",
        config=dict(
            vocab_size=96, hidden_size=48, intermediate_size=64, moe_intermediate_size=16,
            num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
            num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="olmoe",
        model_type="olmoe",
        seed=4001,
        prompt_len=10,
        layout="hub",
        variation="q_norm/k_norm RMSNorm over the full q/k projection (not per head), norm_topk_prob False, "
        "top-2 of 6",
        config=dict(
            vocab_size=128, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, num_experts=6, num_experts_per_tok=2,
            norm_topk_prob=False, clip_qkv=None, pad_token_id=1, eos_token_id=127, bos_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="olmoe_clip",
        model_type="olmoe",
        seed=4002,
        prompt_len=6,
        layout="hub",
        variation="clip_qkv=0.5 (clamp applied AFTER q_norm/k_norm in transformers), GQA 4/2, "
        "norm_topk_prob True",
        config=dict(
            vocab_size=104, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
            norm_topk_prob=True, clip_qkv=0.5, pad_token_id=1, eos_token_id=103, bos_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="deepseek_v2_lite",
        model_type="deepseek_v2",
        seed=5001,
        prompt_len=9,
        layout="hub",
        variation="MLA with q_lora_rank None, softmax greedy top-2 of 4, first_k_dense_replace 1, "
        "n_shared_experts 2, routed_scaling_factor 2.5, norm_topk_prob False, YaRN (mscale=mscale_all_dim=0.707)",
        config=dict(
            vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
            n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1,
            routed_scaling_factor=2.5, topk_method="greedy", n_group=None, topk_group=None,
            norm_topk_prob=False, scoring_func="softmax",
            rope_parameters=dict(YARN_V2), max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="deepseek_v2_group",
        model_type="deepseek_v2",
        seed=5002,
        prompt_len=8,
        layout="hub",
        variation="MLA with q_lora_rank set, topk_method group_limited_greedy n_group 4 topk_group 2, "
        "top-2 of 8, first_k_dense_replace 1, routed_scaling_factor 1.5, YaRN",
        config=dict(
            vocab_size=112, hidden_size=48, intermediate_size=40, moe_intermediate_size=16,
            num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=3,
            q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
            routed_scaling_factor=1.5, topk_method="group_limited_greedy", n_group=4, topk_group=2,
            norm_topk_prob=False, scoring_func="softmax",
            rope_parameters=dict(YARN_V2, factor=8.0, mscale=1.0, mscale_all_dim=1.0),
            max_position_embeddings=512, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="deepseek_v3",
        model_type="deepseek_v3",
        seed=6001,
        prompt_len=10,
        layout="hub",
        variation="sigmoid scores + e_score_correction_bias (noaux_tc), n_group 4 topk_group 2, top-3 of 8, "
        "norm_topk_prob True, routed_scaling_factor 2.5, q_lora_rank set, rope_interleave True, "
        "YaRN with mscale 1.0 != mscale_all_dim 0.8 (cos/sin attention_factor != 1), first_k_dense_replace 1",
        config=dict(
            vocab_size=136, hidden_size=48, intermediate_size=48, moe_intermediate_size=16,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
            n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=1,
            routed_scaling_factor=2.5, n_group=4, topk_group=2, norm_topk_prob=True,
            topk_method="noaux_tc", scoring_func="sigmoid", rope_interleave=True,
            num_nextn_predict_layers=0,
            rope_parameters={
                "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                "original_max_position_embeddings": 64, "mscale": 1.0, "mscale_all_dim": 0.8,
                "beta_fast": 32.0, "beta_slow": 1.0,
            },
            max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
    dict(
        name="gpt_oss",
        model_type="gpt_oss",
        seed=7001,
        prompt_len=9,
        layout="gpt_oss",
        gate_up_gain=3.0,  # large enough that the swiglu clamps (limit 7) are actually hit
        variation="attention sinks, layer_types sliding/full alternating with sliding_window 4, YaRN "
        "(truncate False), top-2 of 4 with router bias, clamped swiglu (alpha 1.702, limit 7.0), qkvo biases",
        config=dict(
            vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
            num_experts_per_tok=2, sliding_window=4, swiglu_limit=7.0, swiglu_alpha=1.702,
            attention_bias=True, layer_types=["sliding_attention", "full_attention"],
            rope_parameters={
                "rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0,
                "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 64,
            },
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="mixtral_sharded",
        model_type="mixtral",
        seed=1004,
        prompt_len=7,
        layout="hub",
        shards=3,
        variation="mixtral saved in 3 safetensors shards + model.safetensors.index.json, top-2 of 8, hidden 64",
        config=dict(
            vocab_size=160, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="llama",
        model_type="llama",
        seed=8001,
        prompt_len=8,
        layout="dense",
        variation="dense llama, tied embeddings (no lm_head tensor), llama3 rope scaling, GQA 4/2",
        config=dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
            rope_parameters={
                "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            },
            max_position_embeddings=256, rms_norm_eps=1e-5,
        ),
    ),
    dict(
        name="qwen3",
        model_type="qwen3",
        seed=9001,
        prompt_len=7,
        layout="dense",
        variation="dense qwen3, per-head q/k RMSNorm, explicit head_dim 16 with hidden 32 / 4 heads",
        config=dict(
            vocab_size=112, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
            attention_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            max_position_embeddings=256, rms_norm_eps=1e-6,
        ),
    ),
]


# --------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------
def build_config(spec: dict):
    cfg = AutoConfig.for_model(spec["model_type"], **spec["config"])
    return cfg


@torch.no_grad()
def randomize_(model: torch.nn.Module, model_type: str, seed: int, gate_up_gain: float = 1.0) -> None:
    """Re-initialise all weights so activations stay O(1) and logits are well spread."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    hidden = model.config.hidden_size
    norm_param_ids = set()
    # RMSNorm weights: 1 + 0.1*randn
    for mod_name, mod in model.named_modules():
        if "RMSNorm" in type(mod).__name__ or "LayerNorm" in type(mod).__name__:
            for p in mod.parameters(recurse=False):
                p.copy_(1.0 + 0.1 * randn(p.shape))
                norm_param_ids.add(id(p))

    for name, p in model.named_parameters():  # tied params appear once
        if id(p) in norm_param_ids:
            continue
        if name.endswith("sinks"):
            p.copy_(randn(p.shape))
        elif name.endswith("bias"):  # Linear biases, router bias, gate_up_proj_bias, down_proj_bias
            p.copy_(0.1 * randn(p.shape))
        elif name.endswith("embed_tokens.weight"):
            std = 0.25 if model.config.tie_word_embeddings else 1.0
            p.copy_(std * randn(p.shape))
        elif name.endswith("lm_head.weight"):
            p.copy_(2.5 / math.sqrt(hidden) * randn(p.shape))
        elif name.endswith("mlp.gate.weight") or name.endswith("mlp.router.weight"):
            p.copy_(2.0 / math.sqrt(hidden) * randn(p.shape))  # decisive routing
        elif name.endswith("shared_expert_gate.weight"):
            p.copy_(1.0 / math.sqrt(hidden) * randn(p.shape))
        elif p.dim() == 3:  # fused experts
            if model_type == "gpt_oss":  # [E, in, out]
                fan_in = p.shape[1]
            else:  # [E, out, in]
                fan_in = p.shape[2]
            gain = gate_up_gain if name.endswith("gate_up_proj") else 1.0
            p.copy_(gain / math.sqrt(fan_in) * randn(p.shape))
        elif p.dim() == 2:  # Linear [out, in]
            p.copy_(1.0 / math.sqrt(p.shape[1]) * randn(p.shape))
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")

    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(0.1 * randn(b.shape))


def build_model(spec: dict, seed: int):
    cfg = build_config(spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    randomize_(model, spec["model_type"], seed + 1, spec.get("gate_up_gain", 1.0))
    model.eval()
    return model


def load_model(path: str, disk_dtype: torch.dtype):
    m = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=disk_dtype)
    return m.float().eval()


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def read_all_tensors(path: str) -> dict[str, torch.Tensor]:
    out = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(path, fn), "pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
    return out


EXPERT_NAMES = {  # per-expert (Hub) names: (gate, up, down)
    "mixtral": ("block_sparse_moe", "w1", "w3", "w2"),
}


def detect_layout(keys: list[str]) -> str:
    if any(re.search(r"\.experts\.\d+\.", k) for k in keys):
        return "hub"
    if any(k.endswith("experts.gate_up_proj") for k in keys):
        return "fused"
    return "dense"


@torch.no_grad()
def check_hub_split(model, tensors: dict, model_type: str) -> int:
    """Independently verify that the per-expert tensors on disk are the row-splits of the in-memory
    fused tensors: gate = gate_up_proj[e, :I], up = gate_up_proj[e, I:], down = down_proj[e]."""
    n = 0
    for name, p in model.named_parameters():
        if not name.endswith("experts.gate_up_proj"):
            continue
        prefix = name[: -len("experts.gate_up_proj")]  # model.layers.N.mlp.
        down = dict(model.named_parameters())[prefix + "experts.down_proj"]
        E, two_i, _ = p.shape
        inter = two_i // 2
        for e in range(E):
            if model_type == "mixtral":
                base = prefix.replace(".mlp.", ".block_sparse_moe.") + f"experts.{e}."
                names = (base + "w1.weight", base + "w3.weight", base + "w2.weight")
            else:
                base = prefix + f"experts.{e}."
                names = (base + "gate_proj.weight", base + "up_proj.weight", base + "down_proj.weight")
            ref = (p[e, :inter], p[e, inter:], down[e])
            for nm, r in zip(names, ref):
                t = tensors[nm].float()
                assert t.shape == r.shape, (nm, t.shape, r.shape)
                assert torch.equal(t, r.to(tensors[nm].dtype).float()), nm
                n += 1
    return n


class RouterProbe:
    """Forward hooks on the MoE routers that recompute the routing decision and record the
    smallest gap at every selection boundary (k-th vs (k+1)-th candidate, and for grouped routing
    the topk_group-th vs next group)."""

    def __init__(self, model):
        self.model = model
        self.min_margin = math.inf
        self.min_selected_v3 = math.inf
        self.calls = 0
        self.handles = []
        for _, mod in model.named_modules():
            if type(mod).__name__.lower().endswith("topkrouter"):
                self.handles.append(mod.register_forward_hook(self._hook))

    @staticmethod
    def _gap(x: torch.Tensor, k: int) -> float:
        s = torch.sort(x, dim=-1, descending=True).values
        if k >= s.shape[-1]:
            return math.inf
        return float((s[:, k - 1] - s[:, k]).min())

    @torch.no_grad()
    def _hook(self, mod, inputs, output):
        self.calls += 1
        cls = type(mod).__name__
        x = inputs[0].reshape(-1, mod.hidden_dim).float()
        w = mod.weight.float()
        k = mod.top_k
        if cls.startswith("GptOss"):
            logits = F.linear(x, w, mod.bias.float())
            m = self._gap(logits, k)
        elif cls.startswith("DeepseekV3"):
            scores = F.linear(x, w).sigmoid()
            sfc = scores + mod.e_score_correction_bias.float()
            ng, tg, ne = mod.num_group, mod.topk_group, mod.num_experts
            gs = sfc.view(-1, ng, ne // ng).topk(2, dim=-1)[0].sum(dim=-1)
            m = self._gap(gs, tg)
            gidx = torch.topk(gs, k=tg, dim=-1)[1]
            gmask = torch.zeros_like(gs).scatter_(1, gidx, 1).bool()
            smask = gmask.unsqueeze(-1).expand(-1, ng, ne // ng).reshape(-1, ne)
            masked = sfc.masked_fill(~smask, float("-inf"))
            m = min(m, self._gap(masked, k))
            sel = torch.topk(masked, k=k, dim=-1)[0]
            self.min_selected_v3 = min(self.min_selected_v3, float(sel.min()))
        elif cls.startswith("DeepseekV2"):
            scores = F.linear(x, w).softmax(dim=-1)
            if mod.topk_method == "greedy":
                m = self._gap(scores, k)
            else:
                ng, tg, ne = mod.num_group, mod.topk_group, mod.num_experts
                gs = scores.view(-1, ng, ne // ng).max(dim=-1).values
                m = self._gap(gs, tg)
                gidx = torch.topk(gs, k=tg, dim=-1)[1]
                gmask = torch.zeros_like(gs).scatter_(1, gidx, 1).bool()
                smask = gmask.unsqueeze(-1).expand(-1, ng, ne // ng).reshape(-1, ne)
                m = min(m, self._gap(scores.masked_fill(~smask, 0.0), k))
        else:  # Mixtral / Qwen2Moe / Qwen3Moe / Olmoe: softmax over logits, top-k (monotone in logits)
            logits = F.linear(x, w)
            m = self._gap(logits, k)
        self.min_margin = min(self.min_margin, m)

    def close(self):
        for h in self.handles:
            h.remove()


class ClampProbe:
    """Fraction of routed gate/up pre-activations that the gpt-oss swiglu clamps (gate > limit,
    |up| > limit), over the (token, selected expert) pairs."""

    def __init__(self, model):
        self.hit = 0
        self.total = 0
        self.handles = [
            mod.register_forward_hook(self._hook)
            for _, mod in model.named_modules()
            if type(mod).__name__ == "GptOssExperts"
        ]

    @torch.no_grad()
    def _hook(self, mod, inputs, output):
        x, idx = inputs[0], inputs[1]
        for t in range(x.shape[0]):
            for e in idx[t].tolist():
                gu = x[t] @ mod.gate_up_proj[e] + mod.gate_up_proj_bias[e]
                gate, up = gu[::2], gu[1::2]
                self.hit += int((gate > mod.limit).sum() + (up.abs() > mod.limit).sum())
                self.total += gu.numel()

    def fraction(self) -> float:
        return self.hit / max(self.total, 1)

    def close(self):
        for h in self.handles:
            h.remove()


def top2_margin(logits_row: torch.Tensor) -> float:
    s = torch.topk(logits_row, 2).values
    return float(s[0] - s[1])


# --------------------------------------------------------------------------------------
# Main fixture routine
# --------------------------------------------------------------------------------------
def dump_json(obj) -> str:
    """json.dumps(indent=2) with flat lists kept on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(
        r"\[\s*([^\[\]{}]*?)\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    ) + "\n"


def file_listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


def save_fixture(model, spec: dict, out_dir: str) -> None:
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    save_kwargs = dict(safe_serialization=True)
    if spec["layout"] == "fused":
        save_kwargs["save_original_format"] = False
    if spec.get("shards"):
        # smallest max_shard_size (stepping up by 5%) that yields at most `shards` files
        total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        size = math.ceil(total / spec["shards"])
        while True:
            save_kwargs["max_shard_size"] = size
            model.save_pretrained(out_dir, **save_kwargs)
            n = sum(f.endswith(".safetensors") for f in os.listdir(out_dir))
            if n <= spec["shards"]:
                break
            shutil.rmtree(out_dir)
            os.makedirs(out_dir)
            size = math.ceil(size * 1.05)
        assert n >= 2, n
    else:
        model.save_pretrained(out_dir, **save_kwargs)
    gc = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)


@torch.no_grad()
def make_fixture(spec: dict, root: str) -> dict:
    name = spec["name"]
    out_dir = os.path.join(root, name)
    disk_dtype = torch.bfloat16 if spec.get("save_dtype") == "bfloat16" else torch.float32
    last_err = None
    for attempt in range(MAX_ATTEMPTS):
        seed = spec["seed"] + 7919 * attempt
        model = build_model(spec, seed)
        vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(seed + 2)
        prompt = torch.randint(0, vocab, (1, spec["prompt_len"]), generator=g)

        if disk_dtype != torch.float32:
            # round the parameters to the storage dtype but keep the model (and its rope buffers) fp32
            for p in model.parameters():
                p.copy_(p.to(disk_dtype).float())
            save_fixture(copy.deepcopy(model).to(disk_dtype), spec, out_dir)
        else:
            save_fixture(model, spec, out_dir)
        mem_model = model  # fp32 model (with bf16-rounded weights for bf16 fixtures)

        tensors = read_all_tensors(out_dir)
        on_disk_layout = detect_layout(list(tensors))
        expect = {"hub": "hub", "fused": "fused", "gpt_oss": "fused", "dense": "dense"}[spec["layout"]]
        assert on_disk_layout == expect, (name, on_disk_layout, expect)
        for k, t in tensors.items():
            want = torch.float32 if k.endswith("e_score_correction_bias") else disk_dtype
            assert t.dtype == want, (k, t.dtype)
        n_split = check_hub_split(mem_model, tensors, spec["model_type"]) if spec["layout"] == "hub" else 0

        ref = load_model(out_dir, disk_dtype)
        # reload must reproduce the in-memory model exactly
        a = ref(prompt).logits[0].float()
        b = mem_model(prompt).logits[0].float()
        reload_diff = float((a - b).abs().max())
        assert reload_diff <= 1e-4, (name, "reload mismatch", reload_diff)
        logits = a

        # greedy via generate (KV cache path)
        ref.generation_config.eos_token_id = None
        ref.generation_config.pad_token_id = 0
        ref.generation_config.bos_token_id = None
        gen = ref.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=NEW_TOKENS,
            eos_token_id=None, pad_token_id=0,
        )
        greedy_gen = gen[0, prompt.shape[1]:].tolist()
        # manual argmax loop over the full sequence (no cache)
        seq = prompt.clone()
        greedy, margins = [], []
        for _ in range(NEW_TOKENS):
            row = ref(seq).logits[0, -1].float()
            nxt = int(torch.argmax(row))
            greedy.append(nxt)
            margins.append(top2_margin(row))
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
        if greedy_gen != greedy:
            last_err = f"generate {greedy_gen} != manual {greedy}"
            print(f"  [{name}] attempt {attempt}: {last_err}", file=sys.stderr)
            continue

        # routing margins over the whole sequence (prompt + generated)
        probe = RouterProbe(ref)
        clamp_stats = ClampProbe(ref) if spec["model_type"] == "gpt_oss" else None
        full_logits = ref(seq).logits[0].float()
        probe.close()
        if clamp_stats is not None:
            clamp_stats.close()
        router_margin = probe.min_margin if probe.calls else None
        # the last-position logits of the full pass must agree with the manual loop
        assert int(torch.argmax(full_logits[-2])) == greedy[-1]
        prompt_margins = [top2_margin(r) for r in logits]

        ok = min(margins) >= MIN_TOP2_MARGIN and (router_margin is None or router_margin >= MIN_ROUTER_MARGIN)
        # avoid degenerate (repetitive) continuations, which exercise the decode path poorly
        ok = ok and len(set(greedy)) >= MIN_DISTINCT_GREEDY
        if spec["model_type"] == "deepseek_v3":
            # original DeepSeek code masks non-selected groups with 0.0, transformers with -inf; they agree
            # iff all selected (score + bias) values are positive.
            ok = ok and probe.min_selected_v3 > 0.0
        if not ok:
            last_err = (f"rejected: top2 {min(margins):.3g} router {router_margin} "
                        f"distinct {len(set(greedy))} v3_sel {probe.min_selected_v3:.3g}")
            print(f"  [{name}] attempt {attempt}: {last_err}", file=sys.stderr)
            continue

        np.save(os.path.join(out_dir, "logits.npy"), logits.numpy().astype(np.float32))
        files = file_listing(out_dir) + ["golden.json"]
        golden = {
            "name": name,
            "model_type": spec["model_type"],
            "architecture": type(ref).__name__,
            "variation": spec["variation"],
            "seed": seed,
            "prompt_ids": prompt[0].tolist(),
            "greedy_ids": greedy,
            "top2_margins": margins,
            "prompt_logits_top2_margin_min": min(prompt_margins),
            "router_min_margin": router_margin,
            "layout": spec["layout"],
            "layout_detail": LAYOUT_DETAIL[(spec["model_type"], spec["layout"])],
            "weights_dtype": "bfloat16" if disk_dtype == torch.bfloat16 else "float32",
            "reference_compute": "fp32 on CPU, eager attention, model reloaded from these files"
            + (" (bf16 weights upcast to fp32)" if disk_dtype == torch.bfloat16 else ""),
            "logits_file": "logits.npy",
            "logits_shape": list(logits.shape),
            "logits_abs_max": float(logits.abs().max()),
            "num_safetensors_files": sum(f.endswith(".safetensors") for f in files),
            "num_tensors": len(tensors),
            "hub_split_checked_tensors": n_split,
            "reload_vs_in_memory_max_abs_diff": reload_diff,
            "files": files,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "safetensors_version": safetensors.__version__,
            "numpy_version": np.__version__,
        }
        if clamp_stats is not None:
            golden["swiglu_clamped_fraction"] = clamp_stats.fraction()
        if spec["model_type"] == "deepseek_v3":
            golden["v3_min_selected_score_plus_bias"] = probe.min_selected_v3
        with open(os.path.join(out_dir, "golden.json"), "w") as f:
            f.write(dump_json(golden))
        return golden
    raise RuntimeError(f"{name}: no acceptable seed after {MAX_ATTEMPTS} attempts ({last_err})")


LAYOUT_DETAIL = {
    ("mixtral", "hub"): "model.layers.N.block_sparse_moe.gate.weight [E,H]; "
    "model.layers.N.block_sparse_moe.experts.E.{w1,w3}.weight [I,H] (gate,up), .w2.weight [H,I]",
    ("qwen2_moe", "hub"): "model.layers.N.mlp.gate.weight [E,H]; mlp.experts.E.{gate,up}_proj.weight [I,H], "
    "down_proj.weight [H,I]; mlp.shared_expert.{gate,up,down}_proj.weight; mlp.shared_expert_gate.weight [1,H]",
    ("qwen3_moe", "hub"): "model.layers.N.mlp.gate.weight [E,H]; mlp.experts.E.{gate,up}_proj.weight [I,H], "
    "down_proj.weight [H,I]",
    ("qwen3_moe", "fused"): "model.layers.N.mlp.gate.weight [E,H]; mlp.experts.gate_up_proj [E,2I,H] "
    "(rows 0..I-1 = gate, I..2I-1 = up; y = x @ W[e].T); mlp.experts.down_proj [E,H,I]",
    ("olmoe", "hub"): "model.layers.N.mlp.gate.weight [E,H]; mlp.experts.E.{gate,up}_proj.weight [I,H], "
    "down_proj.weight [H,I]",
    ("deepseek_v2", "hub"): "model.layers.N.mlp.gate.weight [E,H]; mlp.experts.E.{gate,up}_proj.weight [I,H], "
    "down_proj.weight [H,I]; mlp.shared_experts.{gate,up,down}_proj.weight (I*n_shared)",
    ("deepseek_v3", "hub"): "model.layers.N.mlp.gate.weight [E,H] + mlp.gate.e_score_correction_bias [E] (fp32); "
    "mlp.experts.E.{gate,up}_proj.weight [I,H], down_proj.weight [H,I]; mlp.shared_experts.*",
    ("gpt_oss", "gpt_oss"): "model.layers.N.mlp.router.{weight [E,H], bias [E]}; "
    "mlp.experts.gate_up_proj [E,H,2I] (y = x @ W[e]; gate = cols 0::2, up = cols 1::2) + gate_up_proj_bias [E,2I]; "
    "mlp.experts.down_proj [E,I,H] + down_proj_bias [E,H]",
    ("llama", "dense"): "dense; tied embeddings (no lm_head.weight in file)",
    ("qwen3", "dense"): "dense",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/golden")
    ap.add_argument("--only", nargs="*", default=None, help="fixture names to (re)generate")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # keep CPU reductions deterministic
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    unknown = set(args.only or []) - {s["name"] for s in FIXTURES}
    if unknown:
        ap.error(f"unknown fixture(s): {sorted(unknown)}")
    specs = [s for s in FIXTURES if args.only is None or s["name"] in args.only]
    summary = []
    for spec in specs:
        gold = make_fixture(spec, args.out)
        d = os.path.join(args.out, spec["name"])
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        summary.append((spec["name"], size, gold))
        print(
            f"{spec['name']:24s} {size/1024:8.1f} KiB  layout={gold['layout']:7s} seed={gold['seed']} "
            f"greedy={gold['greedy_ids']} min_top2={min(gold['top2_margins']):.3f} "
            f"router_min={gold['router_min_margin']}"
        )
    total = sum(s for _, s, _ in summary)
    print(f"total {total/1024:.1f} KiB in {len(summary)} fixtures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
