#!/usr/bin/env python3
"""Mixture-of-experts golden fixtures from transformers' Mixtral and Qwen2-MoE.

Builds tiny random MixtralForCausalLM and Qwen2MoeForCausalLM models (seeded)
and writes each as a Hugging Face model directory under
tests/fixtures/<family>/ (mixtral, qwen2_moe):

  config.json            written by save_pretrained (v5 keys), with
                         output_router_logits true so the import keeps the
                         load-balancing coefficient
  model.safetensors      every parameter, F32, as save_pretrained writes it:
                         the experts per expert (mixtral
                         block_sparse_moe.experts.{j}.w1/w2/w3, qwen2_moe
                         mlp.experts.{j}.gate_proj/up_proj/down_proj)
  reference.safetensors  input_ids     I32 [2, 8]
                         logits        F32 [2, 8, V]
                         ce            F32 [1]  next-token cross-entropy (labels = ids)
                         aux_per_layer F32 [L]  load_balancing_loss_func on each
                                                layer's router logits alone
                         aux_loss      F32 [1]  transformers' aux_loss (pooled over layers)
                         grad.<name>   F32      gradients of
                                                ce + coef * mean(aux_per_layer)
                                                (the objective DecoderLM::loss
                                                computes) for a few parameters,
                                                under transformers' in-memory names

plus tests/fixtures/mixtral/fused/ (config + model.safetensors only):
the same Mixtral weights under transformers' in-memory names (fused
mlp.experts.gate_up_proj [E, 2F, C] / down_proj [E, C, F]), the layout
save_hf_model writes; the test compares it with mixtral's reference.

tests/models/moe_golden_test.cpp loads each directory through the normal
Hugging Face loader (load_hf_model) and compares logits, cross-entropy,
per-layer balance losses and gradients. Shapes: hidden 32, 4 heads over 2 KV
heads, 2 layers, vocab 64, 4 experts top-2 of width 24 (qwen2_moe: experts
of 16, one shared expert of 20 with its sigmoid gate, norm_topk_prob false).
Weights are drawn with unit-scale spread (the router's too, so routing is
decisive and a misplaced expert changes the logits visibly).

Run with the venv that has torch and transformers:
  /work/pyenv/bin/python tools/make_moe_fixtures.py [--out tests/fixtures]
"""

import math
import os
import shutil

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
from fixture_util import fixture_dir, print_written, run_fixtures  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig,  # noqa: E402
                          Qwen2MoeForCausalLM)
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func  # noqa: E402

DEFAULT_OUT = fixture_dir()
BATCH, SEQ = 2, 8
AUX_COEF = 0.02

COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=64, max_position_embeddings=64, num_experts_per_tok=2,
              output_router_logits=True, router_aux_loss_coef=AUX_COEF, tie_word_embeddings=False)

FIXTURES = {
    "mixtral": dict(cls=MixtralForCausalLM, seed=31,
                    config=MixtralConfig(intermediate_size=24, num_local_experts=4,
                                         rms_norm_eps=1e-5, **COMMON)),
    "qwen2_moe": dict(cls=Qwen2MoeForCausalLM, seed=32,
                      config=Qwen2MoeConfig(intermediate_size=40, moe_intermediate_size=16,
                                            shared_expert_intermediate_size=20, num_experts=4,
                                            norm_topk_prob=False, **COMMON)),
}

# Gradients saved (transformers' in-memory names).
GRAD_NAMES = ["model.layers.0.mlp.gate.weight", "model.layers.1.mlp.experts.gate_up_proj",
              "model.layers.0.mlp.experts.down_proj", "model.layers.1.self_attn.q_proj.weight",
              "model.embed_tokens.weight"]


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:  # [.., out, in]: unit-variance outputs
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))


def make(family, spec, out_dir):
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = spec["config"]
    cfg._attn_implementation = "eager"
    model = spec["cls"](cfg).eval()
    randomize(model, gen)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
    out = model(ids, labels=ids, output_router_logits=True)
    n_experts = cfg.num_local_experts if family == "mixtral" else cfg.num_experts
    per_layer = torch.stack([load_balancing_loss_func((lg,), n_experts, cfg.num_experts_per_tok)
                             for lg in out.router_logits])
    ce = out.loss - AUX_COEF * out.aux_loss  # transformers' loss = ce + coef * pooled aux
    objective = ce + AUX_COEF * per_layer.mean()
    model.zero_grad()
    objective.backward()
    params = dict(model.named_parameters())
    ref = {"input_ids": ids.to(torch.int32).contiguous(),
           "logits": out.logits.detach().float().contiguous(),
           "ce": ce.detach().reshape(1).contiguous(),
           "aux_per_layer": per_layer.detach().contiguous(),
           "aux_loss": out.aux_loss.detach().reshape(1).contiguous()}
    for n in GRAD_NAMES:
        ref["grad." + n] = params[n].grad.detach().contiguous()

    d = os.path.join(out_dir, family)
    shutil.rmtree(d, ignore_errors=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(d)  # the per-expert on-disk layout
    save_file(ref, os.path.join(d, "reference.safetensors"))
    dirs = [d]
    if family == "mixtral":
        fused = os.path.join(d, "fused")
        shutil.rmtree(fused, ignore_errors=True)
        os.makedirs(fused)
        shutil.copy(os.path.join(d, "config.json"), fused)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(fused, "model.safetensors"), metadata={"format": "pt"})
        dirs.append(fused)
    for dd in dirs:
        print_written(dd)
    print(f"{family}: ce {ce.item():.6f}, aux per layer {per_layer.tolist()}, "
          f"pooled aux {out.aux_loss.item():.6f}")


def main():
    run_fixtures(__doc__, DEFAULT_OUT, FIXTURES, make)


if __name__ == "__main__":
    main()
