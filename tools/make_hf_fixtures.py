#!/usr/bin/env python3
"""Hugging Face checkpoint fixtures for EfficientLLM's checkpoint I/O tests.

Builds tiny random Llama / Qwen2 / Mistral models with transformers (seeded),
saves them with save_pretrained under tests/fixtures/hf/<name>/, and writes
next to each a reference.safetensors with

  input_ids    I32 [2, 11]   fixed token ids
  logits       F32 [2, 11, V] transformers' logits for them (float32 forward;
                              for a bf16 checkpoint: its weights upcast to f32)
  logits_bf16  F32 [2, 11, V] bf16 checkpoints only: the forward run in bf16
  inv_freq     F32 [D/2]      the model's RoPE inverse frequencies

tests/models/hf_model_test.cpp loads each directory with our loader and
compares. Weights are drawn with a larger spread than transformers' init
(norm weights around 1, non-zero biases) so that a swapped or misplaced
tensor changes the logits visibly.

Usage:
  make_hf_fixtures.py [--out tests/fixtures/hf]       write the fixtures
  make_hf_fixtures.py --check-export DIR [DIR...] [--like NAME]
      load each DIR (a directory EfficientLLM wrote, of any model type
      AutoModelForCausalLM reads: llama, mistral, qwen2, mixtral, qwen2_moe,
      gpt_neox, rwkv, mamba) with transformers in float32 and compare its
      logits with a reference: DIR/reference.safetensors when the writer left
      one (input_ids and its own f32 logits, as tests/models/hf_export_test.cpp
      does), else the fixture NAME's (NAME defaults to DIR's basename; for
      those, RoPE's inv_freq and the model_type are compared too); exit
      status 0 when every DIR matches.
      EL_HF_EXPORT_DIR=/tmp/exp test_models --gtest_filter='HfExport*:*SaveLoad*'
      writes such directories under /tmp/exp.

Run with the venv that has torch and transformers:
  /work/venv-hf/bin/python tools/make_hf_fixtures.py
"""

import argparse
import json
import math
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "hf")
BATCH, SEQ = 2, 11

# name -> (model class, config kwargs, save options)
FIXTURES = {
    # Llama 3.1 style: GQA, untied, llama3 rope scaling (theta 500000,
    # original context 8192: head dim 16 puts one frequency in the smoothed
    # band), sharded into several files.
    "llama_gqa": (LlamaForCausalLM, dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, vocab_size=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        rope_theta=500000.0), dict(max_shard_size="100KB")),
    # Llama 3.2 style: tied embeddings, llama3 scaling with factor 32.
    "llama_tied": (LlamaForCausalLM, dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=80, vocab_size=160, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        rope_theta=500000.0), dict()),
    # The same weights saved in bfloat16 (as Llama 3.2 ships).
    "llama_tied_bf16": (LlamaForCausalLM, "llama_tied", dict(dtype=torch.bfloat16)),
    # Llama with attention_bias: biases on q, k, v and o.
    "llama_bias": (LlamaForCausalLM, dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=64, vocab_size=96, max_position_embeddings=2048,
        rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=True,
        rope_theta=10000.0), dict()),
    # Qwen2: q/k/v biases (always), GQA, theta 1e6.
    "qwen2": (Qwen2ForCausalLM, dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=80, vocab_size=112, max_position_embeddings=32768,
        rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1000000.0,
        use_sliding_window=False), dict()),
    # Mistral: explicit head_dim (16, not hidden/heads = 8, as Mistral-Nemo),
    # a sliding window the test inputs stay within, linear rope scaling.
    "mistral": (MistralForCausalLM, dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=64, vocab_size=128, max_position_embeddings=4096,
        rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=16,
        rope_scaling={"rope_type": "linear", "factor": 2.0}, rope_theta=10000.0), dict()),
}
CONFIG_CLASSES = {LlamaForCausalLM: LlamaConfig, Qwen2ForCausalLM: Qwen2Config,
                  MistralForCausalLM: MistralConfig}


def seed_of(name):
    return sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 100003


