#!/usr/bin/env python3
"""PreMoe quality study on the built-in three-domain model (issue 8 acceptance; docs/premoe.md).

Reproducible end to end, python3 + numpy only; every model operation goes through the switchyard binary:

  1. Split each domain's validation file (documents end with id 0) into a calibration half (first half of its
     documents) and an evaluation half (second half), written as .npy under --work.
  2. `prune profile --top-k K` (default 1, as PreMoe) each domain (task name = domain) from its calibration
     half into one store. The calibration half is given as a 2-D .npy of non-overlapping --seq-len windows cut
     inside each document (each window starts from an empty KV cache, as `eval` does at a document start).
  3. For M in --keep: `prune build` each domain's own pattern, evaluate it on every domain's evaluation half (the
     off-diagonal is cross-domain pruning); random patterns of the same size over --seeds seeds. `prune build`
     only takes stored tasks, so random checkpoints are written here by slicing the safetensors exactly as
     `prune build` does (router rows, experts.E.* renumbered); that writer is first checked against `prune build`
     for every real (domain, M): the model.safetensors files must be byte-identical and config.json equal.
  4. Retrieval: --prompts windows of --prompt-len tokens from each evaluation half, `prune match` each against
     the store, once per --key-layers choice (first: PreMoe's first-MoE-layer key; all: every MoE layer's
     scores concatenated); accuracy per domain and wall time per query. The same prompts against a copy of the store with
     97 synthetic tasks added through `prune profile` (random ids), for the 100-task retrieval time. Also the
     3-task accuracy at other prompt lengths (--extra-prompt-lens).

Usage:
  python3 tools/premoe_study.py --switchyard build/tools/cli/switchyard --model /tmp/builtin-final \\
      --data-dir data/builtin --work /tmp/premoe-study --max-batches 12 --seeds 5

Prints markdown tables; writes everything (losses, matches, timings) to WORK/results.json.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import time

import numpy as np

DOMAINS = ["prose", "code", "arithmetic"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Runner:
    def __init__(self, binary, nice):
        self.binary = os.path.abspath(binary)
        self.prefix = ["nice", "-n", str(nice)] if nice else []

    def __call__(self, *args):
        cmd = self.prefix + [self.binary] + [str(a) for a in args]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
        return p.stdout, dt


# ---------------------------------------------------------------------------------------------- data


def split_docs(ids):
    """Documents of a packed id array; each ends with (and includes) its id-0 terminator."""
    ends = np.flatnonzero(ids == 0)
    docs = np.split(ids, ends + 1)
    if docs and len(docs[-1]) == 0:
        docs = docs[:-1]
    return docs


def windows(docs, length, step):
    """Non-overlapping windows of `length` ids inside each document (terminator excluded)."""
    out = []
    for d in docs:
        body = d[:-1] if len(d) and d[-1] == 0 else d
        for s in range(0, len(body) - length + 1, step):
            out.append(body[s:s + length])
    return out


def spread(items, n):
    """n items evenly spread over the list (all of them when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------------------------- safetensors


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    meta = header.pop("__metadata__", None)
    return header, meta, base


DTYPE_SIZE = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}


