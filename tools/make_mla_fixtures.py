#!/usr/bin/env python3
"""MLA (multi-head latent attention) golden fixtures from transformers' DeepseekV3.

Builds tiny random DeepseekV3ForCausalLM models (seeded; dense MLP only:
first_k_dense_replace = num_hidden_layers, so no MoE layer) and writes under
tests/fixtures/mla/<name>/

  model.safetensors      every parameter, BF16, transformers' names
  config.json            the model's config (what the test builds its card from)
  reference.safetensors  input_ids   I32 [2, 11]
                         logits      F32 [2, 11, V]  float32 forward of the bf16 weights
                         logits_bf16 F32 [2, 11, V]  the same forward run in bf16

tests/models/mla_golden_test.cpp loads the weights by name into our DecoderLM
(attention: mla) and compares the logits. Cases: q_lora_rank 32 (query
compression) and None (q_proj); both with DeepSeek's interleaved RoPE
(rope_interleave, the config default) and kv_lora_rank 16, qk_nope 16,
qk_rope 8, v_head 16 (so q/k heads of 24 dims and v heads of 16). Weights are
drawn with a larger spread than the default init (norm weights around 1) so a
swapped or misplaced tensor changes the logits visibly.

Run with the venv that has torch and transformers:
  /work/venv-hf/bin/python tools/make_mla_fixtures.py [--out tests/fixtures/mla]
"""

import argparse
import json
import math
import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "mla")
BATCH, SEQ = 2, 11

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
              intermediate_size=96, vocab_size=128, max_position_embeddings=64,
              kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
              first_k_dense_replace=2, n_routed_experts=4, num_experts_per_tok=2,
              moe_intermediate_size=32, rms_norm_eps=1e-6, tie_word_embeddings=False,
              attention_bias=False, rope_interleave=True)

FIXTURES = {
    "mla_q_lora": dict(q_lora_rank=32, seed=11),
    "mla_no_q_lora": dict(q_lora_rank=None, seed=12),
}


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 2 and "embed_tokens" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:
                p.copy_(torch.randn(p.shape, generator=gen))
            # The stored weights are bf16: run the f32 reference on the same values.
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def make(name, spec, out_dir):
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = DeepseekV3Config(q_lora_rank=spec["q_lora_rank"], **COMMON)
    cfg._attn_implementation = "eager"
    model = DeepseekV3ForCausalLM(cfg).eval()
    randomize(model, gen)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
    with torch.no_grad():
        logits = model(ids).logits.float()
        logits_bf16 = model.to(torch.bfloat16)(ids).logits.float()
        model.to(torch.float32)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous(),
               "logits_bf16": logits_bf16.contiguous()},
              os.path.join(d, "reference.safetensors"))
    for fn in sorted(os.listdir(d)):
        p = os.path.join(d, fn)
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name, spec in FIXTURES.items():
        make(name, spec, args.out)


if __name__ == "__main__":
    main()
