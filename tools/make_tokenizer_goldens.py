#!/usr/bin/env python3
"""Reference generator for the tokenizer golden tests (never needed at run time).

Trains small tokenizers of each model type and pre-tokenizer family with the Hugging Face `tokenizers`
library (pip install tokenizers) on a public-domain text written for this file, saves each tokenizer.json under
tests/fixtures/tokenizers/<name>/, and records the library's ids and decoded text for a test corpus in
expected.json next to it, with the library version.

    python3 tools/make_tokenizer_goldens.py [--out tests/fixtures/tokenizers]
"""
import argparse
import json
import os

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# Text written for this file (public domain), plus a little code, for training only.
TRAIN_TEXT = """
The river ran slowly past the old mill, and the miller's daughter counted the sacks of grain as they were
loaded onto the cart. Seventeen sacks in the morning, twenty-three in the afternoon: it had been a good year.
She wrote the numbers in a small book with a green cover, the same book her grandmother had used, and the
pages were full of harvests long gone. In 1911 the flood took the bridge; in 1934 the wheel was rebuilt; in
1987 the last horse was sold. Every line told a story, if you knew how to read it.

A switchyard sorts rail cars onto tracks. Trains arrive from the north and the south, the cars are uncoupled,
and a small engine pushes each one over a hump so that gravity rolls it onto the right track. The yard master
watches from a tower and sets the switches; the work never stops, day or night, in summer heat or winter snow.
Tokens are sorted onto experts in much the same way: a router looks at each token and chooses where it goes.

It's a truth that isn't often said: we'll learn more from what we've broken than from what we'd kept whole.
Don't you think so? They're here, you're there, and I'm somewhere in between. WHY ARE YOU SHOUTING? Sorry!

Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 65536 3.14159 2.71828 -17 +23 1,000,000 12:30 2024-05-17.

Café, naïve, résumé, façade, coöperate, Ångström, Æsop, Straße, Œuvre; Ελληνικά, русский язык, español.
日本語の文章も少し入れておきます。東京は大きな都市です。中文也有一点：今天天气很好。한국어 문장입니다.
Emoji: 😀 🎉 🚂 👩‍💻 ❤️ 👍🏽

def merge_pairs(word, ranks):
    # Merge the best-ranked pair until none is left.
    while len(word) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        word = word[:i] + [word[i] + word[i + 1]] + word[i + 2:]
    return word

int main(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::printf("%d: %s\\n", i, argv[i]);
  }
  return 0;
}

{"name": "switchyard", "experts": 64, "top_k": 8, "layers": [1, 2, 3], "ok": true}
"""

TRAIN_LINES = [line for line in TRAIN_TEXT.split("\n")] * 3

CORPUS = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space and trailing space ",
    "The miller's daughter counted seventeen sacks; it's what they'd done since 1911.",
    "I'M SHOUTING, they're WHISPERING, we'll see.",
    "def f(x):\n    return x * 2  # double\n",
    "int main() {\n\tstd::printf(\"%d\\n\", 42);\n}\n",
    "{\"a\": [1, 2, 3], \"b\": null}",
    "0123456789 3.14159 1,000,000 2024-05-17 12:30 -17 +23 10000000000",
    "a  b   c    d\t\te\n\nf\r\ng   ",
    "     ",
    "\n\n\n",
    "",
    "日本語の文章。東京は大きな都市です。",
    "中文测试：今天天气很好，我们去公园吧！",
    "한국어 문장입니다",
    "Emoji: 😀🎉🚂 👩‍💻 ❤️ 👍🏽 🏳️‍🌈",
    "Café naïve résumé Ångström Straße Œuvre ﬁ ligature ①②③ ＦＵＬＬＷＩＤＴＨ",
    "combining: e\u0301 a\u0308 o\u0302\u0323 \u0915\u094d\u0937",
    "Ελληνικά και русский язык",
    "invalid-looking: \\xff \\u00 <0xFF> <0x41> <unk> </s </s> <s> <|endoftext <|im_end",
    "\ufffd replacement \u200b zero\u200dwidth \u00a0nbsp \u2028sep \u0085nel",
    "x" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Tokens are sorted onto experts in much the same way.",
    "__init__ self.value_ CamelCaseName snake_case_name kName",
    "a-b-c--d---e",
    "end.",
]


def byte_level_bpe(**kw):
    return models.BPE(**kw)


def train(tok, vocab_size, special_tokens, initial_alphabet=None, limit_alphabet=None):
    kw = {"limit_alphabet": limit_alphabet} if limit_alphabet else {}
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=special_tokens,
                                  initial_alphabet=initial_alphabet or [], show_progress=False, **kw)
    tok.train_from_iterator(TRAIN_LINES, trainer=trainer)
    return tok


QWEN2_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
O200K_REGEX = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


def make_gpt2():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return train(tok, 800, ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet())


def make_split_bytelevel(regex, specials, vocab, normalizer=None):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return train(tok, vocab, specials, pre_tokenizers.ByteLevel.alphabet())


