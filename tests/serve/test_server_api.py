#!/usr/bin/env python3
"""End-to-end tests of `switchyard serve` over loopback HTTP, with the standard library only.

  python3 test_server_api.py --cli build/tools/cli/switchyard

Covers: routes; greedy outputs equal `switchyard generate` (alone and 32 concurrent requests; a token may
differ only where the server's own top-2 logprob gap is below 1e-3, i.e. a near tie that float reordering
from batching can flip); streaming; stop strings; prefix caching; bad input of every kind; the API key; a
full queue; 200 concurrent streaming clients with disconnects (no cross-talk, memory back to baseline);
graceful SIGTERM.
"""
import argparse
import concurrent.futures as futures
import http.client
import json
import random
import subprocess
import sys
import time
import traceback

from serve_harness import Server, metric, request, stream_events

TIE_GAP = 1e-3
PROMPTS = ["ROMEO:", "def main(", "12 + 7 =", "JULIET:\nO Romeo", "import os\n", "First Citizen:\nWe are",
           "class Stack:\n", "345 - 12 =", "KING HENRY:", "for i in range(", "HAMLET:\nTo be", "99 * 3 ="]


def generate_ids(cli, prompt=None, chat=None, max_tokens=16):
    args = [cli, "generate", "--max-new-tokens", str(max_tokens), "--format", "json"]
    args += ["--prompt", prompt] if prompt is not None else ["--chat", chat]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["ids"]


def top_gap(top):
    """top-1 minus top-2 logprob of one step (completions: dict text->lp; chat: list of objects)."""
    vals = sorted(top.values() if isinstance(top, dict) else [t["logprob"] for t in top], reverse=True)
    return vals[0] - vals[1] if len(vals) > 1 else float("inf")


def check_ids(got, gaps, want, what):
    """got must equal want, except from a step where the server's top-2 gap shows a near tie."""
    for i, w in enumerate(want):
        if i >= len(got) or got[i] != w:
            assert i < len(gaps) and gaps[i] < TIE_GAP, f"{what}: diverged at step {i}: {got} vs {want}"
            return
    assert len(got) == len(want), f"{what}: {got} vs {want}"


def completion(url, prompt, max_tokens, **extra):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logprobs": 2, "return_token_ids": True}
    body.update(extra)
    status, j = request(url, "/v1/completions", body)
    assert status == 200, (status, j)
    choice = j["choices"][0]
    gaps = [top_gap(t) for t in choice["logprobs"]["top_logprobs"]]
    return choice["token_ids"], gaps, j


# --------------------------------------------------------------------------------------------------------
def test_routes(s, cli):
    status, j = request(s.url, "/health")
    assert status == 200 and j["status"] == "ok", j
    status, j = request(s.url, "/v1/models")
    assert status == 200 and j["object"] == "list" and j["data"][0]["id"] == "switchyard-builtin", j
    status, page = request(s.url, "/")
    assert status == 200 and "Switchyard chat" in page and "/v1/chat/completions" in page
    status, text = request(s.url, "/metrics")
    assert status == 200 and "switchyard_kv_blocks_total" in text and "switchyard_expert_tokens_total" in text


def test_greedy_equals_generate(s, cli):
    refs = {p: generate_ids(cli, prompt=p, max_tokens=20) for p in PROMPTS}
    for p in PROMPTS:  # alone
        ids, gaps, _ = completion(s.url, p, 20)
        check_ids(ids, gaps, refs[p], f"alone {p!r}")
    # 32 different requests at once: 12 prompts x lengths 8..20 (different lengths = different batches).
    jobs = [(PROMPTS[i % len(PROMPTS)], 8 + i % 13) for i in range(32)]
    jobs = list(dict.fromkeys(jobs))
    assert len(jobs) == 32
    with futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda job: completion(s.url, job[0], job[1]), jobs))
    for (p, n), (ids, gaps, _) in zip(jobs, results):
        want = refs[p][:n]
        check_ids(ids, gaps, want, f"concurrent {p!r} x{n}")
    # Chat: the template is applied the same way as `generate --chat`.
    want = generate_ids(cli, chat="What is 2 + 3?", max_tokens=12)
    status, j = request(s.url, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 12, "temperature": 0,
        "logprobs": True, "top_logprobs": 2, "return_token_ids": True})
    assert status == 200, j
    gaps = [top_gap(t["top_logprobs"]) for t in j["choices"][0]["logprobs"]["content"]]
    check_ids(j["choices"][0]["token_ids"], gaps, want, "chat")


