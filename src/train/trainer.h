// trainer.h — the pretraining loop and its measurements.
//
// run_training() builds the model from its card, streams batches from a
// prepared dataset (data/), and for each optimizer step runs grad_accum
// micro-batches (forward, tape backward), clips the global gradient norm,
// applies AdamW at the cosine-scheduled learning rate, and times the step
// after synchronising the device. `precision` picks f32, bf16 (f32 master
// weights in AdamW) or f16 (master weights + dynamic loss scaling: a step
// whose scaled gradients overflow is skipped and the scale halves), see
// train/precision.h and train/loss_scaler.h. Every eval_every steps it measures the
// validation loss over fixed windows; checkpoints go to out_dir. A metrics
// Sampler thread records memory, energy and utilisation for the whole run.
// The returned TrainReport holds the raw per-step samples and the summaries
// the benchmark prints (AL, TT, MFU, AMU, AEC, PPL).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "metrics/calibrate.h"
#include "models/decoder_lm.h"
#include "train/precision.h"

namespace el {

struct TrainConfig {
  std::string model = "tiny";    // model card name or YAML path
  std::string data_dir;          // directory made by `efficientllm data prepare`
  Device device = Device::cpu();
  int64_t batch_size = 8;        // micro-batch B
  int64_t seq_len = 128;         // T
  int64_t grad_accum = 1;        // micro-batches per optimizer step
  int64_t steps = 100;           // optimizer steps of the whole schedule
  int64_t stop_after = 0;        // stop (with a checkpoint) after this many steps; 0 = run to `steps`
  float lr = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_steps = 10;
  float weight_decay = 0.1f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float grad_clip = 1.0f;        // max global grad norm; <= 0 disables
  int64_t eval_every = 0;        // 0 = only at the end
  int64_t eval_batches = 16;     // validation windows of B x T tokens
  int64_t checkpoint_every = 0;  // 0 = only at the end (when out_dir is set)
  std::string out_dir;           // checkpoints: <out_dir>/checkpoint.safetensors
  std::string resume;            // checkpoint to continue from
  uint64_t seed = 1234;          // weights and data order
  int sample_interval_ms = 100;  // metrics sampler period
  double calibration_seconds = 0.5;  // calibration GEMM time for the MFU peak
  // A peak measured earlier (a suite calibrates once for all its runs, so
  // their MFUs share one denominator); calibrated at start when empty.
  std::optional<metrics::PeakCalibration> peak;
  int64_t timing_warmup_steps = 1;  // first steps left out of the AL/TT/MFU summaries
  int64_t max_nonfinite_skips = 0;  // steps with a NaN/Inf loss to skip before stopping
  int64_t profile_step = 0;  // 1-based step bracketed for an external profiler (0 = none)
  // Storage dtype of parameters, activations and gradients (f32 reference,
  // bf16 or f16 mixed precision with f32 master weights).
  Precision precision = Precision::f32;
  float loss_scale_init = 65536.0f;           // f16 only: first loss scale (2^16)
  int64_t loss_scale_growth_interval = 2000;  // f16 only: finite steps before doubling

  nlohmann::json to_json() const;
};

struct StepRecord {
  int64_t step = 0;      // 1-based optimizer step
  double loss = 0;       // mean over the step's micro-batches
  double lr = 0;
  double grad_norm = 0;  // before clipping, loss scale divided out (NaN when skipped)
  double seconds = 0;    // synchronised wall time of the whole step
  int64_t tokens = 0;
  double loss_scale = 1;  // backward seed of this step (f16 loss scaling; else 1)
  bool skipped = false;   // f16: gradients overflowed, no optimizer update
};

struct EvalRecord {
  int64_t step = 0;
  double val_loss = 0;
  double perplexity = 0;
  int64_t tokens = 0;
};

struct TrainReport {
  ModelCard card;
  int64_t parameters = 0;
  FlopsPerToken flops;
  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evals;
  nlohmann::json metrics;  // summaries + raw sampler samples, see docs/METRICS.md
  std::string checkpoint;  // last checkpoint written, if any
  double final_val_loss() const { return evals.empty() ? NAN : evals.back().val_loss; }
  double final_perplexity() const { return evals.empty() ? NAN : evals.back().perplexity; }
};

struct TrainCallbacks {
  std::function<void(const StepRecord&, const TrainConfig&)> on_step;
  std::function<void(const EvalRecord&)> on_eval;
};

Result<TrainReport> run_training(const TrainConfig& config, const TrainCallbacks& callbacks = {});

}  // namespace el
