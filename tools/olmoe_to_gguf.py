#!/usr/bin/env python3
"""Converts an OLMoE safetensors checkpoint (Hugging Face names, bf16) to a GGUF file for llama.cpp.

Used by the decode benchmark (bench/bench_decode.cc, bench/llama_cpp_decode.py) to run llama.cpp on exactly
the weights Switchyard runs. Mirrors llama.cpp's convert_hf_to_gguf.py for OlmoeForCausalLM: no q/k permutation
(OLMoE uses NeoX RoPE), the 64 experts of a layer stacked into ffn_{gate,up,down}_exps, 1-D norms and the router
in F32, every other matrix in BF16 (bit-identical to the checkpoint) or F16.

Not a general converter: it writes no tokenizer (tokenizer.ggml.model = "no_vocab", token ids only), needs no
torch, and streams one tensor at a time so memory stays near the size of one layer's stacked experts (~270 MB).

  python tools/olmoe_to_gguf.py CHECKPOINT_DIR OUT.gguf [--outtype bf16|f16]
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("error: [olmoe_to_gguf] the gguf package is missing; pip install gguf")


class Checkpoint:
    """Memory-mapped safetensors shards of one directory (model.safetensors or an index)."""

    def __init__(self, root: Path):
        index = root / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = [p.name for p in sorted(root.glob("*.safetensors"))]
        if not files:
            sys.exit(f"error: [olmoe_to_gguf] no .safetensors files in {root}")
        self.entries: dict[str, tuple[Path, int, str, list[int], int, int]] = {}
        for name in files:
            path = root / name
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            for key, e in header.items():
                if key == "__metadata__":
                    continue
                begin, end = e["data_offsets"]
                self.entries[key] = (path, 8 + n, e["dtype"], e["shape"], begin, end)

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """Returns (array, dtype): uint16 bits for BF16/F16, float32 for F32; shaped as in the file."""
        if name not in self.entries:
            sys.exit(f"error: [olmoe_to_gguf] tensor {name!r} is missing from the checkpoint")
        path, base, dtype, shape, begin, end = self.entries[name]
        np_dtype = {"BF16": np.uint16, "F16": np.uint16, "F32": np.float32}.get(dtype)
        if np_dtype is None:
            sys.exit(f"error: [olmoe_to_gguf] {name}: dtype {dtype} is not supported (bf16, f16, f32)")
        count = (end - begin) // np.dtype(np_dtype).itemsize
        return np.memmap(path, dtype=np_dtype, mode="r", offset=base + begin, shape=(count,)).reshape(shape), dtype


def to_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "F32":
        return np.asarray(a, dtype=np.float32)
    if dtype == "BF16":
        return (np.asarray(a, dtype=np.uint32) << 16).view(np.float32)
    return np.asarray(a).view(np.float16).astype(np.float32)


def to_half(a: np.ndarray, dtype: str, outtype: str) -> np.ndarray:
    """uint16 bits in the output type."""
    if outtype == "bf16" and dtype == "BF16":
        return np.asarray(a)
    if outtype == "f16" and dtype == "F16":
        return np.asarray(a)
    f = to_f32(a, dtype)
    if outtype == "f16":
        return f.astype(np.float16).view(np.uint16)
    bits = f.view(np.uint32)  # round to nearest even
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--outtype", choices=["bf16", "f16"], default="bf16")
    args = ap.parse_args()

    cfg = json.loads((args.checkpoint / "config.json").read_text())
    if cfg.get("model_type") != "olmoe":
        sys.exit(f"error: [olmoe_to_gguf] model_type is {cfg.get('model_type')!r}; only olmoe is handled")
    ck = Checkpoint(args.checkpoint)
    n_layer, n_expert = cfg["num_hidden_layers"], cfg["num_experts"]
    half_type = gguf.GGMLQuantizationType.BF16 if args.outtype == "bf16" else gguf.GGMLQuantizationType.F16

    # (gguf name, checkpoint names, kind) in file order. Several names: experts stacked on a new first axis.
    # kind "f32" (norms, router) or "half" (every other matrix).
    plan: list[tuple[str, list[str], str]] = [("token_embd.weight", ["model.embed_tokens.weight"], "half")]
    for i in range(n_layer):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", [p + "input_layernorm.weight"], "f32"),
            (b + "attn_q.weight", [p + "self_attn.q_proj.weight"], "half"),
            (b + "attn_k.weight", [p + "self_attn.k_proj.weight"], "half"),
            (b + "attn_v.weight", [p + "self_attn.v_proj.weight"], "half"),
            (b + "attn_output.weight", [p + "self_attn.o_proj.weight"], "half"),
            (b + "attn_q_norm.weight", [p + "self_attn.q_norm.weight"], "f32"),
            (b + "attn_k_norm.weight", [p + "self_attn.k_norm.weight"], "f32"),
            (b + "ffn_norm.weight", [p + "post_attention_layernorm.weight"], "f32"),
            (b + "ffn_gate_inp.weight", [p + "mlp.gate.weight"], "f32"),
        ]
        for proj, gg in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
            plan.append((b + gg + ".weight", [f"{p}mlp.experts.{e}.{proj}.weight" for e in range(n_expert)], "half"))
    plan += [("output_norm.weight", ["model.norm.weight"], "f32"), ("output.weight", ["lm_head.weight"], "half")]
    for _, names, _ in plan:
        for name in names:
            if name not in ck.entries:
                sys.exit(f"error: [olmoe_to_gguf] tensor {name!r} is missing from {args.checkpoint}")

    w = gguf.GGUFWriter(args.out, "olmoe")
    w.add_name("olmoe-synthetic")
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    w.add_expert_count(n_expert)
    w.add_expert_used_count(cfg["num_experts_per_tok"])
    if cfg.get("clip_qkv") is not None:
        w.add_clamp_kqv(cfg["clip_qkv"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("no_vocab")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if args.outtype == "bf16" else gguf.LlamaFileType.MOSTLY_F16)

    # Shapes come from the checkpoint header, so the tensor table is written before any data is read.
    for gg, names, kind in plan:
        shape = ([len(names)] if len(names) > 1 else []) + ck.entries[names[0]][3]
        count = int(np.prod(shape))
        if kind == "f32":
            w.add_tensor_info(gg, shape, np.dtype(np.float32), count * 4)
        else:
            w.add_tensor_info(gg, shape, np.dtype(np.uint16), count * 2, raw_dtype=half_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0, done = time.time(), 0
    for n, (gg, names, kind) in enumerate(plan):
        parts = [ck.raw(name) for name in names]
        dtype = parts[0][1]
        a = np.stack([part for part, _ in parts]) if len(parts) > 1 else parts[0][0]
        data = to_f32(a, dtype) if kind == "f32" else to_half(a, dtype, args.outtype)
        w.write_tensor_data(np.ascontiguousarray(data))
        done += data.nbytes
        if gg.endswith("ffn_down_exps.weight") or n == len(plan) - 1:
            print(f"  {gg:32s} {done / 1e9:6.2f} GB written, {time.time() - t0:5.0f} s", flush=True)
    w.close()
    print(f"wrote {args.out} ({done / 1e9:.2f} GB of tensor data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
