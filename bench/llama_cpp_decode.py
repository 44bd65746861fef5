#!/usr/bin/env python3
"""llama.cpp peer for bench/bench_decode.cc: prefill and decode tokens/s at batch 1 on a GGUF file, CPU only.

Same protocol as bench_decode: the same pseudo-random prompt ids (splitmix64 of 777 + i, modulo the vocabulary),
one untimed warm-up prefill that pages the weights in, then per repeat a fresh KV cache, a timed prefill of the
prompt, `--warmup-tokens` untimed greedy decode steps and `--decode-tokens` timed greedy steps (only
llama_decode is timed; the argmax is not). Reports medians over the repeats.

Not a llama.cpp tuning exercise: default context parameters (F16 KV cache, flash attention as llama.cpp
decides), mmap'd weights, n_threads = n_threads_batch = --threads.

  python bench/llama_cpp_decode.py MODEL.gguf [--prompt-len 128] [--decode-tokens 64] [--threads 2] [--repeats 3]
Needs: pip install llama-cpp-python (built from source with -DGGML_NATIVE=ON for this CPU).
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

import numpy as np

try:
    import llama_cpp as lc
except ImportError:  # pragma: no cover
    sys.exit("error: [llama_cpp_decode] llama-cpp-python is missing; pip install llama-cpp-python")

MASK = (1 << 64) - 1


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


@lc.llama_log_callback
def _QUIET(level, text, user_data):  # drops llama.cpp's log lines
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--warmup-tokens", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--verbose", action="store_true", help="keep llama.cpp's own log")
    args = ap.parse_args()
    if args.prompt_len < 1 or args.decode_tokens < 1 or args.repeats < 1:
        sys.exit("error: [llama_cpp_decode] --prompt-len, --decode-tokens and --repeats must be >= 1")

    if not args.verbose:
        lc.llama_log_set(_QUIET, None)
    lc.llama_backend_init()
    print("llama.cpp system info:", lc.llama_print_system_info().decode().strip())
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    t0 = time.perf_counter()
    model = lc.llama_model_load_from_file(args.model.encode(), mparams)
    if not model:
        sys.exit(f"error: [llama_cpp_decode] llama.cpp could not load {args.model}")
    vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s (vocab {vocab})")

    total = args.prompt_len + args.warmup_tokens + args.decode_tokens
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = max(256, total + 16)
    cparams.n_batch = max(args.prompt_len, 1)
    cparams.n_ubatch = max(args.prompt_len, 1)
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("error: [llama_cpp_decode] llama.cpp could not create a context")
    mem = lc.llama_get_memory(ctx)

    prompt = [mix64(777 + i) % vocab for i in range(args.prompt_len)]
    prompt_arr = (lc.llama_token * len(prompt))(*prompt)
    one = (lc.llama_token * 1)()

    def decode(tokens, n: int) -> float:
        t = time.perf_counter()
        rc = lc.llama_decode(ctx, lc.llama_batch_get_one(tokens, n))
        lc.llama_synchronize(ctx)
        if rc != 0:
            sys.exit(f"error: [llama_cpp_decode] llama_decode returned {rc}")
        return time.perf_counter() - t

    def argmax_last() -> int:
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(vocab,))
        return int(np.argmax(logits))

    lc.llama_memory_clear(mem, True)
    t = decode(prompt_arr, len(prompt))
    print(f"warm-up prefill: {t:.2f} s")
    prefill, dec = [], []
    first = -1
    for r in range(args.repeats):
        lc.llama_memory_clear(mem, True)
        tp = decode(prompt_arr, len(prompt))
        prefill.append(args.prompt_len / tp)
        tok = argmax_last()
        if r == 0:
            first = tok
        for _ in range(args.warmup_tokens):
            one[0] = tok
            decode(one, 1)
            tok = argmax_last()
        td = 0.0
        for _ in range(args.decode_tokens):
            one[0] = tok
            td += decode(one, 1)
            tok = argmax_last()
        dec.append(args.decode_tokens / td)
        print(f"run {r + 1}: prefill {args.prompt_len} tokens {prefill[-1]:.2f} tok/s | "
              f"decode {args.decode_tokens} tokens {dec[-1]:.3f} tok/s", flush=True)

    print(f"\nfirst greedy token after the prompt: {first}")
    print(f"| llama.cpp (median of {args.repeats}, {args.threads} threads) | value    |")
    print("|------------------------------------------|----------|")
    print(f"| prefill tok/s (batch 1, {args.prompt_len:4d} tokens)      | {statistics.median(prefill):8.2f} |")
    print(f"| decode tok/s (batch 1, {args.decode_tokens:4d} tokens)       | {statistics.median(dec):8.3f} |")
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
