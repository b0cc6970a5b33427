// infer_experiment.h — one row of the inference axis: a model at one
// precision (fp32 / bf16 / fp16 compute, or int8 / int4 weight-only by RTN or
// GPTQ), its quality (validation perplexity, multiple-choice accuracy) and
// its speed, memory and energy (infer_bench.h). What `efficientllm generate
// --bench` and the runner's infer rows run; the report JSON is the same.
//
// Quality is measured only where it means something: perplexity needs the
// validation shards of the data the model was trained on, the choice task a
// tokenizer; a model with random weights (a card) gets null quality with the
// reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/infer_bench.h"
#include "infer/model_loader.h"
#include "quant/quantize_model.h"

namespace el::infer {

struct InferExperimentConfig {
  ModelSource source;
  std::string tokenizer;         // for the choice task (default: the source's)
  Device device = Device::cpu();
  // f32 | bf16 | fp16 | int8 | int4 (weight-only; activations in act_dtype).
  std::string precision = "bf16";
  std::string act_precision = "bf16";  // activations of int8 / int4 (f32 | bf16 | fp16)
  quant::QuantMethod method = quant::QuantMethod::rtn;
  int64_t group_size = 128;
  bool symmetric = true;
  std::vector<std::string> calibration = {"builtin"};  // GPTQ: "builtin" or shards / dataset dirs
  int64_t calibration_samples = 128;
  int64_t calibration_seq_len = 512;
  // Perplexity over these validation shards (empty: not measured).
  std::vector<std::string> val_shards;
  int64_t eval_seq_len = 0;     // 0 = the card's context
  int64_t eval_tokens = 65536;  // at most this many predicted tokens (0 = all)
  // "builtin:corpus-cloze", a JSON Lines task file, or "" (not measured).
  std::string choice_task;
  int64_t choice_items = 0;     // 0 = all
  InferBenchConfig bench;
};

// Checks the fields before anything is loaded (the Error names the field).
Status validate_infer_experiment(const InferExperimentConfig& c);

// "int4" -> 4, "int8" -> 8, float precisions -> their width (16 / 32).
int precision_bits(const std::string& precision);

// The model of a row, ready to run: loaded at the activation precision and,
// for int8 / int4, quantized (RTN or GPTQ). quantization: the quantize
// report (or the quantized file's metadata; null for a float row).
struct PreparedModel {
  LoadedModel loaded;
  nlohmann::json quantization;
};
Result<PreparedModel> prepare_model(const InferExperimentConfig& c);

// Loads, quantizes (int8 / int4), evaluates and benchmarks. The JSON:
// {card, parameters, precision, quantization (report or null), quality
// {perplexity, choice}, bench (infer_bench.h to_json), metrics {headline
// numbers: it_tokens_per_second at each batch, ttft/tpot p50, amu_gb,
// avg_power_w, j_per_token, perplexity, choice_acc, weight_bytes, bits}}.
Result<nlohmann::json> run_infer_experiment(const InferExperimentConfig& c);

// The command line of `efficientllm generate --bench` for `c`, writing its
// report to report_path (the runner's isolated children).
std::vector<std::string> infer_command_line(const InferExperimentConfig& c, const std::string& report_path);

nlohmann::json to_json(const InferExperimentConfig& c);

}  // namespace el::infer
