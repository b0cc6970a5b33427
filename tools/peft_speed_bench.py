#!/usr/bin/env python3
"""Fine-tuning speed yardstick: transformers + peft on a Llama-3.2-1B-shaped random model.

The reference side of issue 5 item 6 (tools/gpu_finetune_speed.sh runs it next to
`efficientllm finetune` in one device call). It trains the way a LLaMA-Factory user
does, without gradient checkpointing, and times optimizer steps:

  LoRA / DoRA / RSLoRA / LoRA+: base weights in bf16 (as LLaMA-Factory loads them
    for bf16 compute), adapters on all 7 linear projections, trainable parameters
    upcast to f32 (LLaMA-Factory's cast_trainable_params_to_fp32), forward under
    torch.autocast(bfloat16) (HF Trainer bf16=True).
  full: `--full-mode amp` (default): f32 master weights + autocast bf16, the HF
    Trainer bf16 AMP setup LLaMA-Factory uses for full tuning (it upcasts trainable
    params to f32); `--full-mode bf16`: pure bf16 weights (torch AdamW then keeps
    its state in bf16 too).
  Optimizer: torch.optim.AdamW(fused=True) on CUDA, HF Trainer's default
  ("adamw_torch_fused" for torch >= 2.8); gradient clipping at 1.0 (HF Trainer's
  and our default max_grad_norm); attn_implementation="sdpa"; use_cache=False.
  Data: random tokens [B, T] (fixed seed), labels = ids, every position in the loss.

  python3 tools/peft_speed_bench.py --save-model DIR              # build + save, exit
  python3 tools/peft_speed_bench.py --model DIR --method lora --batch 4 --seq 2048 \
      --steps 10 --warmup 3 --json out.json
  python3 tools/peft_speed_bench.py --tiny --method dora --steps 3  # CPU smoke test

Each measured step is timed between two torch.cuda.synchronize() calls (forward,
loss, backward, clip, optimizer step, zero_grad). Output: one JSON object (stdout
and --json). Exit codes: 0 ok, 2 bad arguments / compile failure, 3 out of memory
(the JSON then says "oom": true).
"""
import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time

import torch

try:  # torch >= 2.5 names it; older releases only have the CUDA-specific class
    OOM_ERRORS = (torch.OutOfMemoryError,)
except AttributeError:
    OOM_ERRORS = (torch.cuda.OutOfMemoryError,)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ["lora", "dora", "rslora", "lora_plus", "full"]

# Llama-3.2-1B's config.json shape (random weights; max_position_embeddings as shipped).
LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                head_dim=64, intermediate_size=8192, vocab_size=128256, max_position_embeddings=131072,
                rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", initializer_range=0.02,
                bos_token_id=128000, eos_token_id=128001, rope_theta=500000.0,
                rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
