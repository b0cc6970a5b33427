#!/usr/bin/env python3
"""End-to-end fixture for the CLI test of `efficientllm finetune`.

Writes
  tests/fixtures/e2e/tiny_chat/       a complete Hugging Face checkpoint: a tiny random
                                      LlamaForCausalLM (transformers, seeded, float32) saved with
                                      save_pretrained(safe_serialization=True), plus the
                                      tokenizer.json / tokenizer_config.json of
                                      tests/fixtures/tokenizers/llama3 next to the weights
  tests/fixtures/e2e/tiny_chat_sft.jsonl  24 short alpaca records (plain ASCII)

Model: hidden 32, 2 layers, 4 heads (head dim 8), 2 KV heads, intermediate 64, tied embeddings,
max_position_embeddings 256, vocab_size = the tokenizer's full size (1000 BPE entries + 10 added
special tokens = 1010), BOS <|begin_of_text|>, EOS <|eot_id|>, PAD <|finetune_right_pad_id|> as in
the tokenizer's tokenizer_config.json. Weights are transformers' own initialisation under
torch.manual_seed(SEED), so the run is deterministic; the model knows nothing, which is what a
fine-tuning smoke test wants (its loss must fall).

The script reloads what it wrote with transformers (model and tokenizer) and checks the vocab,
the special ids and a forward pass, then prints every file with its size.

Run with the Hugging Face venv:
  /work/venv-hf/bin/python tools/make_e2e_fixture.py [--out tests/fixtures/e2e]
"""

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,  # noqa: E402
                          PreTrainedTokenizerFast)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "e2e")
TOKENIZER_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "llama3")
SEED = 1234

# Short, plain-ASCII instruction data: some records with an input, answers of one sentence or a
# few words, so every sample fits a small cutoff_len.
RECORDS = [
    ("Name a primary colour.", "", "Red is a primary colour."),
    ("What is two plus two?", "", "Two plus two is four."),
    ("Give the opposite of the word.", "hot", "The opposite of hot is cold."),
    ("Say hello.", "", "Hello! How can I help you today?"),
    ("Translate to French.", "Good morning", "Bonjour."),
    ("Name a fruit that is yellow.", "", "A banana is yellow."),
    ("What day comes after Monday?", "", "Tuesday comes after Monday."),
    ("Count from one to five.", "", "One, two, three, four, five."),
    ("Give the plural of the word.", "mouse", "The plural of mouse is mice."),
    ("What is the capital of France?", "", "The capital of France is Paris."),
    ("Name an animal that can fly.", "", "A bird can fly."),
    ("Summarise the sentence.", "The cat sat on the mat all day long.",
     "A cat sat on a mat."),
    ("What is water made of?", "", "Water is made of hydrogen and oxygen."),
    ("Write a greeting for a letter.", "", "Dear friend,"),
    ("Give a synonym of the word.", "happy", "A synonym of happy is glad."),
    ("How many legs does a spider have?", "", "A spider has eight legs."),
    ("Complete the sequence.", "2, 4, 6, 8", "The next number is 10."),
    ("Name the largest planet.", "", "Jupiter is the largest planet."),
    ("What colour is the sky on a clear day?", "", "The sky is blue on a clear day."),
    ("Reverse the word.", "stop", "The word reversed is pots."),
    ("What do bees make?", "", "Bees make honey."),
    ("Classify the number as even or odd.", "7", "Seven is odd."),
    ("Say goodbye politely.", "", "Goodbye, and have a nice day."),
    ("What is the freezing point of water in Celsius?", "",
     "Water freezes at zero degrees Celsius."),
]


def tokenizer_size(tokenizer_json):
    """BPE vocab plus added tokens beyond it: the id range a model must cover."""
    with open(tokenizer_json) as f:
        tok = json.load(f)
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok["added_tokens"]]
    return max(ids) + 1, {t["content"]: t["id"] for t in tok["added_tokens"]}


def write_model(path):
    vocab, added = tokenizer_size(os.path.join(TOKENIZER_DIR, "tokenizer.json"))
    with open(os.path.join(TOKENIZER_DIR, "tokenizer_config.json")) as f:
        tok_cfg = json.load(f)
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=vocab, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=added[tok_cfg["bos_token"]], eos_token_id=added[tok_cfg["eos_token"]],
        pad_token_id=added[tok_cfg["pad_token"]])
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).float().eval()
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    model.save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TOKENIZER_DIR, name), os.path.join(path, name))
    return config


def write_records(path):
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for instruction, inp, output in RECORDS:
            f.write(json.dumps({"instruction": instruction, "input": inp, "output": output},
                               ensure_ascii=True) + "\n")


@torch.no_grad()
def check(path, config):
    """Reload with transformers: tied weights, vocab, special ids, a finite forward pass."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert model.config.vocab_size == config.vocab_size
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), \
        "lm_head is not tied to embed_tokens"
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))
    assert len(tok) == config.vocab_size, (len(tok), config.vocab_size)
    for key in ("bos", "eos", "pad"):
        token = json.load(open(os.path.join(path, "tokenizer_config.json")))[f"{key}_token"]
        assert tok.convert_tokens_to_ids(token) == getattr(config, f"{key}_token_id"), key
    ids = tok("hello", add_special_tokens=False)["input_ids"]
    logits = model(input_ids=torch.tensor([[config.bos_token_id] + ids])).logits
    assert torch.isfinite(logits).all()
    print(f"check: vocab {len(tok)}, 'hello' -> {ids}, logits {tuple(logits.shape)} finite")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    model_dir = os.path.join(args.out, "tiny_chat")
    data_path = os.path.join(args.out, "tiny_chat_sft.jsonl")
    config = write_model(model_dir)
    write_records(data_path)
    check(model_dir, config)
    total = 0
    for f in sorted(os.listdir(model_dir)):
        size = os.path.getsize(os.path.join(model_dir, f))
        total += size
        print(f"{os.path.join(model_dir, f)} ({size} B)")
    size = os.path.getsize(data_path)
    total += size
    print(f"{data_path} ({size} B, {len(RECORDS)} records)")
    print(f"total {total} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
