#!/usr/bin/env python3
"""Builds the tokenizer.json fixtures of the byte-level BPE tests (tests/data/bpe_*_test.cpp).

Run with the Hugging Face venv (tokenizers; transformers when present):
    /work/venv-hf/bin/python tools/make_tokenizer_fixtures.py

Writes under tests/fixtures/tokenizers/:
  llama3/   tokenizer.json (Llama 3 pre-tokenizer regex + ByteLevel(use_regex=False),
            ignore_merges, <|begin_of_text|>/<|eot_id|>/... special tokens), tokenizer_config.json,
            cases.json (ids and decodes of the sample texts)
  qwen2/    the same with Qwen2's regex, the NFC normalizer and <|im_start|>/<|im_end|>/<|endoftext|>
  edge/     plain ByteLevel(use_regex=True, add_prefix_space=True) (the GPT-2 regex), merges in
            the legacy "a b" string form, added tokens with lstrip/rstrip/single_word/normalized
            flags, a non-special added token that is also a vocab entry; no tokenizer_config.json
  pretokenize.json  the three regexes' splits of seeded random strings (Oniguruma, through
            tokenizers' Split pre-tokenizer) and NFC of sample strings, to check PCRE2/utf8proc
            against them

Each tokenizer is trained by tokenizers' BpeTrainer on tests/fixtures/data/prose.txt. Expected
ids come from tokenizers (encode with add_special_tokens=False); when transformers is installed,
PreTrainedTokenizerFast loads every tokenizer.json and must give the same ids and special ids.
"""
import json
import os
import random
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import AddedToken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSE = os.path.join(ROOT, "tests", "fixtures", "data", "prose.txt")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

# The pre-tokenizer patterns exactly as the published tokenizer.json files carry them.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                   "<|python_tag|>"]

SAMPLES = [
    "Hello, world! This is a test.",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\nnewlines\n\n  \n",
    "\n\n  \n",
    "I'll've, you're, they'd, it's, we'VE, SHE'LL, O'Neil's",
    "1234567 and 3.14159, 2024-06-01, 1,000,000 and 12345678901",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u5b57\u7b26\u3002",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 and jamo \u1112\u1161\u11ab\u1100\u1173\u11af",
    "\U0001f44b\U0001f3fd hi \U0001f1eb\U0001f1f7 \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<tool_call>x</tool_call>",
    "def f(x):\n    return x ** 2  # comment\n",
    "    indented code\n\t\tdouble tab",
    "Mixed\r\nline\rendings\r\n",
    "a\u00a0b\u3000c\u2028d\u0085e\u000bf\u000cg",
    "ALL CAPS WORDS AND MiXeD cAsE",
    "punctuation!!! ??? ... --- *** ((())) \"quoted\" 'single'",
    "superscript\u00b2 roman \u216b fullwidth \uff11\uff12\uff13 arabic \u0663\u0664\u0665",
    "a" * 40,
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u043a\u0430\u0438 \u0440\u0443\u0441\u0441\u043a\u0438\u0439",
    "Zero\u200bwidth\u200djoiner and \ufeffBOM",
    "<mask> masked <mask>text [RSTRIP]   after hello world wordtok xwordtok wordtok.",
    "special<|endoftext|>in<|endoftext|>middle",
    "URL: https://example.com/path?query=1&x=y#frag",
    "'s 'S \u017f '\u017f test",
    "\x00 nul and control \x07 chars",
    "\u03a9\u2248\u00e7\u221a\u222b math \u2211\u220f arrows \u2192\u2190",
    "<|im_start| partial <|eot_id <|",
    "<|eot_id|><|eot_id|><|im_end|><|im_end|>",
    "the other theme: cafe\u0301 and caf\u00e9",
]


def train(pre_tokenizer, normalizer, ignore_merges, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train([PROSE], trainer)
    return tok


def build_llama3():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok = train(pre, None, True, 1000)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "pad_token": "<|finetune_right_pad_id|>"}
    return tok, config


def build_qwen2():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok = train(pre, normalizers.NFC(), False, 1000)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in ["<tool_call>", "</tool_call>"]])
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return tok, config


def build_edge():
    pre = pre_tokenizers.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok = train(pre, normalizers.NFC(), False, 600)
    tok.add_special_tokens([
        AddedToken("<|endoftext|>", special=True, normalized=False),
        AddedToken("<mask>", special=True, lstrip=True, normalized=False),
        AddedToken("[RSTRIP]", special=True, rstrip=True, normalized=False)])
    tok.add_tokens([
        AddedToken("wordtok", special=False, single_word=True, normalized=False),
        AddedToken("hello world", special=False, normalized=True),
        AddedToken("cafe\u0301", special=False, normalized=True),  # matched as NFC "café"
        AddedToken("the", special=False, normalized=True),       # not a vocab entry: next id
        AddedToken("is", special=False, normalized=True)])       # a vocab entry: keeps its id
    assert tok.token_to_id("is") == tok.get_vocab(with_added_tokens=False)["is"]
    return tok, None


def legacy_merges(path):
    """Rewrites model.merges from [a, b] pairs to the older "a b" strings (the form many
    published tokenizer.json files still carry; byte-level tokens never hold a space)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    merges = data["model"]["merges"]
    assert all(" " not in a and " " not in b for a, b in merges)
    data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)


def write_json(path, obj):
    """ASCII JSON, one top-level key and one list element per line (small, diffable)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = []
    for key, value in obj.items():
        if isinstance(value, list):
            items = ",\n  ".join(json.dumps(v, ensure_ascii=True) for v in value)
            lines.append(f"{json.dumps(key)}: [\n  {items}\n]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=True)}")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    json.loads(open(tmp, encoding="utf-8").read())  # still valid JSON
    os.replace(tmp, path)


