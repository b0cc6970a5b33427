// efficientllm finetune — supervised fine-tuning of a Hugging Face checkpoint
// (or a model of ours) with full, freeze, LoRA, LoRA+, RSLoRA, DoRA or PiSSA.
#include <cmath>
#include <cstdio>

#include "bench/table.h"
#include "cli/common.h"
#include "finetune/sft_trainer.h"
#include "io/atomic_file.h"

namespace el::cli {

namespace {

struct FinetuneArgs {
  finetune::FinetuneConfig cfg;
  std::string device = "cpu";
  std::string precision = "f32";
  std::string method = "lora";
  std::string freeze_mode = "last_k_trainable";
  std::string report_path;
};

Status resolve(FinetuneArgs& a) {
  EL_TRY_ASSIGN(a.cfg.device, parse_device(a.device));
  EL_TRY_ASSIGN(a.cfg.precision, parse_precision(a.precision, "--precision"));
  EL_TRY_ASSIGN(a.cfg.method, finetune::parse_method(a.method));
  if (a.freeze_mode == "last_k_trainable" || a.freeze_mode == "last") {
    a.cfg.freeze.mode = finetune::FreezeConfig::Mode::last_k_trainable;
  } else if (a.freeze_mode == "first_k_frozen" || a.freeze_mode == "first") {
    a.cfg.freeze.mode = finetune::FreezeConfig::Mode::first_k_frozen;
  } else {
    return make_error(fmt::format("unknown freeze mode '{}'", a.freeze_mode), "--freeze-mode",
                      "expected last_k_trainable or first_k_frozen");
  }
  return Status();
}

}  // namespace

void add_finetune_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "finetune", "Fine-tune a checkpoint on SFT data (full, freeze, lora, lora_plus, rslora, dora, pissa)");
  auto a = std::make_shared<FinetuneArgs>();
  finetune::FinetuneConfig& c = a->cfg;
  // The model: one of three sources.
  cmd->add_option("--hf", c.hf_dir, "Hugging Face checkpoint directory (config.json + safetensors)");
  cmd->add_option("--init", c.init_checkpoint, "A checkpoint.safetensors written by `efficientllm train`");
  cmd->add_option("--model", c.card, "A model card with random weights (throughput runs)");
  cmd->add_option("--tokenizer", c.tokenizer,
                  "tokenizer.json / .model or a directory holding one (default: the --hf directory)");
  // The data.
  cmd->add_option("--data", c.data, "SFT files (JSON Lines / JSON), or `builtin` (derived from the built-in corpus)");
  cmd->add_option("--format", c.format, "auto | alpaca | messages | openo1 | medical_o1")->capture_default_str();
  cmd->add_option("--template", c.template_name, "Chat template: alpaca | llama3 | chatml")->capture_default_str();
  cmd->add_option("--cutoff-len", c.cutoff_len, "Max tokens per sample (longer ones are cut)")->capture_default_str();
  cmd->add_option("--val-fraction", c.val_fraction, "Share of records held out for validation")->capture_default_str();
  cmd->add_flag("--skip-bad-records", c.skip_bad_records,
                "Skip (and count) records with missing fields instead of failing");
  cmd->add_option("--max-records", c.max_records, "Read at most this many records (0 = all)")->capture_default_str();
  cmd->add_option("--synthetic-samples", c.synthetic_samples,
                  "Use N samples of --seq-len random tokens instead of --data (throughput runs)");
  cmd->add_option("--cache-dir", c.cache_dir, "Where `--data builtin` is cached")->capture_default_str();
  // The method.
  cmd->add_option("--method", a->method, "full | freeze | lora | lora_plus | rslora | dora | pissa")->capture_default_str();
  cmd->add_option("--adapter", c.adapter_dir,
                  "Start from this PEFT adapter directory (its config sets r, alpha, targets)");
  cmd->add_flag("--eval-only", c.eval_only, "Only measure the validation loss of the model as loaded");
  cmd->add_option("--lora-r", c.lora.r, "Adapter rank r")->capture_default_str();
  cmd->add_option("--lora-alpha", c.lora.alpha, "Adapter alpha (scale alpha/r; rslora alpha/sqrt r)")->capture_default_str();
  cmd->add_option("--lora-dropout", c.lora.dropout, "Dropout on the adapter input")->capture_default_str();
  cmd->add_option("--lora-targets", c.lora.target_modules,
                  "Projections that get adapters (default: all seven)")->delimiter(',');
  cmd->add_option("--loraplus-ratio", c.loraplus_ratio, "lora_plus: lr of B over lr of A")->capture_default_str();
  cmd->add_option("--freeze-mode", a->freeze_mode, "last_k_trainable | first_k_frozen")->capture_default_str();
  cmd->add_option("--freeze-k", c.freeze.k, "k of the freeze mode")->capture_default_str();
  // The schedule.
  cmd->add_option("--device", a->device, "cpu | cuda[:N]")->capture_default_str();
  cmd->add_option("--precision", a->precision, "f32 | bf16 | f16 (storage dtype; f32 AdamW masters)")->capture_default_str();
  cmd->add_option("--batch-size,-b", c.batch_size, "Micro-batch size (samples)")->capture_default_str();
  cmd->add_option("--grad-accum", c.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  cmd->add_option("--seq-len,-t", c.seq_len, "Fixed batch length T (0 = each batch's longest sample)")->capture_default_str();
  cmd->add_option("--pad-to-multiple", c.pad_to_multiple,
                  "With --seq-len 0: round batch lengths up to a multiple of this (few GEMM shapes)")->capture_default_str();
  cmd->add_option("--epochs", c.epochs, "Passes over the training split")->capture_default_str();
  cmd->add_option("--steps", c.steps, "Optimizer steps (overrides --epochs; 0 = from epochs)")->capture_default_str();
  cmd->add_option("--lr", c.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--warmup-ratio", c.warmup_ratio, "Linear warm-up share of the steps (cosine to 0 after)")->capture_default_str();
  cmd->add_option("--weight-decay", c.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--grad-clip", c.grad_clip, "Max global gradient norm (0 = off)")->capture_default_str();
  cmd->add_option("--eval-every", c.eval_every, "Validate every K steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--eval-batches", c.eval_batches, "Validation batches (0 = the whole split)")->capture_default_str();
  cmd->add_option("--seed", c.seed, "Adapters' init, dropout, data order and split")->capture_default_str();
  cmd->add_option("--sample-interval-ms", c.sample_interval_ms, "Metrics sampling period")->capture_default_str();
  cmd->add_option("--timing-warmup", c.timing_warmup_steps,
                  "First steps left out of AL and the throughputs")->capture_default_str();
  cmd->add_option("--max-nonfinite-skips", c.max_nonfinite_skips,
                  "Steps with NaN/Inf loss to skip before stopping")->capture_default_str();
  // Outputs.
  cmd->add_option("--out", c.out_dir, "Write the adapter (PEFT format) or the full model (HF format) here");
  cmd->add_flag("--merge", c.merge, "Fold the adapters into the weights: --out gets the full model, --out/adapter the adapter");
  cmd->add_option("--report", a->report_path, "Write the full JSON report (raw samples included) here");

  cmd->callback([&action, a] {
    action = [a]() -> int {
      Status st = resolve(*a);
      if (!st.ok()) return report_error(st.error());
      bench::ProgressBar bar;
      TrainCallbacks cb;
      cb.on_step = [&bar](const StepRecord& r, const TrainConfig& c) {
        const double eta = r.seconds * static_cast<double>(c.steps - r.step);
        bar.update("finetune", r.step, c.steps, fmt::format("loss {:.4f} lr {:.2e}", r.loss, r.lr), eta);
      };
      cb.on_eval = [&bar](const EvalRecord& e) {
        bar.finish();
        std::printf("step %lld: val loss %.4f\n", static_cast<long long>(e.step), e.val_loss);
      };
      auto result = finetune::run_finetune(a->cfg, cb);
      bar.finish();
      if (!result.ok()) return report_error(result.error());
      const finetune::FinetuneReport& r = result.value();
      const auto& m = r.metrics;
      auto num = [](const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; };
      if (r.data.value("kind", "") == "sft") {
        std::string summary = r.data.value("summary", "");
        if (!summary.empty() && summary.back() != '\n') summary += '\n';
        std::printf("%s", summary.c_str());
      }
      if (a->cfg.eval_only) {
        std::printf("evaluate %s (%s): %lld parameters\n", r.card.name.c_str(), precision_name(a->cfg.precision),
                    static_cast<long long>(r.total_parameters));
      } else {
        std::printf("%s %s (%s): %lld parameters, %lld trainable (%.3f%%)\n", finetune::method_name(a->cfg.method),
                    r.card.name.c_str(), precision_name(a->cfg.precision), static_cast<long long>(r.total_parameters),
                    static_cast<long long>(r.trainable_parameters),
                    100.0 * static_cast<double>(r.trainable_parameters) / static_cast<double>(r.total_parameters));
      }
      if (a->cfg.eval_only) {
        std::printf("val loss %.4f (the model as loaded, %lld validation tokens)\n", r.final_val_loss(),
                    static_cast<long long>(r.evals.empty() ? 0 : r.evals.back().tokens));
      } else {
        std::printf("AL %.4f s/step, %.2f samples/s, ST %.3g samples/param/s, %.0f tokens/s, train loss %.4f, "
                    "val loss %.4f\n",
                    num(m["al_seconds"]["mean"]), num(m["samples_per_second"]),
                    num(m["st_samples_per_param_per_second"]), num(m["tokens_per_second"]), num(m["train_loss"]),
                    num(m["val_loss"]));
      }
      if (!r.output.empty()) std::printf("wrote %s\n", r.output.c_str());
      if (!a->report_path.empty()) {
        Status w = io::write_file_atomic(a->report_path, finetune::report_to_json(a->cfg, r).dump(1) + "\n");
        if (!w.ok()) return report_error(w.error());
      }
      return 0;
    };
  });
}

}  // namespace el::cli
