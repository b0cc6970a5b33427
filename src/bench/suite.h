// suite.h — a benchmark suite as a C++ struct (SuiteSpec): the form the
// built-in suites `quick` and `gpu-lite` are written in (bench/builtin_suites.h),
// with its validation and the per-variant TrainConfig.
//
// A SuiteSpec pretrains a few variants (model cards) with the same token
// budget on the built-in corpus, optionally with an MFU probe (a few timed
// steps of a bigger card), then optionally fine-tunes one of them
// (FinetuneSection) and runs inference sections (InferSection: a variant or
// a card at several precisions). It is a plain struct of names and numbers; the
// runner (bench/runner.h) converts it to a suite file (suite_spec_to_file in
// bench/suite_yaml.h) and runs it like any other suite.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "train/precision.h"
#include "train/trainer.h"

namespace el::bench {

// One compared experiment: the table's "variant" column and the card it trains.
struct SuiteVariant {
  std::string label;  // "MHA"
  std::string card;   // built-in card name (configs/models/<card>.yaml) or a YAML path
};

// A few timed steps of a larger card, only for its MFU (no quality number):
// the compared variants may be too small to keep the machine busy.
struct MfuProbe {
  std::string label;  // "small (MFU probe)"
  std::string card;
  int64_t batch_size = 8;
  int64_t seq_len = 256;
  int64_t steps = 3;
};

// The fine-tuning section of a built-in suite: the checkpoint that one of the
// variants just pretrained, fine-tuned with each method on the built-in SFT
// records (data/sft_builtin.h), all with the same schedule.
struct FinetuneSection {
  std::string source;                // the label of the pretrained variant ("GQA")
  std::vector<std::string> methods;  // finetune/sft_trainer.h method names
  int64_t batch_size = 8;
  int64_t seq_len = 128;             // the cutoff length of a sample
  int64_t steps = 60;                // optimizer steps per method
  float lr = 1e-3f;
  int64_t lora_r = 8;
  int64_t lora_alpha = 16;
  Precision precision = Precision::f32;
};

// One row of an infer section: the model at one precision.
struct InferVariant {
  std::string label;                // the row's label ("GQA int4 gptq")
  std::string precision;            // f32 | bf16 | fp16 | int8 | int4
  std::string quant_method = "rtn";  // int8 / int4: rtn | gptq
};

// The inference section of a built-in suite: one model (a variant the suite
// has just pretrained, "pretrained:<label>", or a model card with random
// weights: speed only) at several precisions, all with the same measurement
// (infer/infer_experiment.h). The fields are the suite file's infer fields
// (suite_yaml.h).
struct InferSection {
  std::string model;                 // "pretrained:GQA" or a card name
  std::vector<InferVariant> rows;
  std::string act_precision = "bf16";  // activations of the int rows
  int64_t group_size = 128;
  bool symmetric = true;
  std::string batch_sizes = "1,8,32";  // comma-separated
  int64_t prompt_len = 128;
  int64_t gen_len = 256;
  int64_t eval_tokens = 65536;       // perplexity tokens (pretrained models)
  std::string choice_task = "builtin:corpus-cloze";  // "" = none
  int64_t choice_items = 200;        // 0 = all
  int64_t calib_samples = 128;       // GPTQ calibration windows
  int64_t calib_seq_len = 512;
};

struct SuiteSpec {
  std::string name;         // "quick"; also the result files' prefix and the records' "suite"
  std::string description;  // one line printed above the table
  // The device the sizes were chosen for; running elsewhere is allowed, with
  // a warning (a GPU-sized suite takes days on a CPU).
  DeviceKind sized_for = DeviceKind::cpu;
  std::vector<SuiteVariant> variants;  // all share the schedule below
  int vocab_size = 4096;               // pieces of the built-in SentencePiece tokenizer
  int64_t batch_size = 16;             // B
  int64_t seq_len = 128;               // T
  int64_t steps = 400;                 // optimizer steps per variant
  float lr = 3e-3f;                    // peak learning rate (cosine to min_lr)
  float min_lr = 3e-4f;
  int64_t warmup_steps = 15;
  int64_t eval_batches = 32;           // validation windows of B x T tokens
  int64_t repetitions = 1;             // measured runs per variant (merged, 95% CI)
  Precision precision = Precision::f32;
  // GEMM dtype of the MFU calibration. Empty = what the trainer would pick:
  // f32 on the CPU (it computes every dtype in f32), the precision's dtype on
  // a GPU — see suite_calibration_dtype().
  std::optional<DType> calibration_dtype;
  std::optional<MfuProbe> mfu_probe;
  std::optional<FinetuneSection> finetune;  // run after the variants
  std::vector<InferSection> infer;           // run after the fine-tuning rows
};

// Checks the spec before anything runs: a name usable in a file name, at
// least one variant, positive sizes, 0 < min_lr <= lr, and that every card
// (variants and probe) is found, has the suite's vocab_size and allows
// seq_len tokens; an infer section's model is a variant ("pretrained:<label>")
// or a card, its rows have known precisions and methods and distinct labels,
// its batch sizes parse and its prompt + generation fit the card's context.
// The error names the suite and the field or card at fault.
Status validate_suite_spec(const SuiteSpec& spec);

// The spec with its steps overridden. The warmup is kept as the spec has it
// unless it would not end before the last step; then it becomes a tenth of
// the steps (an override to a few steps still reaches the peak). The runner
// applies the same rule to suite files (runner.h: plan_suite, for --steps).
SuiteSpec apply_step_override(SuiteSpec spec, int64_t steps);

// The TrainConfig of one variant: the spec's schedule on `device`, data from
// data_dir. Every variant gets the same B, T and steps (same token budget).
TrainConfig variant_train_config(const SuiteSpec& spec, const SuiteVariant& variant, Device device,
                                 const std::string& data_dir);

// The calibration GEMM's dtype: spec.calibration_dtype when set, else f32 on
// the CPU and precision_dtype(spec.precision) on a GPU (as run_training does,
// so the suite's MFU denominator is the one a single `train` run would use).
DType suite_calibration_dtype(const SuiteSpec& spec, Device device);

// The spec as JSON (every field; recorded in each result as "suite_spec").
nlohmann::json suite_spec_to_json(const SuiteSpec& spec);

}  // namespace el::bench
