#!/usr/bin/env python3
"""Pythia (GPT-NeoX) golden fixtures from transformers' GPTNeoXForCausalLM.

Builds tiny random GPTNeoXForCausalLM models (seeded) and writes each as a
Hugging Face model directory under tests/fixtures/pythia/<name>/

  config.json            the model's config (GPTNeoXConfig.to_dict(): v5 keys,
                         rope_parameters with partial_rotary_factor)
  model.safetensors      every parameter, BF16, in the checkpoint's names: the
                         fused attention.query_key_value ([H, 3, D] per head),
                         embed_out.weight as the Hub's Pythia checkpoints name
                         the output projection (pythia_parallel) or
                         lm_head.weight as transformers 5 saves it
                         (pythia_sequential)
  reference.safetensors  input_ids   I32 [2, 8]
                         logits      F32 [2, 8, V]  float32 forward of the bf16 weights
                         logits_bf16 F32 [2, 8, V]  the same forward run in bf16

tests/models/pythia_golden_test.cpp loads each directory through the normal
Hugging Face loader (load_hf_model) and compares the logits. Both models:
hidden 64, 4 heads (head dim 16), 2 layers, rotary_pct 0.25 (4 rotated dims),
vocab 128, intermediate 48 (not Pythia's 4x: the fixtures stay small),
hidden_act gelu (erf), attention and MLP biases, untied embeddings; one with
use_parallel_residual true, one false. Weights are drawn with a larger spread
than the default init (norm weights around 1, biases ~0.1) so a swapped or
misplaced tensor changes the logits visibly.

Run with the venv that has torch and transformers:
  /work/venv-hf/bin/python tools/make_pythia_fixtures.py [--out tests/fixtures/pythia]
"""

import json
import math
import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
from fixture_util import fixture_dir, print_written, run_fixtures  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

DEFAULT_OUT = fixture_dir("pythia")
BATCH, SEQ = 2, 8

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              vocab_size=128, max_position_embeddings=64, rotary_pct=0.25, rotary_emb_base=10000,
              layer_norm_eps=1e-5, hidden_act="gelu", tie_word_embeddings=False,
              attention_bias=True, hidden_dropout=0.0, attention_dropout=0.0)

FIXTURES = {
    "pythia_parallel": dict(use_parallel_residual=True, seed=21, head_name="embed_out.weight"),
    "pythia_sequential": dict(use_parallel_residual=False, seed=22, head_name="lm_head.weight"),
}


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) +
                        0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 2 and "embed_in" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:
                p.copy_(torch.randn(p.shape, generator=gen))
            # The stored weights are bf16: run the f32 reference on the same values.
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def make(name, spec, out_dir):
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = GPTNeoXConfig(use_parallel_residual=spec["use_parallel_residual"], **COMMON)
    cfg._attn_implementation = "eager"
    model = GPTNeoXForCausalLM(cfg).eval()
    randomize(model, gen)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
    with torch.no_grad():
        logits = model(ids).logits.float()
        logits_bf16 = model.to(torch.bfloat16)(ids).logits.float()
        model.to(torch.float32)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            k = spec["head_name"]
        state[k] = v.detach().to(torch.bfloat16).contiguous()
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    config = cfg.to_dict()
    config["architectures"] = ["GPTNeoXForCausalLM"]
    config["dtype"] = "bfloat16"
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous(),
               "logits_bf16": logits_bf16.contiguous()},
              os.path.join(d, "reference.safetensors"))
    print_written(d)


def main():
    run_fixtures(__doc__, DEFAULT_OUT, FIXTURES, make)


if __name__ == "__main__":
    main()
