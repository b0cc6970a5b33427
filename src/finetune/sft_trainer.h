// sft_trainer.h — supervised fine-tuning: a model, SFT data, a method, and
// the fine-tuning axis's measurements (efficientllm finetune).
//
// run_finetune() does, in order:
//   1. the model: a Hugging Face directory (models/hf_model.h), a training
//      checkpoint of ours (train/checkpoint.h; its card is in its metadata),
//      or a model card with random weights (throughput runs), in the
//      precision's storage dtype on the device;
//   2. the data: SFT records through a chat template with response-only
//      loss masks (data/sft.h), or synthetic samples of random tokens, every
//      position in the loss (a throughput run's data: what the transformers
//      + peft yardstick feeds too);
//   3. the method, as a model transform before the optimizer is built:
//        full                every parameter trains
//        freeze              finetune/freeze.h (last k trainable / first k frozen)
//        lora, rslora, dora  finetune/lora.h
//        lora_plus           LoRA, and AdamW runs lora_B at loraplus_ratio x lr
//        pissa               LoRA initialised from the weights' principal SVD
//                            components (finetune/pissa.h)
//      AdamW gets only the trainable parameters, so a frozen base costs no
//      optimizer state and no weight gradient (ops skip dW of frozen weights);
//   4. the loop: per optimizer step grad_accum micro-batches (forward, tape
//      backward), the global gradient norm clipped, AdamW at a cosine
//      learning rate with linear warm-up over warmup_ratio of the steps
//      (down to 0, LLaMA-Factory's schedule); the adapters' dropout gets a
//      new mask every micro-batch and none during evaluation;
//   5. evaluation on the validation split every eval_every steps and at the
//      end (mean over its batches of the per-batch token-mean loss);
//   6. outputs: adapters as a PEFT directory, full/freeze as a Hugging Face
//      directory; with merge, the adapters folded into a full checkpoint.
// Measurements (docs/METRICS.md, the fine-tuning axis): AL per optimizer
// step (synchronised wall time, warm-up steps left out), samples/s and
// ST = samples / total parameters / s (the paper's definition, real samples
// only: padding rows are not counted), non-padding tokens/s, AMU, PCU and
// AEC from the metrics Sampler with every raw sample, training loss per step
// and validation loss per evaluation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.h"
#include "core/error.h"
#include "finetune/freeze.h"
#include "finetune/lora.h"
#include "metrics/calibrate.h"
#include "models/decoder_lm.h"
#include "train/precision.h"
#include "train/trainer.h"

namespace el::finetune {

enum class Method { full, freeze, lora, lora_plus, rslora, dora, pissa };
// "full", "freeze", "lora", "lora_plus", "rslora", "dora", "pissa"
const char* method_name(Method m);
// Accepts those names (and "loraplus", "lora+"). The error lists them.
Result<Method> parse_method(std::string_view name);
bool method_uses_adapters(Method m);

struct FinetuneConfig {
  // ---- the model: exactly one of hf_dir, init_checkpoint, card
  std::string hf_dir;           // Hugging Face checkpoint directory
  std::string init_checkpoint;  // a checkpoint.safetensors of `efficientllm train`
  std::string card;             // a model card, random weights (with synthetic data)
  // Tokenizer: a tokenizer.json / .model file or a directory holding one;
  // empty = hf_dir's. Not needed with synthetic data.
  std::string tokenizer;

  // ---- the data: SFT files, or synthetic samples
  std::vector<std::string> data;    // JSON Lines / JSON files (data/sft_records.h)
  std::string format = "auto";      // auto | alpaca | messages | openo1 | medical_o1
  std::string template_name = "alpaca";
  int64_t cutoff_len = 1024;        // tokens per sample, specials included
  double val_fraction = 0.1;        // the paper's validation size
  bool skip_bad_records = false;    // false: the first bad record is an error
  int64_t max_records = 0;          // 0 = all
  // > 0: that many samples of exactly seq_len random tokens instead of `data`
  // (and as many again / 10, at least one batch, for validation).
  int64_t synthetic_samples = 0;
  // Where `data: builtin` (records derived from the built-in corpus,
  // data/sft_builtin.h) is cached.
  std::string cache_dir = "results/cache";

