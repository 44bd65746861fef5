#!/usr/bin/env python3
"""Peer for bench_tokenizer: the Hugging Face `tokenizers` library encoding the same ~1 KB chunks on one thread."""
import argparse
import os
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import tokenizers  # noqa: E402


def chunks_of(data):
    """Same byte-based chunking as bench_tokenizer.cc: ~1 KB, ending after a newline."""
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", min(len(data), start + 1024))
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end].decode("utf-8"))
        start = end
    return out


ap = argparse.ArgumentParser()
ap.add_argument("--tokenizer", required=True)
ap.add_argument("--file", required=True)
a = ap.parse_args()
data = open(a.file, "rb").read()
chunks = chunks_of(data)
tok = tokenizers.Tokenizer.from_file(a.tokenizer)
n = sum(len(tok.encode(c, add_special_tokens=False).ids) for c in chunks)
best = 1e30
for _ in range(3):
    t0 = time.perf_counter()
    n = sum(len(tok.encode(c, add_special_tokens=False).ids) for c in chunks)
    best = min(best, time.perf_counter() - t0)
print(f"peer        tokenizers {tokenizers.__version__} (Python, encode per chunk) {len(data) / 1e6 / best:.1f} MB/s, "
      f"{n / 1e6 / best:.2f} M tokens/s, {n} tokens, 1 thread")