def write_pruned(model_dir, kept, out_dir, task):
    """The pruned checkpoint `prune build` writes for pattern `kept` (per decoder layer, ascending expert ids), for
    Mixtral/hub layouts (model.layers.L.{block_sparse_moe,mlp}.gate.weight + experts.E.*). Same tensor order,
    header and padding as switchyard's safetensors writer: tensors by decreasing dtype size, then name; keys
    sorted; compact JSON; header padded with spaces to a multiple of 8."""
    src = os.path.join(model_dir, "model.safetensors")
    header, meta, base = read_safetensors(src)
    raw = np.memmap(src, dtype=np.uint8, mode="r")
    sliced = ("gate.weight", "gate.bias", "gate.e_score_correction_bias", "router.weight", "router.bias")
    out = {}  # name -> (dtype, shape, bytes)
    for name, info in header.items():
        a, b = info["data_offsets"]
        data = raw[base + a:base + b]
        parts = name.split(".")
        action, new = "copy", name
        if name.startswith("model.layers.") and len(parts) > 4 and parts[3] in ("block_sparse_moe", "mlp") \
                and kept[int(parts[2])] is not None:
            layer, rest = int(parts[2]), ".".join(parts[4:])
            if rest in sliced:
                action = "slice"
            elif parts[4] == "experts":
                if not parts[5].isdigit():
                    raise SystemExit(f"fused expert tensor {name}: not handled by this study script")
                e = int(parts[5])
                if e in kept[layer]:
                    new = ".".join(parts[:5] + [str(kept[layer].index(e))] + parts[6:])
                else:
                    action = "drop"
        if action == "drop":
            continue
        shape = list(info["shape"])
        if action == "slice":
            rows = data.reshape(shape[0], -1)[kept[layer]]
            shape[0] = len(kept[layer])
            data = rows.reshape(-1)
        out[new] = (info["dtype"], shape, np.ascontiguousarray(data).tobytes())
    order = sorted(out, key=lambda k: (-DTYPE_SIZE[out[k][0]], k))
    hdr, off = {}, 0
    if meta:
        hdr["__metadata__"] = meta
    for k in order:
        dt, shape, data = out[k]
        hdr[k] = {"data_offsets": [off, off + len(data)], "dtype": dt, "shape": shape}
        off += len(data)
    text = json.dumps(hdr, sort_keys=True, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for k in order:
            f.write(out[k][2])
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    keep = len(next(k for k in kept if k is not None))
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if isinstance(config.get(key), int):
            config[key] = keep
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "premoe.json"), "w") as f:
        json.dump({"format": "switchyard-premoe-pruned", "version": 1, "source": os.path.abspath(model_dir),
                   "task": task, "keep": keep, "kept_experts": kept, "written_by": "tools/premoe_study.py"}, f)
        f.write("\n")


def store_pattern(store, task, keep, num_layers):
    kept = [None] * num_layers
    for layer in task_entry(store, task)["layers"]:
        kept[layer["layer"]] = sorted(layer["ranking"][:keep])
    return kept


def task_entry(store, name):
    return next(t for t in store["tasks"] if t["name"] == name)