def make_llama_bytefallback():
    # Train with a splitting Metaspace, then rewrite to Llama's layout: specials, 256 <0xXX> byte tokens, the rest.
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    train(tok, 700, ["<unk>", "<s>", "</s>"], limit_alphabet=90)
    j = json.loads(tok.to_str())
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for t in ["<unk>", "<s>", "</s>"]:
        vocab[t] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in old:
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"]["vocab"] = vocab
    j["added_tokens"] = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for t in ["<unk>", "<s>", "</s>"]]
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    j["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return Tokenizer.from_str(json.dumps(j))


def make_mistral_prepend(llama):
    # Legacy Llama/Mistral layout: Prepend + Replace normalizer, no pre-tokenizer (the whole text is one word).
    j = json.loads(llama.to_str())
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    j["pre_tokenizer"] = None
    return Tokenizer.from_str(json.dumps(j))


def make_digits_split():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+"), behavior="merged_with_next"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split("-", behavior="removed"),
        pre_tokenizers.Split(Regex(r"[.,;:!?]"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\p{Lu}"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[()\[\]{}]"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return train(tok, 700, [], pre_tokenizers.ByteLevel.alphabet())


def make_nfkc_lower():
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+"), behavior="removed", invert=True),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    train(tok, 600, ["[UNK]", "[CLS]", "[SEP]"], limit_alphabet=60)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def make_nfd_accents():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.Sequence([decoders.Replace(Regex(r"\s+"), " "), decoders.Strip(" ", 0, 1)])
    return train(tok, 500, ["<unk>"], limit_alphabet=120)


def make_added_tokens():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    train(tok, 700, ["<s>", "</s>"], pre_tokenizers.ByteLevel.alphabet())
    tok.add_special_tokens([
        AddedToken("<|im_start|>", special=True, normalized=False),
        AddedToken("<|im_end|>", special=True, normalized=False, rstrip=True),
        AddedToken("<mask>", special=True, normalized=False, lstrip=True),
        AddedToken("[BOTH]", special=True, normalized=False, lstrip=True, rstrip=True),
    ])
    tok.add_tokens([
        AddedToken("Hello World", normalized=True),
        AddedToken("cat", single_word=True, normalized=False),
        AddedToken("<tool>", normalized=False, special=False),
        AddedToken("MiXeD", normalized=True),
    ])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]),
    ])
    return tok


def strings_merges(path):
    """Rewrites merges from [["a", "b"], ...] to the older "a b" string form."""
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)


def special_cases(tok):
    out = []
    for t in sorted(tok.get_added_tokens_decoder().values(), key=lambda a: a.content):
        c = t.content
        out += [c, "x" + c + "y", "  " + c + "  next", "start " + c + c + " end", "a cat " + c + " concat cat."]
    out += ["hello world HELLO WORLD Hello World", "the cat sat; a cat, category, tomcat, cat_", "mixed MIXED MiXeD",
            "<mask>   spaced<mask>x <|im_end|>   \n after", " [BOTH]  x [BOTH]"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tokenizers"))
    args = ap.parse_args()
    llama = make_llama_bytefallback()
    built = {
        "gpt2_bytelevel": make_gpt2(),
        "qwen2_split": make_split_bytelevel(QWEN2_REGEX, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 900,
                                            normalizers.NFC()),
        "llama3_split": make_split_bytelevel(LLAMA3_REGEX, ["<|begin_of_text|>", "<|end_of_text|>"], 900),
        "o200k_split": make_split_bytelevel(O200K_REGEX, ["<|start|>", "<|end|>", "<|message|>"], 900),
        "llama_bytefallback": llama,
        "mistral_prepend": make_mistral_prepend(llama),
        "digits_split": make_digits_split(),
        "nfkc_lower": make_nfkc_lower(),
        "nfd_whitespace": make_nfd_accents(),
        "added_tokens": make_added_tokens(),
    }
    # Llama 3 style: ignore_merges and a BOS template.
    j = json.loads(built["llama3_split"].to_str())
    j["model"]["ignore_merges"] = True
    j["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [0],
                                                                    "tokens": ["<|begin_of_text|>"]}}}
    built["llama3_split"] = Tokenizer.from_str(json.dumps(j))

    for name, tok in built.items():
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        tok.save(path, pretty=False)
        if name in ("gpt2_bytelevel", "llama_bytefallback"):
            strings_merges(path)
        tok = Tokenizer.from_file(path)
        cases = []
        for text in CORPUS + special_cases(tok):
            enc = tok.encode(text, add_special_tokens=True)
            plain = tok.encode(text, add_special_tokens=False)
            cases.append({
                "text": text,
                "ids": enc.ids,
                "ids_no_special": plain.ids,
                "decoded": tok.decode(enc.ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(enc.ids, skip_special_tokens=True),
            })
        with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizers_version": tokenizers.__version__, "generator": "tools/make_tokenizer_goldens.py",
                       "cases": cases}, f, ensure_ascii=False)
        print(f"{name}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


if __name__ == "__main__":
    main()
