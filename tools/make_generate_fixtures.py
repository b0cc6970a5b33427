#!/usr/bin/env python3
"""Generation fixtures for EfficientLLM's inference tests (issue 6).

For each tiny random Hugging Face fixture that tools/make_hf_fixtures.py
wrote under tests/fixtures/hf/<name>/ (its weights and reference input_ids),
writes tests/fixtures/hf/<name>/generate.safetensors with what transformers
computes (eager attention, CPU):
  gen_f32      I32 [2, 8]      greedy continuation of input_ids, float32,
                               model.generate with its KV cache
  logits_bf16  F32 [2, 11, V]  the forward of input_ids with the model cast to
                               bfloat16 (weights and activations)
  gen_bf16     I32 [2, 8]      greedy continuation in bfloat16
  margin_bf16  F32 [2, 8]      top-1 minus top-2 logit at each bf16 step (a
                               near-tie may flip under a different rounding)
tests/infer/hf_generate_test.cpp compares our engine with these.
Run with the venv that has torch and transformers:
  /work/venv-hf/bin/python tools/make_generate_fixtures.py
"""
import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(ROOT, "tests", "fixtures", "hf")
NAMES = ["llama_gqa", "llama_tied", "llama_bias", "qwen2"]
NEW = 8


@torch.no_grad()
def greedy(model, ids):
    out = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[:, ids.shape[1]:].to(torch.int32).contiguous()
    margins = []
    for s in out.scores:
        top = torch.topk(s.float(), 2, dim=-1).values
        margins.append(top[:, 0] - top[:, 1])
    return tokens, torch.stack(margins, dim=1).contiguous()


def main():
    torch.manual_seed(0)
    for name in NAMES:
        d = os.path.join(HF, name)
        ids = load_file(os.path.join(d, "reference.safetensors"))["input_ids"].to(torch.int64)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        model.generation_config.eos_token_id = None  # always NEW tokens
        gen_f32, _ = greedy(model, ids)
        model = model.to(torch.bfloat16)
        with torch.no_grad():
            logits_bf16 = model(input_ids=ids).logits.float().contiguous()
        gen_bf16, margin = greedy(model, ids)
        out = os.path.join(d, "generate.safetensors")
        save_file({"gen_f32": gen_f32, "logits_bf16": logits_bf16, "gen_bf16": gen_bf16, "margin_bf16": margin}, out)
        print(f"wrote {out}: gen_f32 {gen_f32.tolist()} gen_bf16 {gen_bf16.tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
