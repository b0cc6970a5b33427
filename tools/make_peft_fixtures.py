#!/usr/bin/env python3
"""Golden fixtures for the fine-tuning methods, from the real clients.

Builds tiny random Llama and Qwen2 models with transformers, attaches LoRA,
RSLoRA and DoRA adapters with peft (B and the DoRA magnitude moved away from
their initial values, so every term of the forward matters), and records the
adapted model's logits and one training step's adapter gradients for fixed
token ids. tests/finetune/peft_golden_test.cpp loads the same base model and
adapter with EfficientLLM and compares.

llama_pissa (init_lora_weights="pissa") also writes init.safetensors: the
state right after peft's PiSSA initialisation (A, B, the residual base
weights, logits, loss and adapter gradients), which tests/finetune/
pissa_test.cpp compares with our own initialisation (A and B up to a sign per
rank: the SVD does not fix it). Its adapter/ and expect.safetensors are as
for the other cases (B moved after the initialisation): loading a PiSSA
adapter rebuilds the residual from the base, in peft and in ours.

  python3 tools/make_peft_fixtures.py [--out tests/fixtures/peft] [CASE ...]
      writes every case (and VERSIONS.json), or only the cases named
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
    "llama_pissa": ("llama", dict(r=4, lora_alpha=8, init_lora_weights="pissa", target_modules="all-linear")),
}


def is_pissa(name):
    return CASES[name][1].get("init_lora_weights") == "pissa"


def our_name(pname):
    # "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" -> our name
    ours = pname.replace("base_model.model.", "", 1).replace(".default", "").replace(".base_layer", "")
    return ours.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")


def forward_backward(model):
    """Logits, loss and adapter gradients of one training step on inputs()."""
    ids, targets = inputs()
    model.train()
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32),
           "logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        if p.requires_grad:
            out["grad." + our_name(pname)] = p.grad.detach().contiguous()
    return out, loss.item()


def write_pissa_init(name, d):
    """The model right after peft's PiSSA initialisation: init.safetensors."""
    family, kwargs = CASES[name]
    model = get_peft_model(base_model(family), LoraConfig(lora_dropout=0.0, **kwargs))
    state = {}
    for pname, p in model.named_parameters():
        if "lora_A" in pname or "lora_B" in pname:
            state["init." + our_name(pname)] = p.detach().clone().contiguous()
        elif ".base_layer.weight" in pname:
            state["residual." + our_name(pname)] = p.detach().clone().contiguous()
    expect, loss = forward_backward(model)
    expect.update(state)
    save_file(expect, os.path.join(d, "init.safetensors"))
    print(f"  {name}: after PiSSA init loss {loss:.6f}")


def adapted(name):
    family, kwargs = CASES[name]
    model = get_peft_model(base_model(family), LoraConfig(lora_dropout=0.0, **kwargs))
    torch.manual_seed(5678)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_B" in pname and is_pissa(name):
                p.add_(0.05 * torch.randn_like(p))  # keep the principal part
            elif "lora_B" in pname:
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
    expect, loss = forward_backward(model)
    save_file(expect, os.path.join(d, "expect.safetensors"))
    if is_pissa(name):
        write_pissa_init(name, d)
        # peft rebuilds the residual from the base when it loads a PiSSA adapter.
        loaded = PeftModel.from_pretrained(base_model(family), os.path.join(d, "adapter")).eval()
        with torch.no_grad():
            err = (loaded(input_ids=expect["ids"].long()).logits - expect["logits"]).abs().max().item()
        print(f"  {name}: peft loading the adapter on the original base: max |logits diff| = {err:.3e}")
        assert err < 1e-4, "peft did not rebuild the PiSSA residual on load"
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    print(f"wrote {d} ({size / 1024:.0f} KiB, loss {loss:.6f})")


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
    ap.add_argument("cases", nargs="*", help=f"cases to write (default: all, and VERSIONS.json): {list(CASES)}")
    a = ap.parse_args()
    unknown = [c for c in a.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    if a.check_adapter:
        return check_adapter(a.check_adapter, a.fixture, a.out)
    import peft
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    for name in a.cases or CASES:
        write(name, a.out)
    if a.cases:
        return 0
    with open(os.path.join(a.out, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "peft": peft.__version__}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
