#!/usr/bin/env python3
"""PyTorch peer of bench_gpu_attention: torch.nn.functional.scaled_dot_product_attention, causal, bf16, one
sequence, timed with CUDA events; FLOPs counted as 4 * T^2 * H * d / 2.

  python3 bench/torch_attention.py [--tokens 16384] [--heads 16] [--head-dim 128] [--iters 10]
"""
import argparse

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    t, h, d = args.tokens, args.heads, args.head_dim
    q, k, v = (torch.randn(1, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4.0 * t * t * h * d / 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("\n| backend | time | TFLOP/s |\n|---|---|---|")
    for name in ["default", "cudnn", "flash"]:
        backend = {"cudnn": torch.nn.attention.SDPBackend.CUDNN_ATTENTION,
                   "flash": torch.nn.attention.SDPBackend.FLASH_ATTENTION}.get(name)
        try:
            ctx = torch.nn.attention.sdpa_kernel(backend) if backend is not None else torch.no_grad()
            with ctx, torch.no_grad():
                for _ in range(3):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                for _ in range(args.iters):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)
                stop.record()
                torch.cuda.synchronize()
            ms = start.elapsed_time(stop) / args.iters
            print(f"| SDPA {name} | {ms:.3f} ms | {flops / ms / 1e9:.1f} |")
        except Exception as e:  # a backend this build lacks
            print(f"| SDPA {name} | unavailable ({type(e).__name__}) | |")


if __name__ == "__main__":
    main()
