// suite.h — a benchmark suite as data (SuiteSpec) and the one runner of
// `efficientllm bench` (run_suite).
//
// A suite pretrains a few variants (model cards) with the same token budget
// on the built-in corpus (tokenizer and shards made once and cached under the
// results directory), optionally times a few steps of a bigger card for its
// MFU, prints the comparison table with the corpus's unigram baseline, and
// writes every run as one JSON Lines record plus a CSV of the table
// (results/<suite>-<run_id>.{jsonl,csv}). The built-in suites (`quick`,
// `gpu-lite`) are in bench/builtin_suites.h. SuiteSpec is a plain struct with
// only names and numbers so that a YAML suite file can fill it later.
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
  Precision precision = Precision::f32;
  // GEMM dtype of the MFU calibration. Empty = what the trainer would pick:
  // f32 on the CPU (it computes every dtype in f32), the precision's dtype on
  // a GPU — see suite_calibration_dtype().
  std::optional<DType> calibration_dtype;
  std::optional<MfuProbe> mfu_probe;
};

struct SuiteOptions {
  std::string results_dir = "results";
  Device device = Device::cpu();
  int64_t steps = 0;          // override the suite's steps per variant (0 = the spec's)
  bool include_probe = true;  // run the spec's MFU probe, if it has one
  // Run each experiment as `<self_exe> train ...` in its own process
  // (bench/child_process.h): clean memory accounting per run, and a crash,
  // an out-of-memory kill or a timeout becomes a failed row with its reason
  // and stderr tail. self_exe: the efficientllm binary (/proc/self/exe).
  bool isolate = false;
  std::string self_exe;
  double timeout_s = 0;  // per experiment, isolated runs only; 0 = none
};

// The `efficientllm train` arguments that reproduce cfg in a child process
// (the suite's calibrated peak passed on, so every MFU has one denominator).
std::vector<std::string> train_command_line(const TrainConfig& cfg, const std::string& report_path);

struct SuiteResult {
  SuiteSpec spec;  // as run (steps after the override)
  std::vector<nlohmann::json> records;  // one per experiment (also in the JSONL file)
  double unigram_perplexity = 0;
  int64_t train_tokens = 0;    // tokens in the built-in corpus's train split
  int64_t tokens_per_run = 0;  // each variant's token budget: steps x B x T
  double epochs = 0;           // tokens_per_run / train_tokens
  double peak_gflops = 0;      // the suite's calibrated GEMM peak (MFU denominator)
  std::string peak_dtype;      // the dtype that GEMM ran in
  std::optional<double> peak_datasheet_gflops;  // GPU only: the vendor's number, for context
  std::string jsonl_path, csv_path;
  std::string table;  // the printed table
};

// Checks the spec before anything runs: a name usable in a file name, at
// least one variant, positive sizes, 0 < min_lr <= lr, and that every card
// (variants and probe) is found, has the suite's vocab_size and allows
// seq_len tokens. The error names the suite and the field or card at fault.
Status validate_suite_spec(const SuiteSpec& spec);

// The suite's steps after the --steps override. The warmup is kept as the
// spec has it unless it would not end before the last step; then it becomes
// a tenth of the steps (an override to a few steps still reaches the peak).
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

// Runs the whole suite. Fails before training anything if the spec is invalid
// or the results directory is not writable; a failing experiment is recorded
// with its error and the suite goes on.
Result<SuiteResult> run_suite(const SuiteSpec& spec, const SuiteOptions& options);

}  // namespace el::bench
