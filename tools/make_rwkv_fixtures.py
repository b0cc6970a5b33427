#!/usr/bin/env python3
"""RWKV-4 golden fixtures from transformers' RwkvForCausalLM.

Builds tiny random RwkvForCausalLM models (seeded) and writes each under
tests/fixtures/rwkv/<name>/

  config.json, model.safetensors  as RwkvForCausalLM.save_pretrained writes
                         them (float32; the names and shapes the loader must
                         accept, time_mix_* as [1, 1, C])
  reference.safetensors  input_ids   I32 [2, 8]
                         logits      F32 [2, 8, V]  eval() forward in float32
                         logits_bf16 F32 [2, 8, V]  the same run in bfloat16
                         loss        F32 [1]        model(ids, labels=ids).loss
                         prompt_a    I32 [5], prompt_b I32 [3]  two prompts
                         gen_a       I32 [6], gen_b    I32 [6]  greedy
                                     continuations, each generated alone
                                     (batch 1, the recurrent state cache)
                         state_*     F32 [B, C or A, L] the five state tensors
                                     after the forward with use_cache (att
                                     shift, ffn shift, num, den, max)

The models run in eval(), as inference does: transformers then rescales the
layers (rescale_every) before the first forward, so the directory is written
first, from the unscaled weights.

  rwkv_tiny     hidden 32, 2 layers, vocab 96, attention_hidden_size and
                intermediate_size left to their defaults (32, 128),
                rescale_every 6 (more than the layers: no rescale)
  rwkv_rescale  hidden 24, 4 layers, intermediate_size 40, rescale_every 2
                (the stream halves after layers 2 and 4), layer_norm_epsilon
                1e-4 (ln_out keeps 1e-5), tie_word_embeddings true
  rwkv_attn16   hidden 24, 2 layers, attention_hidden_size 16,
                intermediate_size 56: logits and loss only (transformers'
                state cache is hidden_size wide, so its cached forward fails
                when attention_hidden_size differs)

Weights get a larger spread than the default init (norm weights around 1,
biases ~0.1, time_decay ~N(0, 1), time_mix uniform in [0, 1]) so a swapped or
misplaced tensor changes the logits visibly.

Run with the venv that has torch and transformers:
  /work/pyenv/bin/python tools/make_rwkv_fixtures.py [--out tests/fixtures/rwkv]
"""

import math
import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
from fixture_util import fixture_dir, print_written, run_fixtures  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import RwkvConfig, RwkvForCausalLM  # noqa: E402

DEFAULT_OUT = fixture_dir("rwkv")
BATCH, SEQ, NEW = 2, 8, 6

FIXTURES = {
    "rwkv_tiny": dict(seed=31, cfg=dict(hidden_size=32, num_hidden_layers=2, vocab_size=96,
                                        context_length=64)),
    "rwkv_rescale": dict(seed=32, cfg=dict(hidden_size=24, num_hidden_layers=4, vocab_size=80,
                                           context_length=64, intermediate_size=40,
                                           rescale_every=2, layer_norm_epsilon=1e-4,
                                           tie_word_embeddings=True)),
    # transformers' state cache is hidden_size wide for num/den/max too, so
    # its cached forward fails when attention_hidden_size differs: no
    # generation or states here.
    "rwkv_attn16": dict(seed=33, generate=False,
                        cfg=dict(hidden_size=24, num_hidden_layers=2, vocab_size=64,
                                 context_length=64, attention_hidden_size=16,
                                 intermediate_size=56)),
}


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name or "pre_ln" in name or "ln_out" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) +
                        0.2 * torch.randn(p.shape, generator=gen))
            elif "time_mix" in name:
                p.copy_(torch.rand(p.shape, generator=gen))
            elif "time_decay" in name or "time_first" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.ndim == 2 and "embeddings" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:
                p.copy_(torch.randn(p.shape, generator=gen))


def greedy(model, prompt):
    out = model.generate(prompt[None, :], max_new_tokens=NEW, do_sample=False, use_cache=True,
                         pad_token_id=0)
    return out[0, prompt.numel():].to(torch.int32).contiguous()


def make(name, spec, out_dir):
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = RwkvConfig(**spec["cfg"])
    model = RwkvForCausalLM(cfg)
    randomize(model, gen)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)  # before eval() rescales the weights
    model.eval()
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
    prompt_a = torch.randint(0, cfg.vocab_size, (5,), generator=gen)
    prompt_b = torch.randint(0, cfg.vocab_size, (3,), generator=gen)
    cached = spec.get("generate", True)
    with torch.no_grad():
        out = model(ids, labels=ids, use_cache=cached)
        ref = {"input_ids": ids.to(torch.int32), "logits": out.logits.float(),
               "loss": out.loss.float().reshape(1)}
        if cached:
            ref.update({"prompt_a": prompt_a.to(torch.int32), "prompt_b": prompt_b.to(torch.int32),
                        "gen_a": greedy(model, prompt_a), "gen_b": greedy(model, prompt_b)})
            for i, s in enumerate(["att_x", "ffn_x", "num", "den", "max"]):
                ref["state_" + s] = out.state[[1, 0, 2, 3, 4][i]].float()
        model.to(torch.bfloat16)  # (still eval(), the rescaled weights: exact in bf16 too)
        ref["logits_bf16"] = model(ids, use_cache=cached).logits.float()
    save_file({k: v.contiguous() for k, v in ref.items()},
              os.path.join(d, "reference.safetensors"))
    print_written(d)


def main():
    run_fixtures(__doc__, DEFAULT_OUT, FIXTURES, make)


if __name__ == "__main__":
    main()