@torch.no_grad()
def randomize(model, seed):
    """Weights of O(1) activations: N(0, 1/fan_in) matrices, norms 1 +- 0.2,
    biases N(0, 0.2), drawn in named_parameters() order from one generator."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith(".bias"):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def input_ids_for(name, vocab):
    g = torch.Generator().manual_seed(seed_of(name) + 1)
    return torch.randint(0, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids).logits.float().contiguous()


def build(name):
    cls, cfg_or_base, save_opts = FIXTURES[name]
    if isinstance(cfg_or_base, str):  # a dtype variant of another fixture
        model, _ = build(cfg_or_base)
        return model, save_opts
    config = CONFIG_CLASSES[cls](**cfg_or_base, attn_implementation="eager")
    torch.manual_seed(seed_of(name))
    model = cls(config).float().eval()
    randomize(model, seed_of(name))
    return model, save_opts


def write_fixture(name, out_dir):
    model, opts = build(name)
    dtype = opts.get("dtype", torch.float32)
    path = os.path.join(out_dir, name)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    model.to(dtype).save_pretrained(path, max_shard_size=opts.get("max_shard_size", "5GB"))
    ids = input_ids_for(name, model.config.vocab_size)
    # The reference comes from the saved files, so it is what a loader sees.
    f32 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    ref = {"input_ids": ids.to(torch.int32).contiguous(),
           "logits": logits_of(f32, ids),
           "inv_freq": f32.model.rotary_emb.inv_freq.float().contiguous()}
    if dtype == torch.bfloat16:
        bf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                  attn_implementation="eager").eval()
        ref["logits_bf16"] = logits_of(bf, ids)
    save_file(ref, os.path.join(path, "reference.safetensors"))
    # generation_config.json is not ours to test; keep the fixture minimal.
    gen = os.path.join(path, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    files = sorted(os.listdir(path))
    sizes = {f: os.path.getsize(os.path.join(path, f)) for f in files}
    print(f"{path}: " + ", ".join(f"{f} ({sizes[f]} B)" for f in files))
    return sum(sizes.values())


def check_export(export_dir, like, fixtures_dir):
    """Compares one exported directory with its reference; returns 0 when they match."""
    own = os.path.join(export_dir, "reference.safetensors")
    with open(os.path.join(export_dir, "config.json")) as f:
        cfg = json.load(f)
    ok = True
    if os.path.exists(own):  # the writer's own logits for its own ids
        ref, source, orig = load_file(own), own, None
    else:
        if like not in FIXTURES:
            print(f"{export_dir}: no reference.safetensors and no fixture '{like}' "
                  f"(pass --like one of {', '.join(FIXTURES)})\nMISMATCH")
            return 1
        source = os.path.join(fixtures_dir, like, "reference.safetensors")
        ref = load_file(source)
        with open(os.path.join(fixtures_dir, like, "config.json")) as f:
            orig = json.load(f)
    try:  # eager attention, as the fixtures' references were computed
        model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
    except ValueError:  # a family without that choice
        model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    if orig is not None:
        if cfg.get("model_type") != orig.get("model_type"):
            print(f"model_type {cfg.get('model_type')} != fixture's {orig.get('model_type')}")
            ok = False
        inv = model.model.rotary_emb.inv_freq.float()
        if not torch.equal(inv, ref["inv_freq"]):
            print(f"inv_freq differs: {inv.tolist()} vs {ref['inv_freq'].tolist()}")
            ok = False
    # RWKV without its state cache: transformers' is hidden_size wide and its
    # forward fails for another attention_hidden_size.
    extra = {"use_cache": False} if cfg.get("model_type") == "rwkv" else {}
    try:
        with torch.no_grad():
            got = model(input_ids=ref["input_ids"].long(), **extra).logits.float()
    except Exception as e:  # e.g. a model of another vocabulary
        print(f"{export_dir}: forward on the input_ids of {source} failed: {e}\nMISMATCH")
        return 1
    if got.shape != ref["logits"].shape:
        print(f"{export_dir}: logits shape {tuple(got.shape)} != reference "
              f"{tuple(ref['logits'].shape)}\nMISMATCH")
        return 1
    diff = (got - ref["logits"]).abs().max().item()
    scale = ref["logits"].abs().max().item()
    print(f"{export_dir}: model_type {cfg.get('model_type')}, {type(model).__name__}, "
          f"max |logits - reference| = {diff:.3g} (max |reference| {scale:.3g}, {source})")
    if diff > 1e-4 * max(1.0, scale):
        ok = False
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture directory (default %(default)s)")
    ap.add_argument("--check-export", metavar="DIR", nargs="+",
                    help="load each DIR with transformers and compare with its reference")
    ap.add_argument("--like", metavar="NAME",
                    help="fixture to compare DIR with when it has no reference.safetensors "
                         "(default: DIR's name)")
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.check_export:
        failed = [d for d in args.check_export
                  if check_export(d, args.like or os.path.basename(os.path.normpath(d)),
                                  args.out) != 0]
        if len(args.check_export) > 1:
            print(f"{len(args.check_export) - len(failed)} of {len(args.check_export)} "
                  f"directories match" + (f"; failed: {' '.join(failed)}" if failed else ""))
        sys.exit(1 if failed else 0)
    os.makedirs(args.out, exist_ok=True)
    total = sum(write_fixture(name, args.out) for name in FIXTURES)
    print(f"wrote {len(FIXTURES)} fixtures, {total} bytes, under {args.out}")


if __name__ == "__main__":
    main()
