#!/usr/bin/env python3
"""Mamba-1 golden fixtures from transformers' MambaForCausalLM.

Builds tiny random MambaForCausalLM models (seeded) and writes each under
tests/fixtures/mamba/<name>/

  config.json, model.safetensors  as MambaForCausalLM.save_pretrained writes
                         them (float32: backbone.embeddings, backbone.layers.
                         {i}.{norm, mixer.{in_proj, conv1d [I, 1, K], x_proj,
                         dt_proj (+ bias), A_log [I, N], D [I], out_proj}},
                         backbone.norm_f and lm_head when untied)
  reference.safetensors  input_ids   I32 [2, 8]
                         logits      F32 [2, 8, V]  float32 forward
                         logits_bf16 F32 [2, 8, V]  the same run in bfloat16
                         loss        F32 [1]        model(ids, labels=ids).loss
                                                    (next-token, mean over 2 x 7)
                         grad.<name> F32            d loss / d parameter for
                                                    every parameter of layer 0,
                                                    the embeddings and norm_f
                         prompt_a    I32 [5], prompt_b I32 [3]  two prompts
                         gen_a, gen_b I32 [6]       greedy continuations, each
                                                    generated alone (batch 1,
                                                    the recurrent state cache)

transformers runs its slow (pure PyTorch) path here: neither mamba-ssm nor
causal-conv1d is installed, which is the reference we want (the sequential
scan of MambaMixer, selective_state_update for each generated token).

  mamba_tiny   hidden 32, 2 layers, state 8, conv 4, expand 2 (I = 64),
               time_step_rank auto (2), vocab 96, conv bias, no projection
               bias, tied embeddings (MambaConfig's defaults otherwise)
  mamba_bias   hidden 24, 3 layers, state 5, conv 3, expand 3 (I = 72),
               time_step_rank 4, use_bias true, use_conv_bias false,
               untied, layer_norm_epsilon 1e-4

Weights get a larger spread than the default init (norm weights around 1,
A_log around log(1..N), dt_proj.bias around softplus^-1 of 0.01..0.5) so a
swapped or misplaced tensor changes the logits visibly while the scan stays
in its usual range.

Run with the venv that has torch and transformers:
  /work/pyenv/bin/python tools/make_mamba_fixtures.py [--out tests/fixtures/mamba]
"""

import math
import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from fixture_util import fixture_dir, print_written, run_fixtures  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import MambaConfig, MambaForCausalLM  # noqa: E402

DEFAULT_OUT = fixture_dir("mamba")
BATCH, SEQ, NEW = 2, 8, 6

FIXTURES = {
    "mamba_tiny": dict(seed=41, cfg=dict(hidden_size=32, num_hidden_layers=2, state_size=8,
                                         conv_kernel=4, expand=2, vocab_size=96,
                                         tie_word_embeddings=True)),
    "mamba_bias": dict(seed=42, cfg=dict(hidden_size=24, num_hidden_layers=3, state_size=5,
                                         conv_kernel=3, expand=3, time_step_rank=4,
                                         vocab_size=96, use_bias=True, use_conv_bias=False,
                                         tie_word_embeddings=False, layer_norm_epsilon=1e-4)),
}


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if name.endswith("A_log"):
                n = torch.arange(1, p.shape[1] + 1, dtype=torch.float32)
                p.copy_(torch.log(n)[None, :] + 0.2 * r)
            elif name.endswith("dt_proj.bias"):
                dt = torch.exp(torch.rand(p.shape, generator=gen) * math.log(50.0) + math.log(0.01))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name.endswith(".D"):
                p.copy_(1.0 + 0.3 * r)
            elif "norm" in name:
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "conv1d" in name:
                p.copy_(r / math.sqrt(p.shape[-1]))
            elif p.ndim == 2 and "embeddings" not in name:
                p.copy_(r / math.sqrt(p.shape[1]))
            else:
                p.copy_(r)


def greedy(model, prompt):
    # No stop token: the token id 0 (MambaConfig's eos) must not end a row early.
    model.generation_config.eos_token_id = None
    out = model.generate(prompt[None, :], max_new_tokens=NEW, do_sample=False, use_cache=True,
                         pad_token_id=0)
    return out[0, prompt.shape[0]:].to(torch.int32).contiguous()


def make(name, spec, out_dir):
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = MambaConfig(**spec["cfg"])
    model = MambaForCausalLM(cfg).eval()
    randomize(model, gen)
    d = os.path.join(out_dir, name)
    model.save_pretrained(d, safe_serialization=True)

    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
    ref = {"input_ids": ids.to(torch.int32).contiguous()}
    out = model(ids, labels=ids, use_cache=False)
    out.loss.backward()
    ref["logits"] = out.logits.detach().float().contiguous()
    ref["loss"] = out.loss.detach().reshape(1).float().contiguous()
    for pname, p in model.named_parameters():
        if ".layers.0." in pname or "embeddings" in pname or "norm_f" in pname:
            ref["grad." + pname] = p.grad.detach().float().contiguous()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        prompts = {"a": torch.randint(0, cfg.vocab_size, (5,), generator=gen),
                   "b": torch.randint(0, cfg.vocab_size, (3,), generator=gen)}
        for k, prompt in prompts.items():
            ref["prompt_" + k] = prompt.to(torch.int32).contiguous()
            ref["gen_" + k] = greedy(model, prompt)
        ref["logits_bf16"] = model.to(torch.bfloat16)(ids, use_cache=False).logits.float()
        model.to(torch.float32)
    save_file(ref, os.path.join(d, "reference.safetensors"))
    print_written(d)


def main():
    run_fixtures(__doc__, DEFAULT_OUT, FIXTURES, make)


if __name__ == "__main__":
    main()
