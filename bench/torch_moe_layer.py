#!/usr/bin/env python3
"""PyTorch peer of bench_gpu_moe_layer: transformers' own sparse MoE block for the config (layer 0's
`mlp`, random bf16 weights) on the GPU, timed with CUDA events at the same token counts.

  python3 bench/torch_moe_layer.py --config bench/configs/qwen3_30b_a3b.json --tokens 1,64,4096,16384
"""
import argparse

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokens", default="1,64,4096,16384")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    cfg = AutoConfig.from_pretrained(args.config)
    cfg.num_hidden_layers = 1
    with torch.device("cuda"):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    block = model.model.layers[0].mlp.eval()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name()}, "
          f"block {type(block).__name__}")
    print("\n| tokens | time |\n|---|---|")
    for t in [int(x) for x in args.tokens.split(",")]:
        x = torch.randn(1, t, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
        with torch.inference_mode():
            for _ in range(3):
                block(x)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(args.iters):
                block(x)
            stop.record()
            torch.cuda.synchronize()
        print(f"| {t} | {start.elapsed_time(stop) / args.iters:.3f} ms |")


if __name__ == "__main__":
    main()