# The same family at CPU-test size (llama3 scaling, GQA, tied embeddings kept).
TINY = dict(LLAMA_1B, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=128, vocab_size=256, bos_token_id=1, eos_token_id=2)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--save-model", metavar="DIR", help="build the random model, save it (safetensors) to DIR")
    p.add_argument("--model", metavar="DIR", help="load the base model from DIR (as saved by --save-model); "
                   "default: build the random model in-process")
    p.add_argument("--method", choices=METHODS, help="benchmark this method (omit with --save-model to only save)")
    p.add_argument("--full-mode", choices=["amp", "bf16"], default="amp",
                   help="full FT: f32 weights + autocast bf16 (amp, HF Trainer bf16=True) or pure bf16 weights")
    p.add_argument("--tiny", action="store_true", help="tiny config for CPU tests (default batch 2, seq 32)")
    p.add_argument("--batch", type=int, help="samples per step (default 4; 2 with --tiny)")
    p.add_argument("--seq", type=int, help="tokens per sample (default 2048; 32 with --tiny)")
    p.add_argument("--steps", type=int, default=10, help="measured steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps before them")
    p.add_argument("--r", type=int, default=64)
    p.add_argument("--alpha", type=float, default=128.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--loraplus-ratio", type=float, default=16.0, help="LoRA+: lr of B over lr of A")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--json", metavar="PATH", help="also write the result JSON here")
    a = p.parse_args(argv)
    if not a.save_model and not a.method:
        p.error("nothing to do: give --method and/or --save-model")
    if a.save_model and a.model:
        p.error("--save-model builds a fresh model; do not combine it with --model")
    a.batch = a.batch or (2 if a.tiny else 4)
    a.seq = a.seq or (32 if a.tiny else 2048)
    for name in ("batch", "seq", "steps", "r"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.warmup < 0:
        p.error(f"--warmup must be >= 0, got {a.warmup}")
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return a


def versions():
    import transformers
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    try:
        import peft
        out["peft"] = peft.__version__
    except ImportError:
        out["peft"] = None
    return out


def device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_random_model(tiny, seed, device):
    """Random Llama-3.2-1B-shaped model in bf16 (HF init: N(0, 0.02) matrices, unit norms)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**(TINY if tiny else LLAMA_1B))
    torch.manual_seed(seed)
    # Initialised on the target device: 1.2B normal draws are instant on a GPU and
    # slow on the CPU. The weights then depend on the device's RNG, which is fine:
    # our engine reads the saved file, not the seed.
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.to(device)  # a no-op unless the device context was not honoured


def save_model(model, path):
    """save_pretrained into PATH.tmp, then rename: a run cut short leaves no half model at PATH."""
    import inspect
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True  # transformers 4.x; 5.x always writes safetensors
    model.save_pretrained(tmp, **kwargs)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    files = sorted(os.listdir(path))
    size = sum(os.path.getsize(os.path.join(path, f)) for f in files)
    print(f"saved {path}: {', '.join(files)} ({size / 2**30:.2f} GiB)", file=sys.stderr, flush=True)


def load_model(path, dtype, device):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    return model.to(device)


def prepare(model, args):
    """Apply the method; returns (model, param groups, setup description)."""
    model.config.use_cache = False  # LLaMA-Factory sets this for training
    if args.method == "full":
        if args.full_mode == "amp":
            model = model.float()
            setup = "full: f32 master weights, autocast bf16 (HF Trainer bf16=True AMP), AdamW state f32"
        else:
            model = model.to(torch.bfloat16)
            setup = "full: pure bf16 weights and gradients, autocast bf16, AdamW state bf16"
        for p in model.parameters():
            p.requires_grad_(True)
        return model, [{"params": [p for p in model.parameters() if p.requires_grad]}], setup

    from peft import LoraConfig, get_peft_model
    model = model.to(torch.bfloat16)
    cfg = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout, target_modules=TARGET_MODULES,
                     use_dora=args.method == "dora", use_rslora=args.method == "rslora",
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    # LLaMA-Factory: cast_trainable_params_to_fp32 (peft already autocasts adapters
    # to f32; this makes sure, DoRA's magnitude vector included).
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.float32)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if args.method == "lora_plus":  # LLaMA-Factory's loraplus: B matrices at ratio x lr
        groups = [{"params": [p for n, p in trainable if "lora_B" not in n]},
                  {"params": [p for n, p in trainable if "lora_B" in n], "lr": args.lr * args.loraplus_ratio}]
    else:
        groups = [{"params": [p for _, p in trainable]}]
    setup = (f"{args.method}: bf16 base, f32 adapters (r={args.r}, alpha={args.alpha:g}, dropout={args.dropout:g}, "
             f"all 7 linear projections), autocast bf16")
    return model, groups, setup


def make_optimizer(groups, args):
    fused = args.device.startswith("cuda")
    try:
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0, fused=fused), fused
    except (RuntimeError, TypeError):  # a dtype/device the fused kernel does not take
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0), False


def bench(model, args, result):
    dev = args.device
    model, groups, setup = prepare(model, args)
    model.train()
    result["setup"] = setup
    result["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result["total_params"] = sum(p.numel() for p in model.parameters())
    opt, fused = make_optimizer(groups, args)
    result["optimizer"] = f"torch.optim.AdamW(fused={fused}, lr={args.lr:g}, weight_decay=0)"
    params = [p for g in groups for p in g["params"]]
    fwd = model
    if args.compile:
        fwd = torch.compile(model)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = [torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(dev)
               for _ in range(args.warmup + args.steps)]

    def step(ids):
        with torch.autocast(device_type="cuda" if dev.startswith("cuda") else "cpu", dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i, ids in enumerate(batches):
        sync(dev)
        t0 = time.perf_counter()
        try:
            loss = step(ids)
        except OOM_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - a compile failure is reported, not a crash
            if args.compile and i == 0:
                result["compile_error"] = f"{type(e).__name__}: {e}"[:2000]
                return 2
            raise
        sync(dev)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    measured = times[args.warmup:]
    mean = statistics.fmean(measured)
    result.update({
        "warmup_step_seconds": times[:args.warmup],
        "step_seconds": measured,
        "mean_step_s": mean,
        "median_step_s": statistics.median(measured),
        "min_step_s": min(measured),
        "stdev_step_s": statistics.stdev(measured) if len(measured) > 1 else 0.0,
        "samples_per_s": args.batch / mean,
        "tokens_per_s": args.batch * args.seq / mean,
        "losses": losses,
    })
    if not all(math.isfinite(x) for x in losses):
        result["warning"] = "non-finite loss"
    return 0


def record_memory(result, dev):
    if dev.startswith("cuda"):
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        result["device_total_memory_bytes"] = torch.cuda.get_device_properties(torch.device(dev)).total_memory
    else:
        import resource
        result["peak_memory_bytes"] = None  # no allocator counter on the CPU
        result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    result = {"tool": "peft_speed_bench", "method": args.method, "batch": args.batch, "seq": args.seq,
              "steps": args.steps, "warmup": args.warmup, "compile": args.compile, "tiny": args.tiny,
              "full_mode": args.full_mode if args.method == "full" else None,
              "lora": {"r": args.r, "alpha": args.alpha, "dropout": args.dropout,
                       "target_modules": TARGET_MODULES} if args.method not in (None, "full") else None,
              "max_grad_norm": args.max_grad_norm, "attn_implementation": "sdpa", "gradient_checkpointing": False,
              "device": dev, "device_name": device_name(dev), "versions": versions(),
              "model": args.model or ("random tiny" if args.tiny else "random Llama-3.2-1B shape")}
    rc = 0
    t_load = time.perf_counter()
    try:
        if args.model:
            # amp full FT loads straight into f32; everything else keeps the bf16 base.
            dtype = torch.float32 if args.method == "full" and args.full_mode == "amp" else torch.bfloat16
            model = load_model(args.model, dtype, dev)
        else:
            model = build_random_model(args.tiny, args.seed, dev)
        if args.save_model:
            save_model(model, args.save_model)
            result["saved_model"] = args.save_model
        result["load_seconds"] = time.perf_counter() - t_load
        if args.method:
            rc = bench(model, args, result)
    except OOM_ERRORS as e:
        result["oom"] = True
        result["error"] = f"{type(e).__name__}: {e}"[:2000]
        rc = 3
    if args.method:
        record_memory(result, dev)
        text = json.dumps(result, indent=1)
        print(text, flush=True)
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, args.json)
        if "mean_step_s" in result:
            pk = result.get("peak_memory_bytes")
            print(f"{args.method}: B={args.batch} T={args.seq} {result['mean_step_s'] * 1e3:.1f} ms/step, "
                  f"{result['samples_per_s']:.2f} samples/s, {result['tokens_per_s']:,.0f} tok/s"
                  + (f", peak {pk / 2**30:.2f} GiB" if pk else ""), file=sys.stderr, flush=True)
        elif rc == 3:
            print(f"{args.method}: out of memory ({result['error'][:200]})", file=sys.stderr)
        elif rc == 2:
            print(f"{args.method}: torch.compile failed ({result['compile_error'][:200]})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