# ---------------------------------------------------------------------------------------------- study


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchyard", required=True, help="path to the switchyard binary")
    ap.add_argument("--model", required=True, help="trained built-in model directory (config.json + model.safetensors)")
    ap.add_argument("--data-dir", default="data/builtin", help="holds val_<domain>.npy")
    ap.add_argument("--work", default="/tmp/premoe-study", help="scratch directory (emptied first)")
    ap.add_argument("--keep", default="4,2", help="experts kept per MoE layer, comma-separated")
    ap.add_argument("--seeds", type=int, default=5, help="random patterns per M")
    ap.add_argument("--seq-len", type=int, default=128, help="eval window and calibration window length")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-batches", type=int, default=12, help="eval batches per (model, domain)")
    ap.add_argument("--calib-windows", type=int, default=0, help="cap on calibration windows per domain (0 = all)")
    ap.add_argument("--prompts", type=int, default=32, help="held-out retrieval prompts per domain")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--extra-prompt-lens", default="32,128,256",
                    help="also measure 3-task retrieval accuracy at these prompt lengths (empty = skip)")
    ap.add_argument("--top-k", type=int, default=1, help="TCESS top-k for profiling (PreMoe: 1)")
    ap.add_argument("--key-layers", default="first,all", help="retrieval keys to measure: first and/or all")
    ap.add_argument("--synthetic-tasks", type=int, default=97, help="tasks added for the large-store timing")
    ap.add_argument("--nice", type=int, default=10)
    args = ap.parse_args()

    sy = Runner(args.switchyard, args.nice)
    work = os.path.abspath(args.work)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    keeps = [int(k) for k in args.keep.split(",")]
    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    num_layers, num_experts = config["num_hidden_layers"], config["num_local_experts"]
    res = {"model": os.path.abspath(args.model), "command": " ".join([sys.executable] + sys.argv),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": platform.machine(), "args": vars(args)}
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        res["cpu"] = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    except OSError:
        res["cpu"] = "?"
    res["cores"] = os.cpu_count()
    ts_path = os.path.join(args.model, "trainer_state.json")
    if os.path.exists(ts_path):
        with open(ts_path) as f:
            res["trainer_state"] = json.load(f)
    t_start = time.perf_counter()

    # 1. split
    evals, held, split, held_extra = {}, {}, {}, {}
    extra_lens = [int(n) for n in args.extra_prompt_lens.split(",") if n.strip()]
    for d in DOMAINS:
        ids = np.load(os.path.join(args.data_dir, f"val_{d}.npy")).astype(np.int32)
        docs = split_docs(ids)
        half = len(docs) // 2
        cal, ev = docs[:half], docs[half:]
        np.save(os.path.join(work, f"cal_{d}.npy"), np.concatenate(cal))
        evals[d] = os.path.join(work, f"eval_{d}.npy")
        np.save(evals[d], np.concatenate(ev))
        cw = spread(windows(cal, args.seq_len, args.seq_len), args.calib_windows)
        np.save(os.path.join(work, f"calwin_{d}.npy"), np.stack(cw).astype(np.int32))
        held[d] = spread(windows(ev, args.prompt_len, args.prompt_len), args.prompts)
        for n in extra_lens:
            held_extra.setdefault(n, {})[d] = spread(windows(ev, n, n), args.prompts)
        split[d] = {"documents": len(docs), "cal_documents": len(cal), "eval_documents": len(ev),
                    "cal_tokens": int(sum(len(x) for x in cal)), "eval_tokens": int(sum(len(x) for x in ev)),
                    "calib_windows": len(cw), "calib_tokens": len(cw) * args.seq_len, "prompts": len(held[d])}
        log(f"[split] {d}: {split[d]}")
    res["split"] = split

    # 2. profile
    store_dir = os.path.join(work, "store")
    for d in DOMAINS:
        out, dt = sy("prune", "profile", "--model", args.model, "--task", d, "--data",
                     os.path.join(work, f"calwin_{d}.npy"), "--top-k", args.top_k, "--store", store_dir)
        log(f"[profile] {out.strip()} ({dt:.1f} s)")
    with open(os.path.join(store_dir, "premoe_store.json")) as f:
        store = json.load(f)
    res["patterns"] = {d: {str(m): store_pattern(store, d, m, num_layers) for m in keeps} for d in DOMAINS}
    res["rankings"] = {d: {l["layer"]: l["ranking"] for l in task_entry(store, d)["layers"]} for d in DOMAINS}

    def evaluate(model_dir):
        r = {}
        for d in DOMAINS:
            out, _ = sy("eval", "--model", model_dir, "--data", evals[d], "--eos-id", 0, "--seq-len", args.seq_len,
                        "--batch-size", args.batch_size, "--max-batches", args.max_batches, "--format", "json")
            r[d] = json.loads(out)
        return r

    # 3. pruned models
    res["full"] = evaluate(args.model)
    log(f"[eval] full: { {d: round(v['loss'], 4) for d, v in res['full'].items()} }")
    res["own"], res["random"], res["writer_check"] = {}, {}, []
    for m in keeps:
        res["own"][str(m)] = {}
        for d in DOMAINS:
            built = os.path.join(work, f"pruned-{d}-M{m}")
            sy("prune", "build", "--model", args.model, "--store", store_dir, "--task", d, "--keep", m,
               "--output", built)
            # Check the Python writer (used for random patterns) against prune build for this real pattern.
            mine = os.path.join(work, f"py-{d}-M{m}")
            write_pruned(args.model, res["patterns"][d][str(m)], mine, d)
            with open(os.path.join(built, "premoe.json")) as f:
                built_kept = json.load(f)["kept_experts"]
            same_bytes = open(os.path.join(built, "model.safetensors"), "rb").read() == \
                open(os.path.join(mine, "model.safetensors"), "rb").read()
            with open(os.path.join(built, "config.json")) as f1, open(os.path.join(mine, "config.json")) as f2:
                same_config = json.load(f1) == json.load(f2)
            check = {"task": d, "keep": m, "same_pattern": built_kept == res["patterns"][d][str(m)],
                     "identical_safetensors": same_bytes, "same_config": same_config}
            res["writer_check"].append(check)
            if not all(v for k, v in check.items() if k not in ("task", "keep")):
                raise SystemExit(f"the Python pruned-checkpoint writer disagrees with prune build: {check}")
            shutil.rmtree(mine)
            res["own"][str(m)][d] = evaluate(built)
            shutil.rmtree(built)
            log(f"[eval] M={m} pattern {d}: { {e: round(v['loss'], 4) for e, v in res['own'][str(m)][d].items()} }")
        res["random"][str(m)] = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 * m + seed)
            kept = [sorted(int(e) for e in rng.choice(num_experts, m, replace=False)) for _ in range(num_layers)]
            path = os.path.join(work, f"random-M{m}-s{seed}")
            write_pruned(args.model, kept, path, f"random-seed{seed}")
            r = evaluate(path)
            shutil.rmtree(path)
            res["random"][str(m)].append({"seed": seed, "kept": kept, "eval": r})
            log(f"[eval] M={m} random seed {seed} {kept}: { {e: round(v['loss'], 4) for e, v in r.items()} }")
    log(f"[writer] Python writer identical to prune build for {len(res['writer_check'])} (task, M) pairs")

    # 4. retrieval
    def retrieval(store_path, tag, key, prompts=held):
        out = {}
        for d in DOMAINS:
            hits, times, got, inproc = 0, [], [], []
            for w in prompts[d]:
                o, dt = sy("prune", "match", "--model", args.model, "--store", store_path, "--key-layers", key,
                           "--prompt-ids", ",".join(str(int(x)) for x in w))
                j = json.loads(o)
                t = j["task"]
                got.append(t)
                hits += t == d
                times.append(dt)
                inproc.append(j["retrieval_ms"])
            out[d] = {"n": len(prompts[d]), "correct": hits, "accuracy": hits / len(prompts[d]),
                      "mean_s": float(np.mean(times)), "retrieval_ms": float(np.mean(inproc)),
                      "matched": {k: got.count(k) for k in sorted(set(got))}}
            log(f"[match:{tag}, {key}-layer key] {d}: {hits}/{len(prompts[d])}, {np.mean(times) * 1e3:.1f} ms per query")
        return out

    keys = [k for k in args.key_layers.split(",") if k]
    res["retrieval"] = {k: retrieval(store_dir, "3 tasks", k) for k in keys}
    res["retrieval_by_length"] = {k: {str(n): retrieval(store_dir, f"3 tasks, {n}-token prompts", k, held_extra[n])
                                      for n in extra_lens} for k in keys}
    big = os.path.join(work, "store100")
    shutil.copytree(store_dir, big)
    rng = np.random.default_rng(7)
    vocab = config["vocab_size"]
    for i in range(args.synthetic_tasks):
        path = os.path.join(work, "synthetic.npy")
        np.save(path, rng.integers(1, vocab, size=(2, args.prompt_len), dtype=np.int32))
        sy("prune", "profile", "--model", args.model, "--task", f"synthetic-{i:03d}", "--data", path,
           "--top-k", args.top_k, "--store", big)
    with open(os.path.join(big, "premoe_store.json")) as f:
        res["store100_tasks"] = len(json.load(f)["tasks"])
    res["store_bytes"] = {"3": os.path.getsize(os.path.join(store_dir, "premoe_store.json")),
                          str(res["store100_tasks"]): os.path.getsize(os.path.join(big, "premoe_store.json"))}
    res["retrieval100"] = {k: retrieval(big, f"{res['store100_tasks']} tasks", k) for k in keys}
    res["elapsed_s"] = time.perf_counter() - t_start
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(report(res, keeps))