def test_streaming(s, cli):
    body = {"messages": [{"role": "user", "content": "Tell me about Rome."}], "max_tokens": 24, "temperature": 0}
    status, whole = request(s.url, "/v1/chat/completions", body)
    assert status == 200, whole
    events = stream_events(s.url, "/v1/chat/completions", {**body, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]", events[-3:]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e.get("choices"))
    assert text == whole["choices"][0]["message"]["content"], (text, whole)
    finals = [e for e in events[:-1] if e.get("choices") and e["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert events[-2]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"], events[-2]
    # Completions stream.
    events = stream_events(s.url, "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 10, "temperature": 0,
                                                     "stream": True})
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    status, j = request(s.url, "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 10, "temperature": 0})
    assert text == j["choices"][0]["text"], (text, j)


def test_stop_strings_and_sampling(s, cli):
    status, j = request(s.url, "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 24, "temperature": 0})
    full = j["choices"][0]["text"]
    cut = full[4:7] if len(full) > 8 else full[:2]
    status, j = request(s.url, "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 24, "temperature": 0,
                                                  "stop": [cut]})
    assert status == 200 and j["choices"][0]["finish_reason"] == "stop", j
    assert j["choices"][0]["text"] == full[:full.index(cut)], (j, full, cut)
    events = stream_events(s.url, "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 24, "temperature": 0,
                                                     "stop": cut, "stream": True})
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == full[:full.index(cut)]
    # Seeded sampling is reproducible.
    body = {"prompt": "JULIET:", "max_tokens": 16, "temperature": 0.9, "top_p": 0.9, "top_k": 40, "seed": 7}
    a = request(s.url, "/v1/completions", body)[1]["choices"][0]["text"]
    b = request(s.url, "/v1/completions", body)[1]["choices"][0]["text"]
    assert a == b, (a, b)


def test_prefix_cache(s, cli):
    before = request(s.url, "/metrics")[1]
    prefix = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 30
    status, a = request(s.url, "/v1/completions", {"prompt": prefix + "All:", "max_tokens": 2, "temperature": 0})
    status, b = request(s.url, "/v1/completions", {"prompt": prefix + "Second Citizen:", "max_tokens": 2,
                                                   "temperature": 0})
    assert status == 200, b
    cached = b["usage"]["prompt_tokens_details"]["cached_tokens"]
    shared = a["usage"]["prompt_tokens"] - 4
    assert cached >= shared - 16 and cached > 0, (cached, shared)
    after = request(s.url, "/metrics")[1]
    assert metric(after, "switchyard_prefix_cache_hit_tokens_total") >= \
        metric(before, "switchyard_prefix_cache_hit_tokens_total") + cached
    assert metric(after, "switchyard_prefix_cache_hit_rate") > 0


def test_bad_input(s, cli):
    def expect(status_want, path, body=None, raw=None, param=None, method=None):
        status, j = request(s.url, path, body, raw=raw, method=method)
        assert status == status_want, (path, body, raw and raw[:40], status, j)
        assert isinstance(j, dict) and "message" in j["error"] and "type" in j["error"], j
        if param:
            assert j["error"]["param"] == param, j
    expect(400, "/v1/completions", raw=b'{"prompt": "x", ')
    expect(400, "/v1/completions", raw=b'[1, 2]')
    expect(400, "/v1/completions", raw=b'{"prompt": "\xff\xfe", "max_tokens": 2}')
    expect(400, "/v1/completions", {"prompt": "x", "max_tokens": "ten"}, param="max_tokens")
    expect(400, "/v1/completions", {"prompt": "x", "max_tokens": 0}, param="max_tokens")
    expect(400, "/v1/completions", {"prompt": "x", "temperature": "hot"}, param="temperature")
    expect(400, "/v1/completions", {"prompt": "x", "temperature": 3}, param="temperature")
    expect(400, "/v1/completions", {"prompt": "x", "top_p": 0}, param="top_p")
    expect(400, "/v1/completions", {"prompt": "x", "stop": 5}, param="stop")
    expect(400, "/v1/completions", {"prompt": "x", "n": 2}, param="n")
    expect(400, "/v1/completions", {"prompt": "x", "stream": "yes"}, param="stream")
    expect(400, "/v1/completions", {"prompt": ""}, param="prompt")
    expect(400, "/v1/completions", {"prompt": 12}, param="prompt")
    expect(400, "/v1/completions", {"max_tokens": 3}, param="prompt")
    expect(400, "/v1/completions", {"prompt": [1, 2, 999999]})
    expect(400, "/v1/completions", {"prompt": "x", "max_tokens": 10 ** 9}, param="max_tokens")
    expect(400, "/v1/completions", {"prompt": "x", "logprobs": 50}, param="logprobs")
    expect(400, "/v1/chat/completions", {"messages": "hi"}, param="messages")
    expect(400, "/v1/chat/completions", {"messages": []}, param="messages")
    expect(400, "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, param="messages[0].role")
    expect(400, "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, param="messages[0].content")
    expect(404, "/v1/completions", {"prompt": "x", "model": "gpt-4"}, param="model")
    expect(413, "/v1/completions", raw=b'{"prompt": "' + b"a" * (2 << 20) + b'"}')
    expect(404, "/v1/nothing", {"prompt": "x"})
    expect(404, "/v1/completions", method="GET")
    # Unknown fields are ignored, as OpenAI clients send many.
    status, j = request(s.url, "/v1/completions", {"prompt": "x", "max_tokens": 2, "frobnicate": {"a": 1},
                                                  "user": "u1", "presence_penalty": 0})
    assert status == 200, j
    # A garbage request line and a body cut short never hurt the server.
    for raw in [b"NONSENSE\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pro"]:
        c = http.client.HTTPConnection(s.host, s.port, timeout=5)
        c.connect()
        c.sock.sendall(raw)
        c.sock.shutdown(1)
        try:
            c.sock.recv(1024)
        except OSError:
            pass
        c.close()
    assert request(s.url, "/health")[0] == 200


def disconnecting_client(host, port, prompt):
    """Starts a stream, reads the first bytes, then drops the connection."""
    c = http.client.HTTPConnection(host, port, timeout=60)
    c.request("POST", "/v1/completions", json.dumps({"prompt": prompt, "max_tokens": 200, "stream": True}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read1(64)
    c.sock.close()
    c.close()
    return "dropped"


def streaming_client(url, prompt, max_tokens):
    events = stream_events(url, "/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                                   "logprobs": 2, "return_token_ids": True, "stream": True},
                           timeout=300)
    assert events[-1] == "[DONE]"
    ids, gaps = [], []
    for e in events[:-1]:
        c = e["choices"][0]
        ids += c.get("token_ids", [])
        if c.get("logprobs"):
            gaps += [top_gap(t) for t in c["logprobs"]["top_logprobs"]]
    finish = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"][0]["finish_reason"]]
    assert finish and finish[-1] in ("stop", "length"), events[-3:]
    return ids, gaps


def wait_idle(s, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = request(s.url, "/metrics")[1]
        if (metric(text, "switchyard_requests_running") == 0 and metric(text, "switchyard_requests_waiting") == 0
                and metric(text, "switchyard_kv_blocks_used") == 0):
            return text
        time.sleep(0.2)
    raise AssertionError("server did not become idle:\n" + text)


def test_load_and_faults(s, cli):
    rng = random.Random(5)
    prompts = [f"Client {i}: {PROMPTS[i % len(PROMPTS)]}" for i in range(40)]
    longest = 32
    refs = {p: completion(s.url, p, longest) for p in prompts}  # each prompt alone
    wait_idle(s)
    baseline = s.rss_kib()
    jobs = []
    for i in range(200):
        p = prompts[i % len(prompts)]
        jobs.append(("drop", p, 0) if i % 7 == 3 else ("stream", p, rng.randint(1, longest)))
    t0 = time.time()
    with futures.ThreadPoolExecutor(200) as pool:
        tasks = [pool.submit(disconnecting_client, s.host, s.port, p) if kind == "drop"
                 else pool.submit(streaming_client, s.url, p, n) for kind, p, n in jobs]
        results = [t.result() for t in tasks]
    elapsed = time.time() - t0
    for (kind, p, n), res in zip(jobs, results):
        if kind == "stream":
            ids, gaps = res
            want_ids = refs[p][0][:n]
            check_ids(ids, gaps, want_ids, f"load {p!r} x{n}")  # no request gets another's tokens
    text = wait_idle(s)
    grown = s.rss_kib() - baseline
    print(f"  200 clients ({sum(1 for j in jobs if j[0] == 'drop')} dropping) in {elapsed:.1f} s; "
          f"RSS {baseline} KiB -> +{grown} KiB")
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB after the load"
    assert request(s.url, "/health")[0] == 200


def test_api_key_and_queue(cli):
    s = Server(cli, "--api-key", "s3cret", "--max-seqs", "1", "--max-queue", "2", "--max-batch-tokens", "16")
    try:
        body = {"prompt": "ROMEO:", "max_tokens": 2}
        status, j = request(s.url, "/v1/completions", body)
        assert status == 401 and j["error"]["code"] == "invalid_api_key", j
        status, j = request(s.url, "/v1/completions", body, headers={"Authorization": "Bearer s3cre"})
        assert status == 401, j
        status, j = request(s.url, "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert status == 200, j
        assert request(s.url, "/health")[0] == 200
        auth = {"Authorization": "Bearer s3cret"}
        long_body = {"prompt": "ROMEO:", "max_tokens": 300, "temperature": 0}
        with futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: request(s.url, "/v1/completions", long_body, headers=auth), range(12)))
        codes = sorted(r[0] for r in results)
        assert codes.count(503) >= 1 and codes.count(200) >= 1 and set(codes) <= {200, 503}, codes
        overloaded = [r[1] for r in results if r[0] == 503][0]
        assert overloaded["error"]["code"] == "overloaded", overloaded
        assert request(s.url, "/health")[0] == 200
    finally:
        code = s.stop()
    assert code == 0, s.output()


def test_graceful_sigterm(cli):
    s = Server(cli)
    with futures.ThreadPoolExecutor(1) as pool:
        task = pool.submit(stream_events, s.url, "/v1/completions",
                           {"prompt": "ROMEO:", "max_tokens": 200, "temperature": 0, "stream": True})
        time.sleep(0.5)
        code = s.stop()
        events = task.result()
    assert code == 0, s.output()
    assert "stopped" in s.output(), s.output()
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] in ("length", "stop"), events[-2:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    shared = [test_routes, test_greedy_equals_generate, test_streaming, test_stop_strings_and_sampling,
              test_prefix_cache, test_bad_input, test_load_and_faults]
    alone = [test_api_key_and_queue, test_graceful_sigterm]
    failed = 0
    s = Server(args.cli, "--max-seqs", "32", "--max-queue", "512")
    try:
        for t in shared:
            if args.only and args.only not in t.__name__:
                continue
            t0 = time.time()
            try:
                t(s, args.cli)
                print(f"ok   {t.__name__} ({time.time() - t0:.1f} s)")
            except Exception:
                failed += 1
                print(f"FAIL {t.__name__}\n{traceback.format_exc()}")
    finally:
        code = s.stop()
        if code != 0:
            failed += 1
            print(f"FAIL server exit code {code}\n{s.output()}")
    for t in alone:
        if args.only and args.only not in t.__name__:
            continue
        t0 = time.time()
        try:
            t(args.cli)
            print(f"ok   {t.__name__} ({time.time() - t0:.1f} s)")
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}\n{traceback.format_exc()}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
