#!/usr/bin/env python3
"""PyTorch peer of bench_gpu_decode: Hugging Face transformers' model for the same config.json, random bf16
weights on the GPU, prefill of B random prompts then batched greedy-free decode steps with the KV cache,
timed with CUDA synchronisation. Prints the same table columns (decode tok/s per batch size).

  python3 bench/torch_moe_decode.py --config bench/configs/qwen3_30b_a3b.json --batches 1,8,32 \
      --prompt-len 128 --decode-steps 32
"""
import argparse
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-steps", type=int, default=32)
    args = ap.parse_args()
    cfg = AutoConfig.from_pretrained(args.config)
    t0 = time.time()
    with torch.device("cuda"):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)  # transformers >= 4.56
        except TypeError:
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}; init {time.time() - t0:.1f} s")
    rows = []
    g = torch.Generator(device="cuda").manual_seed(1)
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = torch.randint(0, cfg.vocab_size, (batch, args.prompt_len), device="cuda", generator=g)
        with torch.inference_mode():
            torch.cuda.synchronize()
            a = time.time()
            out = model(input_ids=ids, use_cache=True)
            torch.cuda.synchronize()
            prefill = batch * args.prompt_len / (time.time() - a)
            cache = out.past_key_values
            nxt = torch.randint(0, cfg.vocab_size, (batch, 1), device="cuda", generator=g)
            times = []
            for step in range(args.decode_steps + 2):
                torch.cuda.synchronize()
                a = time.time()
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                torch.cuda.synchronize()
                if step >= 2:
                    times.append(time.time() - a)
                cache = out.past_key_values
                nxt = torch.randint(0, cfg.vocab_size, (batch, 1), device="cuda", generator=g)
        step = sum(times) / len(times)
        rows.append((batch, prefill, step * 1e3, batch / step))
        del cache, out
        torch.cuda.empty_cache()
    print("\n| batch | prefill tok/s | decode step | decode tok/s |\n|---|---|---|---|")
    for b, p, ms, tps in rows:
        print(f"| {b} | {p:.0f} | {ms:.2f} ms | {tps:.1f} |")


if __name__ == "__main__":
    main()