# ---------------------------------------------------------------------------------------------- report


def report(res, keeps):
    L = []
    L.append(f"model: {res['model']} {res.get('trainer_state', '')}")
    L.append(f"date: {res['date']}; cpu: {res['cpu']}, {res['cores']} cores; elapsed {res['elapsed_s']:.0f} s")
    L.append("")
    L.append("| domain | documents (cal / eval) | calibration tokens | eval tokens scored | retrieval prompts |")
    L.append("|---|---|---|---|---|")
    for d in DOMAINS:
        s = res["split"][d]
        L.append(f"| {d} | {s['cal_documents']} / {s['eval_documents']} | {s['calib_tokens']} | "
                 f"{res['full'][d]['tokens']} | {s['prompts']} |")
    verdicts = []
    for m in keeps:
        k = str(m)
        L.append("")
        L.append(f"Validation loss (evaluation halves), keep M = {m} of 8 experts per layer, top-2:")
        L.append("")
        L.append("| pattern source | " + " | ".join(f"eval {d}" for d in DOMAINS) + " |")
        L.append("|---|" + "---|" * len(DOMAINS))
        L.append("| full model (8 experts) | " + " | ".join(f"{res['full'][d]['loss']:.3f}" for d in DOMAINS) + " |")
        for src in DOMAINS:
            cells = []
            for d in DOMAINS:
                v = f"{res['own'][k][src][d]['loss']:.3f}"
                cells.append(f"**{v}**" if src == d else v)
            L.append(f"| {src} pattern | " + " | ".join(cells) + " |")
        rnd = {d: np.array([r["eval"][d]["loss"] for r in res["random"][k]]) for d in DOMAINS}
        n = len(res["random"][k])
        L.append(f"| random (mean ± std, {n} seeds) | " +
                 " | ".join(f"{rnd[d].mean():.3f} ± {rnd[d].std(ddof=1) if n > 1 else 0:.3f}" for d in DOMAINS) + " |")
        L.append(f"| random (best seed) | " + " | ".join(f"{rnd[d].min():.3f}" for d in DOMAINS) + " |")
        for d in DOMAINS:
            own = res["own"][k][d][d]["loss"]
            cross = min(res["own"][k][s][d]["loss"] for s in DOMAINS if s != d)
            verdicts.append(f"M={m} {d}: own {own:.3f} (+{own - res['full'][d]['loss']:.3f} vs full); best cross "
                            f"{cross:.3f}; random {rnd[d].mean():.3f} (best {rnd[d].min():.3f}); own beats cross: "
                            f"{own < cross}; beats random mean: {own < rnd[d].mean()}; beats every seed: "
                            f"{own < rnd[d].min()}")
    L.append("")
    L += verdicts
    L.append("")
    L.append("Retrieval (prune match, held-out prompts): accuracy; per query the in-process retrieval time (key")
    L.append("probe + nearest-key search, `retrieval_ms`) and the wall time of the whole `prune match` process:")
    L.append("")
    L.append("| key | domain | prompts | correct, 3-task store | matched | retrieval ms | process ms | correct, "
             f"{res['store100_tasks']}-task store | retrieval ms | process ms |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for key in res["retrieval"]:
        for d in DOMAINS:
            a, b = res["retrieval"][key][d], res["retrieval100"][key][d]
            L.append(f"| {key} | {d} | {a['n']} | {a['correct']} ({a['accuracy']:.0%}) | {a['matched']} | "
                     f"{a['retrieval_ms']:.2f} | {a['mean_s'] * 1e3:.0f} | {b['correct']} ({b['accuracy']:.0%}) | "
                     f"{b['retrieval_ms']:.2f} | {b['mean_s'] * 1e3:.0f} |")
    L.append(f"store sizes (bytes): {res['store_bytes']}")
    for key, by_len in res.get("retrieval_by_length", {}).items():
        lens = sorted(set([res["args"]["prompt_len"]] + [int(n) for n in by_len]))
        by = dict(by_len, **{str(res["args"]["prompt_len"]): res["retrieval"][key]})
        L.append("")
        L.append(f"Retrieval accuracy against the 3-task store by prompt length (tokens), {key}-layer key:")
        L.append("")
        L.append("| domain | " + " | ".join(str(n) for n in lens) + " |")
        L.append("|---|" + "---|" * len(lens))
        for d in DOMAINS:
            L.append(f"| {d} | " + " | ".join(f"{by[str(n)][d]['correct']}/{by[str(n)][d]['n']} "
                                               f"({by[str(n)][d]['accuracy']:.0%})" for n in lens) + " |")
    return "\n".join(L)


if __name__ == "__main__":
    main()