def cases_for(tok):
    out = []
    with open(PROSE, encoding="utf-8") as f:
        prose = f.read()  # the whole training text, as one more case
    for text in SAMPLES + [prose]:
        enc = tok.encode(text, add_special_tokens=False)
        ids = enc.ids
        out.append({"text": text, "ids": ids,
                    "tokens": enc.tokens,
                    "decode": tok.decode(ids, skip_special_tokens=False),
                    "decode_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return out


def check_with_transformers(name, directory, cases, config):
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        print(f"  {name}: transformers not installed, ids checked with tokenizers only")
        return None
    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(directory, "tokenizer.json"),
                                   **{k: v for k, v in (config or {}).items() if v is not None})
    for c in cases:
        ids = fast.encode(c["text"], add_special_tokens=False)
        if ids != c["ids"]:
            sys.exit(f"{name}: transformers and tokenizers disagree on {c['text']!r}: {ids} vs {c['ids']}")
        dec = fast.decode(c["ids"], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if dec != c["decode"]:
            sys.exit(f"{name}: transformers decodes {c['text']!r} as {dec!r}, tokenizers {c['decode']!r}")
    specials = {}
    for key in ("bos", "eos", "pad"):
        specials[key + "_id"] = getattr(fast, key + "_token_id")
    print(f"  {name}: transformers {type(fast).__name__} agrees on {len(cases)} texts; {specials}")
    return specials


def build_fixture(name, builder, legacy=False):
    tok, config = builder()
    directory = os.path.join(OUT, name)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tokenizer.json")
    tok.save(path, pretty=True)
    if legacy:
        legacy_merges(path)
    tok = Tokenizer.from_file(path)  # expectations from the file as written
    if config is not None:
        write_json(os.path.join(directory, "tokenizer_config.json"), config)
    cases = cases_for(tok)
    specials = check_with_transformers(name, directory, cases, config)
    vocab = tok.get_vocab(with_added_tokens=True)
    expected = {
        "generator": "tools/make_tokenizer_fixtures.py",
        "vocab_size": max(vocab.values()) + 1,
        "model_vocab_entries": tok.get_vocab_size(with_added_tokens=False),
        "special_ids": specials,
        "cases": cases,
    }
    write_json(os.path.join(directory, "cases.json"), expected)
    for f in sorted(os.listdir(directory)):
        p = os.path.join(directory, f)
        print(f"  wrote {os.path.relpath(p, ROOT)} ({os.path.getsize(p)} bytes)")


# ---- pre-tokenizer and NFC references

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    " \t\n\r\u000b\u000c\u0085\u00a0\u1680\u2000\u2007\u200a\u2028\u2029\u202f\u205f\u3000\u180e\u200b\ufeff",
    "\u00e9\u00e8\u00ea\u00eb\u00f1\u00fc\u00c5\u00df\u017f\u0131\u0130",
    "\u0301\u0308\u0327\u030a\u0303",  # combining marks
    "\u65e5\u672c\u8a9e\u4e2d\u6587\u3042\u30a2\ud55c\uad6d",
    "\U0001f600\U0001f44b\U0001f3fd\u2764\ufe0f\u200d\U0001f468",
    "\u0661\u0662\uff11\u00b2\u00bd\u216b\u2460\u0966",  # other digits / numbers
    "\u0627\u0644\u0639\u0631\u0628\u0928\u092e\u0938\u094d\u0924\u0947",
    "\u03b1\u03b2\u03b3\u0416\u0436\u0401",
    "'",
    "sStTlLdDmMrReEvV",
    "\u00ad\u034f\u061c\u200e\u2060\U000e0001",  # format / invisible
    "\U00031350\U0001e030\U00011f00",  # Unicode 15 additions (CJK Ext H, Cyrillic ext D, Kawi)
]
# Letters Oniguruma (Unicode 15) knows and PCRE2 10.42 (Unicode 14) does not: the
# cases holding them are flagged so the test can skip them on an older PCRE2.
UNICODE15 = set("\U00031350\U0001e030\U00011f00")


def random_texts(rng, n):
    out = []
    for _ in range(n):
        length = rng.randint(1, 24)
        pools = rng.sample(POOLS, rng.randint(1, 4))
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
    return out


def build_pretokenize():
    rng = random.Random(1234)
    texts = random_texts(rng, 160) + [s for s in SAMPLES if s]
    patterns = {"llama3": LLAMA3_PATTERN, "qwen2": QWEN2_PATTERN, "gpt2": GPT2_PATTERN}
    splitters = {k: pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False)
                 for k, p in patterns.items()}
    cases = []
    for text in texts:
        pieces = {k: [p for p, _ in s.pre_tokenize_str(text)] for k, s in splitters.items()}
        cases.append({"text": text, "pieces": pieces, "unicode15": any(c in UNICODE15 for c in text)})
    nfc = normalizers.NFC()
    nfc_cases = [{"text": t, "nfc": nfc.normalize_str(t)} for t in texts]
    write_json(os.path.join(OUT, "pretokenize.json"),
               {"generator": "tools/make_tokenizer_fixtures.py", "patterns": patterns,
                "cases": cases, "nfc": nfc_cases})
    p = os.path.join(OUT, "pretokenize.json")
    print(f"  wrote {os.path.relpath(p, ROOT)} ({os.path.getsize(p)} bytes, {len(cases)} texts)")


def main():
    import tokenizers
    print(f"tokenizers {tokenizers.__version__}: fixtures under {os.path.relpath(OUT, ROOT)}/")
    build_fixture("llama3", build_llama3)
    build_fixture("qwen2", build_qwen2)
    build_fixture("edge", build_edge, legacy=True)
    build_pretokenize()


if __name__ == "__main__":
    main()