  // ---- the method
  Method method = Method::lora;
  // A PEFT adapter directory to start from (ours or peft's): its adapters
  // are applied to the model and trained further (or only evaluated); the
  // method's LoRA settings then come from its adapter_config.json.
  std::string adapter_dir;
  // No training: the validation loss of the model as loaded (with the
  // adapter of adapter_dir, if given; `method` is then not applied).
  bool eval_only = false;
  LoraConfig lora;                   // r 64, alpha 128, all projections (the paper's)
  float loraplus_ratio = 16.0f;      // lora_plus: lr of lora_B / lr of lora_A
  FreezeConfig freeze;               // freeze: last 2 layers trainable by default

  // ---- the schedule
  Device device = Device::cpu();
  Precision precision = Precision::f32;
  int64_t batch_size = 4;
  int64_t grad_accum = 1;
  int64_t seq_len = 0;      // 0: each batch as long as its longest sample; > 0: fixed [B, seq_len]
  // seq_len 0: batch lengths rounded up to a multiple of this (a GPU plans and
  // tunes a GEMM per shape; one shape per sample length would retune every
  // step). Falls back to 1 when the rounding would pass the model's context.
  int64_t pad_to_multiple = 64;
  int64_t epochs = 1;
  int64_t steps = 0;        // > 0: this many optimizer steps (epochs then ignored)
  float lr = 1e-4f;
  float warmup_ratio = 0.1f;
  float weight_decay = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float grad_clip = 1.0f;   // <= 0 disables
  int64_t eval_every = 0;   // 0 = only at the end
  int64_t eval_batches = 0; // 0 = the whole validation split
  uint64_t seed = 1234;     // adapters' init, dropout, data order, validation split
  int sample_interval_ms = 100;
  int64_t timing_warmup_steps = 1;  // first steps left out of AL and the throughputs
  int64_t max_nonfinite_skips = 0;

  // ---- outputs
  std::string out_dir;  // adapter (PEFT) or full checkpoint (HF); "" = none
  bool merge = false;   // adapters: out_dir gets the merged HF model, the adapter goes to out_dir/adapter

  nlohmann::json to_json() const;
};

// Checks the config before anything is loaded: one model source, data or
// synthetic samples, positive sizes, ratios in range. Errors name the field.
Status validate_finetune_config(const FinetuneConfig& config);

struct FinetuneReport {
  ModelCard card;
  std::string model_source;  // the directory, checkpoint or card it came from
  int64_t total_parameters = 0;      // base + adapters (ST's denominator)
  int64_t trainable_parameters = 0;
  int64_t adapted_modules = 0;       // adapter methods
  std::vector<StepRecord> steps;     // tokens = non-padding tokens of the step
  std::vector<int64_t> step_samples; // real samples per step
  std::vector<EvalRecord> evals;
  nlohmann::json data;     // dataset counts and the template (or the synthetic shape)
  nlohmann::json metrics;  // summaries + raw samples, see docs/METRICS.md
  std::string output;      // what was written ("" when out_dir is empty)
  double final_val_loss() const { return evals.empty() ? NAN : evals.back().val_loss; }
};

Result<FinetuneReport> run_finetune(const FinetuneConfig& config,
                                    const TrainCallbacks& callbacks = {});

// The report as `efficientllm finetune --report` writes it and the benchmark
// runner reads it: {"axis": "finetune", "config", "model", "card",
// "parameters", "trainable_parameters", "adapted_modules", "val_loss",
// "train_loss", "data", "output", "metrics"}.
nlohmann::json report_to_json(const FinetuneConfig& config, const FinetuneReport& report);

}  // namespace el::finetune
