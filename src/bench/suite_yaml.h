// suite_yaml.h — benchmark suites as YAML files (configs/suites/<name>.yaml):
// parsing, expansion of list-valued fields into the cartesian product (as
// llama-bench does with comma lists), per-experiment status, the stable hash
// of each resolved experiment, and a FLOPs-based time estimate for --dry-run.
//
// A suite file:
//   name: quick                       # letters, digits, . _ - (names result files)
//   description: one line
//   sized_for: cpu                    # cpu | cuda
//   repetitions: 1                    # measured runs per experiment (>= 1)
//   warmup_steps: 1                   # steps left out of the timing summaries
//   min_duration_s: 0                 # minimum measured time per run (>= 0)
//   allow_missing: false              # true: an unknown card / absent dataset becomes the
//                                     # experiment's status instead of an error (paper suites)
//   mfu_probe: {label: ..., card: small, batch_size: 8, seq_len: 256, steps: 3}   # optional
//   defaults: {batch_size: 16, seq_len: 128}   # fields for every experiment whose axis has them
//   experiments:
//     - axis: pretrain                # pretrain | finetune | infer
//       label: "{card} b{batch_size}" # optional; {field} is replaced by the resolved value
//       card: [tiny, tiny-gqa]        # any field may be a list: the product is expanded
//       batch_size: [8, 16]
// Without a label, labels are made from the fields that are lists ("tiny-gqa b16");
// a fixed label on an entry that expands to several experiments gets that suffix.
// Expansion order: entries in file order; within an entry, the product with the
// first list-valued field varying slowest (file order of the fields).
//
// Fields per axis (kPretrainFields etc. in suite_yaml.cpp hold the full lists):
//   pretrain: card, dataset (builtin | prepared dataset dir), vocab_size (builtin
//             tokenizer), batch_size, seq_len, grad_accum, steps, lr, min_lr, warmup,
//             eval_batches, precision (f32|bf16|f16), seed
//   finetune: model (pretrained:<label of a pretrain experiment above> | Hugging Face
//             directory), dataset (builtin | SFT JSON Lines file), method, batch_size,
//             grad_accum, lr, epochs, steps (> 0 replaces epochs), seq_len (the
//             samples' cutoff length), precision, lora_r, lora_alpha
//   infer:    model (pretrained:<label of a pretrain experiment above> | a model
//             card: random weights, speed only | Hugging Face directory or a name
//             under $EL_MODELS_DIR), precision (f32|bf16|fp16|int8|int4),
//             act_precision (activations of int rows: f32|bf16|fp16), quant_method
//             (rtn|gptq), group_size (0 = per channel), scheme
//             (symmetric|asymmetric), batch_sizes ("1,8,32"; when not set, the
//             integer batch_size), prompt_len, gen_len, eval_tokens (perplexity),
//             choice_task ("builtin:corpus-cloze", a JSON Lines file relative to
//             the suite, or "" for none), choice_items (0 = all), calib_samples,
//             calib_seq_len (GPTQ). The resolved fields hold batch_sizes only.
// All three axes run in this build (infer rows: bench/runner_infer.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/results.h"
#include "bench/suite.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "nn/model_card.h"
#include "train/trainer.h"

namespace el::bench {

enum class Axis { pretrain, finetune, infer };
const char* axis_name(Axis a);  // "pretrain", "finetune", "infer"

// A finetune or infer experiment's model "pretrained:<label>": the checkpoint
// the pretrain experiment <label> of the same suite writes (the runner keeps it).
inline constexpr const char* kPretrainedPrefix = "pretrained:";

// An infer experiment's "model_kind" (in its config): where its model comes from.
inline constexpr const char* kModelPretrained = "pretrained";  // pretrained:<label>
inline constexpr const char* kModelCard = "card";              // random weights
inline constexpr const char* kModelHf = "hf";                  // a Hugging Face directory

// "1,8,32" -> {1, 8, 32}: positive integers separated by commas (spaces
// around them allowed). `where` names the field in the error.
Result<std::vector<int64_t>> parse_batch_sizes(const std::string& text, const std::string& where);

// What a model card allows an infer row, as a message without a location
// ("" when it fits): prompt_len + gen_len within max_seq_len; for int8 /
// int4, group_size (0 = per channel) dividing the input width of every
// projection (d_model, n_head x head_dim, d_ff), and even widths for int4.
std::string infer_card_problem(const ModelCard& card, const std::string& precision, int64_t group_size,
                               int64_t prompt_len, int64_t gen_len);

// One experiment after expansion: everything the runner needs, as data.
struct ExpandedExperiment {
  Axis axis = Axis::pretrain;
  std::string label;  // unique within the suite
  // The resolved configuration: {"axis": ..., "fields": {every field of the axis,
  // defaults filled in}, "measure": {"repetitions", "warmup_steps", "min_duration_s"}}.
  // The label and the suite name are not part of it, so renaming re-uses results.
  nlohmann::json config;
  // config_hash(config) (bench/results.h): SHA-256 of the canonical dump
  // (sorted keys), so it depends only on the resolved values.
  std::string hash;
  bool supported = true;   // false: shown and recorded, never run
  bool mfu_probe = false;  // the suite's MFU probe (runner.h: plan_suite adds it); no PPL shown
  std::string status;      // "ready" or "not supported by this build: ..." / "missing dataset ..."
  std::string where;       // "path:LINE" of the experiment's entry

