#!/usr/bin/env python3
"""Golden fixtures for the fine-tuning methods, from the real clients.

Builds tiny random Llama and Qwen2 models with transformers, attaches LoRA,
RSLoRA and DoRA adapters with peft (B and the DoRA magnitude moved away from
their initial values, so every term of the forward matters), and records the
adapted model's logits and one training step's adapter gradients for fixed
token ids. tests/finetune/peft_golden_test.cpp loads the same base model and
adapter with EfficientLLM and compares.

  python3 tools/make_peft_fixtures.py [--out tests/fixtures/peft]
  python3 tools/make_peft_fixtures.py --check-adapter DIR --fixture NAME
      loads an adapter directory EfficientLLM wrote into peft on top of the
      fixture's base model and compares its logits with the fixture's: the
      "our adapter loads in peft" check (run on the GPU machine).

Needs torch, transformers and peft (the versions on the GPU machine: PyTorch
2.11, transformers 5.17, peft 0.21). Deterministic: fixed seeds, float32, CPU.
"""
import argparse
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

B, T, VOCAB = 2, 9, 61


def base_model(family):
    torch.manual_seed(1234)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))  # q/k/v biases
    # transformers initialises biases to zero; give them values so they count.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.1)
    return model.float().eval()


def inputs():
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(0, VOCAB, (B, T), generator=g)
    targets = torch.randint(0, VOCAB, (B, T), generator=g)
    targets[0, :3] = -100  # ignored positions (prompt tokens in SFT)
    return ids, targets


CASES = {
    # name: (family, peft kwargs)
    "llama_lora": ("llama", dict(r=4, lora_alpha=8, target_modules="all-linear")),
    "llama_rslora": ("llama", dict(r=4, lora_alpha=8, use_rslora=True,
                                   target_modules=["q_proj", "v_proj", "down_proj"])),
    "llama_dora": ("llama", dict(r=4, lora_alpha=8, use_dora=True, target_modules="all-linear")),
    "qwen2_dora": ("qwen2", dict(r=4, lora_alpha=16, use_dora=True,
                                 target_modules=["q_proj", "k_proj", "o_proj", "up_proj"])),
}


def adapted(name):
    family, kwargs = CASES[name]
    model = get_peft_model(base_model(family), LoraConfig(lora_dropout=0.0, **kwargs))
    torch.manual_seed(5678)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                p.normal_(0, 0.05)
            elif "lora_magnitude_vector" in pname:
                p.mul_(1 + 0.1 * torch.randn_like(p))
    return model


def write(name, out):
    family, _ = CASES[name]
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    base_model(family).save_pretrained(os.path.join(d, "base"), safe_serialization=True)
    model = adapted(name)
    model.save_pretrained(os.path.join(d, "adapter"))
    readme = os.path.join(d, "adapter", "README.md")  # peft's model-card template
    if os.path.exists(readme):
        os.remove(readme)
    ids, targets = inputs()
    model.train()
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    expect = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32),
              "logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        if p.requires_grad:
            # "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" -> our name
            ours = pname.replace("base_model.model.", "", 1).replace(".default", "")
            ours = ours.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
            expect["grad." + ours] = p.grad.detach().contiguous()
    save_file(expect, os.path.join(d, "expect.safetensors"))
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    print(f"wrote {d} ({size / 1024:.0f} KiB, loss {loss.item():.6f})")


def check_adapter(adapter_dir, name, fixtures):
    family, _ = CASES[name]
    from safetensors.torch import load_file
    expect = load_file(os.path.join(fixtures, name, "expect.safetensors"))
    model = PeftModel.from_pretrained(base_model(family), adapter_dir).eval()
    with torch.no_grad():
        logits = model(input_ids=expect["ids"].long()).logits
    err = (logits - expect["logits"]).abs().max().item()
    print(f"peft on our adapter {adapter_dir}: max |logits - fixture| = {err:.3e}")
    return 0 if err < 1e-4 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "peft"))
    ap.add_argument("--check-adapter")
    ap.add_argument("--fixture", default="llama_dora")
    a = ap.parse_args()
    if a.check_adapter:
        return check_adapter(a.check_adapter, a.fixture, a.out)
    import peft
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    for name in CASES:
        write(name, a.out)
    with open(os.path.join(a.out, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "peft": peft.__version__}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
