// runner_infer.h — the runner's inference rows (internal to bench/): an infer
// experiment of a suite file as an InferExperimentConfig
// (infer/infer_experiment.h), its identity for the config hash, the run
// object of one repetition, and the rows' own table with the paper's MCR.
//
// The model of a row is "pretrained:<label>" (the checkpoint the runner keeps
// for that pretrain experiment, with its dataset's tokenizer, validation
// shards for perplexity and train shards for GPTQ), a model card (random
// weights: speed only, quality null with the reason) or a Hugging Face
// directory (its own tokenizer; GPTQ on the built-in corpus; no perplexity).
// Each repetition runs the whole experiment (quality, then the speed bench of
// `efficientllm generate --bench`) in process or as that command in a child.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/runner.h"
#include "bench/suite_yaml.h"
#include "core/device.h"
#include "core/error.h"
#include "infer/infer_experiment.h"

namespace el::bench {

// What the runner resolves for a "pretrained:<label>" row from its source.
struct InferPretrainedSource {
  std::string checkpoint;               // <results>/checkpoints/<hash>/checkpoint.safetensors
  std::string tokenizer;                // the source dataset's tokenizer
  std::vector<std::string> val_shards;  // its validation shards (perplexity)
  std::string dataset_dir;              // its directory (GPTQ calibrates on the train shards)
};

// The fields of a ready infer experiment as an InferExperimentConfig on
// `device`. `src` is used for pretrained rows only. The bench's warm-up
// generations are the suite's warmup_steps. Float rows get the quantization
// fields' defaults and act_precision = precision (they are unused), so that
// settings meant for the int rows do not change their config hash.
infer::InferExperimentConfig infer_experiment_config(const ExpandedExperiment& e, Device device,
                                                     const InferPretrainedSource& src);

// The identity of a Hugging Face directory for a config hash: the SHA-256 of
// its config.json and the names and sizes of its *.safetensors files.
Result<nlohmann::json> hf_dir_identity(const std::string& dir);

// The identity of a choice task: {"builtin": name, "version": N}, {"file":
// name, "sha256": ...} or null ("").
Result<nlohmann::json> choice_task_identity(const std::string& task);

// The resolved config of an infer row: every InferExperimentConfig field but
// the paths (infer::to_json without "model"; "calibration" as what it is),
// the model's identity ({"pretrained": source config hash}, {"card": YAML,
// "seed"} or {"hf": hf_dir_identity}), the choice task's identity, the device
// kind and the measurement rules.
Result<nlohmann::json> infer_resolved_config(const ExpandedExperiment& e, const infer::InferExperimentConfig& c,
                                             const nlohmann::json& model_identity, bool isolated);

// Fills one repetition's run object from the experiment's report (the JSON of
// run_infer_experiment / `generate --bench --report`): card, parameters,
// precision, quantization, quality, bench, metrics; "perplexity" =
// metrics.perplexity; metrics.memory_energy = the largest batch's (so the
// headline AMU / AEC / energy pointers work); metrics.bits_per_weight = the
// precision's bits for float rows; measured_seconds.
void fill_infer_run(nlohmann::json& run, const nlohmann::json& report);

// The timed generations' wall time of a run object (every batch size's
// bench.batches[].raw.total_s summed): what min_duration_s counts.
double infer_measured_seconds(const nlohmann::json& run);

// ---- MCR (model compression rate) ------------------------------------------

// One row's inputs; NaN when not measured.
struct McrInput {
  std::string model;      // rows with the same model are compared
  std::string precision;  // "bf16" marks the reference row
  double bits = NAN;      // nominal bits per weight (4, 8, 16, 32)
  double acc = NAN;       // multiple-choice accuracy
  double perplexity = NAN;
  double weight_bytes = NAN;  // bytes a decode step reads for the weights
};
struct McrResult {
  double mcr = NAN;        // (16 / bits) x quality ratio
  double mcr_bytes = NAN;  // (weight bytes of bf16 / this) x quality ratio
};
// Per row, against the first bf16 row of the same model: the quality ratio
// is acc / acc(bf16) when both have an accuracy, else perplexity(bf16) /
// perplexity; the bf16 row itself is 1. NaN without a bf16 row or a quality.
std::vector<McrResult> compute_mcr(const std::vector<McrInput>& rows);

// The infer rows of a suite as their own table (precision, bits/weight, PPL,
// accuracy, IT at each batch size, TTFT, TPOT, AMU, J/token, MCR, MCR from
// bytes) with a note on MCR; "" when there are none.
std::string render_infer_table(const std::vector<SuiteRow>& rows);

}  // namespace el::bench