  // The value of a resolved field (null json if the axis has no such field).
  const nlohmann::json& field(const std::string& key) const;
};

struct SuiteFile {
  std::string path;  // where it was read from ("" for text)
  std::string name;
  std::string description;
  DeviceKind sized_for = DeviceKind::cpu;
  int64_t repetitions = 1;
  int64_t warmup_steps = 1;
  double min_duration_s = 0;
  bool allow_missing = false;
  std::optional<MfuProbe> mfu_probe;
  std::vector<ExpandedExperiment> experiments;  // expansion order
  // GEMM dtype of the MFU calibration; empty = each experiment's own rule
  // (suite_calibration_dtype in suite.h). Not a YAML key: only a C++ spec
  // (SuiteSpec::calibration_dtype) sets it.
  std::optional<DType> calibration_dtype;
};

// Parses and expands a suite. `source` names the file in errors ("path:LINE");
// relative dataset directories are resolved against `base_dir`.
// Errors: YAML syntax, unknown keys (with "did you mean"), wrong types, bad
// choices, an empty experiment list or empty value list, repetitions < 1,
// warmup_steps < 0, min_duration_s < 0, a bad name, duplicate labels, unknown
// {placeholders} in a label, and (unless allow_missing) an unknown card or an
// absent dataset directory. Card checks for the built-in dataset: vocab_size
// equal to the card's, seq_len within max_seq_len.
Result<SuiteFile> parse_suite_yaml(const std::string& text, const std::string& source,
                                   const std::string& base_dir = ".");
Result<SuiteFile> load_suite_file(const std::string& path);

// configs/suites directories (next to each configs/models search directory).
std::vector<std::string> suite_search_dirs();
// Names of the suite files found there, sorted.
std::vector<std::string> builtin_suite_file_names();
// A name (configs/suites/<name>.yaml) or a path (contains '/' or ends in .yaml).
Result<SuiteFile> find_suite_file(const std::string& name_or_path);

// The experiments whose label matches `pattern`: an ECMAScript regex searched
// case-insensitively (a plain substring is a valid regex); if it is not a valid
// regex, a case-insensitive substring match. An error if nothing matches.
Result<std::vector<ExpandedExperiment>> filter_experiments(const std::vector<ExpandedExperiment>& all,
                                                           const std::string& pattern);

// The TrainConfig of a pretrain experiment. data_dir: the directory of the
// built-in dataset (the runner prepares it) used when dataset is "builtin".
// An error for other axes or an unsupported experiment.
Result<TrainConfig> pretrain_train_config(const ExpandedExperiment& e, Device device,
                                          const std::string& builtin_data_dir);

// The suite as a SuiteSpec: only when every experiment is a ready pretrain run
// on the built-in dataset with one shared schedule (only the card differs) and
// repetitions is 1. The error says which experiment differs. The runner does
// not need it (it runs SuiteFiles); a test uses it to keep the quick and
// gpu-lite files equal to their C++ specs.
Result<SuiteSpec> suite_file_to_spec(const SuiteFile& suite);

// The other direction, so that the C++ specs run through the same runner as
// suite files: the spec as suite-file YAML (repetitions 1, warmup_steps 1,
// min_duration_s 0, the spec's schedule in `defaults`, one entry per variant),
// and that text parsed (source "<built-in NAME>").
std::string suite_spec_to_yaml(const SuiteSpec& spec);
Result<SuiteFile> suite_spec_to_file(const SuiteSpec& spec);

// What a result record keeps of its suite ("suite_spec", not hashed): name,
// description, path, sized_for, the measurement rules, the MFU probe and the
// labels of the suite's experiments.
nlohmann::json suite_file_to_json(const SuiteFile& suite);

// The throughput the time estimate assumes on a device kind, in FLOP/s:
// an effective (not peak) rate, see suite_yaml.cpp for where the numbers come from.
double assumed_flops_per_second(DeviceKind kind);
// The memory bandwidth the infer estimate assumes for decode steps, in
// bytes/s (effective, not peak).
double assumed_bytes_per_second(DeviceKind kind);
// The infer part of estimate_seconds (suite_infer.cpp).
std::optional<double> estimate_infer_seconds(const ExpandedExperiment& e, DeviceKind kind);
// Estimated wall time of one experiment in seconds (all repetitions):
// pretrain and finetune: steps x B x T x grad_accum x training FLOPs per
// token / assumed rate; infer: forward FLOPs of the prompts, generations,
// perplexity, choice and GPTQ calibration tokens / assumed rate, plus every
// decode step reading the weights at the assumed bandwidth. Empty when the
// card is not known (a missing card, a Hugging Face directory).
std::optional<double> estimate_seconds(const ExpandedExperiment& e, DeviceKind kind);

}  // namespace el::bench
