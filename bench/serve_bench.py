#!/usr/bin/env python3
"""Serving benchmark: output throughput and time to first token of `switchyard serve` under a request-rate
sweep, next to the batch-1 decode speed of `switchyard generate` measured in the same run.

  python3 bench/serve_bench.py --cli build/tools/cli/switchyard [--model DIR] [--requests 64]
      [--rates 1,2,4,8,16,inf] [--prompt-len 32:256] [--max-tokens 64]

Requests arrive as a Poisson process at each rate (inf: all at once), with random token-id prompts of the
given length range and `ignore_eos` so each produces exactly --max-tokens tokens; every request streams, so
TTFT and inter-token latency are measured at the client. The batch-1 reference is
(N2 - N1) / (t(generate N2 tokens) - t(generate N1 tokens)), which cancels model loading. Prints a table;
the ratio column is output tokens/s over batch-1 tokens/s.
"""
import argparse
import concurrent.futures as futures
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "serve"))
from serve_harness import Server, metric, request, sse_payloads  # noqa: E402


def batch1_tokens_per_s(cli, model, prompt_ids, n1, n2, extra):
    def run(n):
        args = [cli, "generate", "--prompt-ids", ",".join(map(str, prompt_ids)), "--max-new-tokens", str(n),
                "--format", "json", "--ignore-eos"] + extra
        if model:
            args += ["--model", model]
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
            best = min(best, time.perf_counter() - t0)
        return best, len(json.loads(out)["ids"])
    (t1, k1), (t2, k2) = run(n1), run(n2)
    return (k2 - k1) / (t2 - t1)


def one_request(url, prompt, max_tokens, start_at):
    delay = start_at - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "return_token_ids": True}
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    t0 = time.perf_counter()
    times = []
    with urllib.request.urlopen(req, timeout=600) as r:
        for j in sse_payloads(r):
            if j == "[DONE]":
                continue
            n = len(j["choices"][0].get("token_ids", []))
            times += [time.perf_counter()] * n
    return t0, times


def prefix_cache_ttft(url, vocab, prefix_len, trials, seed):
    """TTFT of a cold prompt vs a second prompt sharing its first prefix_len tokens (prefix cache hit)."""
    rng = random.Random(seed)
    cold, warm = [], []
    for _ in range(trials):
        prefix = [rng.randrange(3, vocab) for _ in range(prefix_len)]
        a = prefix + [rng.randrange(3, vocab) for _ in range(8)]
        b = prefix + [rng.randrange(3, vocab) for _ in range(8)]
        t0, times = one_request(url, a, 1, 0)
        cold.append(times[0] - t0)
        t0, times = one_request(url, b, 1, 0)
        warm.append(times[0] - t0)
    return statistics.median(cold), statistics.median(warm)


def sweep_point(url, rate, prompts, max_tokens, seed):
    rng = random.Random(seed)
    start = time.perf_counter() + 0.2
    arrivals, t = [], start
    for _ in prompts:
        arrivals.append(t)
        if rate != float("inf"):
            t += rng.expovariate(rate)
    with futures.ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(lambda a: one_request(url, a[0], max_tokens, a[1]), zip(prompts, arrivals)))
    first = min(r[0] for r in results)
    last = max(r[1][-1] for r in results)
    tokens = sum(len(r[1]) for r in results)
    ttft = [r[1][0] - r[0] for r in results]
    itl = [b - a for r in results for a, b in zip(r[1], r[1][1:]) if b > a]
    return {
        "rate": rate, "requests": len(prompts), "output_tokens": tokens, "seconds": last - first,
        "output_tok_s": tokens / (last - first), "ttft_mean_ms": 1e3 * statistics.mean(ttft),
        "ttft_p50_ms": 1e3 * statistics.median(ttft), "ttft_p99_ms": 1e3 * sorted(ttft)[int(0.99 * (len(ttft) - 1))],
        "itl_mean_ms": 1e3 * statistics.mean(itl) if itl else 0.0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--model", default="")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--rates", default="1,2,4,8,16,inf")
    ap.add_argument("--prompt-len", default="32:256")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--server-args", default="--max-seqs 64 --max-batch-tokens 512")
    ap.add_argument("--batch1", default="16:272", help="N1:N2 tokens of the two timed generate runs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for both the server and generate")
    ap.add_argument("--prefix-len", type=int, default=0,
                    help="also time first tokens of cold vs prefix-sharing prompts of this many tokens")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    lo, hi = map(int, args.prompt_len.split(":"))
    rng = random.Random(1)
    server_args = (["--model", args.model] if args.model else []) + args.server_args.split() + ["--device", args.device]
    s = Server(args.cli, *server_args)
    try:
        vocab = 4096
        cfg = os.path.join(args.model, "config.json") if args.model else ""
        if cfg and os.path.exists(cfg):
            vocab = json.load(open(cfg))["vocab_size"]
        prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(args.requests)]
        n1, n2 = map(int, args.batch1.split(":"))
        one = batch1_tokens_per_s(args.cli, args.model, prompts[0][:64], n1, n2, ["--device", args.device])
        sweep_point(s.url, float("inf"), prompts[:4], 8, 0)  # warm-up
        rows = []
        for rate in args.rates.split(","):
            r = sweep_point(s.url, float(rate), prompts, args.max_tokens, 7)
            r["ratio_vs_batch1"] = r["output_tok_s"] / one
            rows.append(r)
        prefix = prefix_cache_ttft(s.url, vocab, args.prefix_len, 5, 3) if args.prefix_len else None
        gauges = request(s.url, "/metrics")[1]
        steps = metric(gauges, "switchyard_engine_steps_total")
        batch_tokens = metric(gauges, "switchyard_engine_batch_tokens_total")
    except Exception:
        s.stop()
        print("server output:\n" + s.output()[-3000:], file=sys.stderr)
        raise
    finally:
        s.stop()
    print(f"batch-1 `switchyard generate` decode: {one:.1f} tok/s; prompts {lo}-{hi} tokens, "
          f"{args.max_tokens} output tokens each, {args.requests} requests per rate; "
          f"mean tokens per engine step {batch_tokens / steps:.1f}")
    print(f"{'rate req/s':>10} {'out tok/s':>10} {'x batch-1':>9} {'TTFT mean':>10} {'TTFT p50':>9} "
          f"{'TTFT p99':>9} {'ITL mean':>9}")
    for r in rows:
        print(f"{r['rate']:>10} {r['output_tok_s']:>10.1f} {r['ratio_vs_batch1']:>9.2f} {r['ttft_mean_ms']:>8.0f}ms "
              f"{r['ttft_p50_ms']:>7.0f}ms {r['ttft_p99_ms']:>7.0f}ms {r['itl_mean_ms']:>7.1f}ms")
    if prefix:
        print(f"prefix cache: TTFT of a {args.prefix_len}-token prompt, median of 5: cold {1e3 * prefix[0]:.1f} ms, "
              f"sharing all but its last 8 tokens with an earlier prompt {1e3 * prefix[1]:.1f} ms "
              f"({prefix[0] / prefix[1]:.1f}x faster); hit rate since start "
              f"{metric(gauges, 'switchyard_prefix_cache_hit_rate'):.2f}")
    if args.json:
        json.dump({"batch1_tok_s": one, "rows": rows}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
