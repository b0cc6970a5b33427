#include "infer/infer_experiment.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "data/choice_task.h"
#include "data/tokenizer_factory.h"
#include "infer/eval.h"
#include "metrics/stats.h"
#include "quant/calibration.h"

namespace el::infer {
namespace {

using nlohmann::json;

// The float dtype of a precision name ("fp16" as the paper writes it).
Result<DType> float_dtype(const std::string& p, const char* field) {
  if (p == "f32" || p == "fp32") return DType::f32;
  if (p == "bf16") return DType::bf16;
  if (p == "f16" || p == "fp16") return DType::f16;
  return make_error(fmt::format("unknown precision '{}'", p), std::string("infer config: ") + field,
                    "use f32, bf16 or fp16 (and int8 / int4 for the weights)");
}

bool is_int(const std::string& p) { return p == "int4" || p == "int8"; }

json null_with_reason(json& parent, const std::string& key, const std::string& reason) {
  parent[key] = nullptr;
  parent[key + "_unavailable_reason"] = reason;
  return parent;
}

}  // namespace

int precision_bits(const std::string& p) {
  if (p == "int4") return 4;
  if (p == "int8") return 8;
  if (p == "f32" || p == "fp32") return 32;
  return 16;
}

Status validate_infer_experiment(const InferExperimentConfig& c) {
  EL_TRY(c.source.validate());
  if (!is_int(c.precision)) {
    Result<DType> d = float_dtype(c.precision, "precision");
    if (!d.ok()) return d.error();
  }
  Result<DType> a = float_dtype(c.act_precision, "act_precision");
  if (!a.ok()) return a.error();
  if (!c.source.quantized_dir.empty() && is_int(c.precision)) {
    return make_error("a quantized directory is already quantized; give its activation precision (bf16, fp16, f32)",
                      "infer config: precision");
  }
  if (c.eval_tokens < 0 || c.choice_items < 0) return make_error("eval_tokens and choice_items must be >= 0", "infer config");
  return Status();
}

Result<PreparedModel> prepare_model(const InferExperimentConfig& c) {
  EL_TRY(validate_infer_experiment(c));
  // Weights of an int row load in the activation dtype, then get quantized.
  EL_TRY_ASSIGN(DType act, float_dtype(is_int(c.precision) ? c.act_precision : c.precision, "precision"));
  PreparedModel out;
  EL_TRY_ASSIGN(out.loaded, load_model(c.source, c.device, act));
  out.quantization = out.loaded.quantization;
  if (!is_int(c.precision)) return out;
  DecoderLM& model = *out.loaded.model;
  quant::QuantizeOptions q;
  q.spec.bits = precision_bits(c.precision);
  q.spec.group_size = c.group_size;
  q.spec.symmetric = c.symmetric;
  q.method = c.method;
  if (c.method == quant::QuantMethod::gptq) {
    quant::CalibrationOptions co;
    co.sources = c.calibration;
    co.samples = c.calibration_samples;
    co.seq_len = std::min<int64_t>(c.calibration_seq_len, model.card().max_seq_len);
    co.tokenizer = !c.tokenizer.empty() ? c.tokenizer : out.loaded.tokenizer_dir;
    co.vocab_size = static_cast<int>(model.card().vocab_size);
    EL_TRY_ASSIGN(quant::CalibrationData cal, quant::load_calibration(co));
    q.calibration = cal.ids;
  }
  EL_TRY_ASSIGN(quant::QuantizeReport qr, quant::quantize_model(model, q));
  out.quantization = quant::report_to_json(qr);
  return out;
}

Result<json> run_infer_experiment(const InferExperimentConfig& c) {
  EL_TRY_ASSIGN(PreparedModel prepared, prepare_model(c));
  LoadedModel& loaded = prepared.loaded;
  DecoderLM& model = *loaded.model;
  json report = {{"card", model.card().name}, {"parameters", model.num_parameters()}, {"precision", c.precision},
                 {"model", c.source.describe()}, {"device", c.device.str()}};
  json metrics = json::object();
  report["quantization"] = prepared.quantization;
  if (prepared.quantization.is_object() && prepared.quantization.contains("bits_per_weight")) {
    metrics["bits_per_weight"] = prepared.quantization["bits_per_weight"];
    metrics["quantize_seconds"] = prepared.quantization.value("seconds", json());
  }
  metrics["bits"] = precision_bits(c.precision);
  metrics["weight_bytes"] = decode_weight_bytes(model);

  // ---- quality
  json quality = json::object();
  if (!c.val_shards.empty()) {
    EvalOptions eo;
    eo.seq_len = c.eval_seq_len;
    eo.max_tokens = c.eval_tokens;
    EL_TRY_ASSIGN(PerplexityResult p, evaluate_perplexity(model, c.val_shards, eo));
    quality["perplexity"] = {{"perplexity", p.perplexity}, {"mean_nll", p.mean_nll}, {"tokens", p.tokens},
                             {"seq_len", p.seq_len}, {"seconds", p.seconds}};
    metrics["perplexity"] = p.perplexity;
  } else {
    null_with_reason(metrics, "perplexity",
                     c.source.card.empty() ? "no validation shards given" : "random weights (a model card)");
  }
  const std::string tok_path = !c.tokenizer.empty() ? c.tokenizer : loaded.tokenizer_dir;
  if (!c.choice_task.empty() && !tok_path.empty()) {
    EL_TRY_ASSIGN(std::unique_ptr<data::TextTokenizer> tok, data::load_text_tokenizer(tok_path));
    const std::string prefix = "builtin:";
    Result<data::ChoiceTask> task = c.choice_task.rfind(prefix, 0) == 0
                                        ? data::builtin_choice_task(c.choice_task.substr(prefix.size()))
                                        : data::read_choice_task(c.choice_task);
    if (!task.ok()) return task.error();
    ChoiceOptions co;
    co.max_items = c.choice_items;
    // lm-eval's acc_mutual_info too: on in-domain distractors (corpus-cloze)
    // plain acc mostly measures how likely each choice is on its own.
    co.mutual_info = true;
    // Our SentencePiece models never saw BOS in training (EOS separates documents).
    if (!c.source.checkpoint.empty() && tok->eos_id()) co.prefix_token = tok->eos_id();
    EL_TRY_ASSIGN(ChoiceResult r, evaluate_choice(model, *tok, *task, co));
    quality["choice"] = {{"task", r.task},         {"items", r.items},           {"acc", r.acc},
                         {"acc_norm", r.acc_norm}, {"acc_stderr", r.acc_stderr}, {"acc_norm_stderr", r.acc_norm_stderr},
                         {"acc_mutual_info", r.acc_mutual_info}, {"truncated_items", r.truncated_items},
                         {"seconds", r.seconds}};
    metrics["choice_acc"] = r.acc;
    metrics["choice_acc_norm"] = r.acc_norm;
    metrics["choice_acc_mutual_info"] = r.acc_mutual_info;
  } else {
    null_with_reason(metrics, "choice_acc",
                     !c.source.card.empty() && tok_path.empty() ? "random weights (a model card)"
                     : c.choice_task.empty()                    ? "no multiple-choice task given"
                                                                : "no tokenizer for the task");
  }
  report["quality"] = quality;

  // ---- speed, memory, energy
  EL_TRY_ASSIGN(InferBenchReport b, run_infer_bench(model, c.bench));
  report["bench"] = to_json(b);
  json by_batch = json::object();
  for (const InferBatchResult& r : b.batches) {
    by_batch[std::to_string(r.batch)] = r.it_tokens_per_second;
  }
  metrics["it_tokens_per_second_by_batch"] = by_batch;
  if (!b.batches.empty()) {
    const InferBatchResult& small = b.batches.front();
    const InferBatchResult& large = b.batches.back();
    metrics["it_tokens_per_second"] = large.it_tokens_per_second;
    metrics["it_batch"] = large.batch;
    const metrics::Summary lat = metrics::summarize(small.latency_s);
    metrics["latency_s"] = metrics::to_json(lat);  // AL per request at the smallest batch
    metrics["ttft_s_p50"] = metrics::json_number_or_null(metrics::summarize(small.ttft_s).median);
    metrics["tpot_s_p50"] = metrics::json_number_or_null(metrics::summarize(small.tpot_s).median);
    metrics["tpot_s_p99"] = metrics::json_number_or_null(metrics::summarize(small.tpot_s).p99);
    metrics["decode_gbps"] = small.decode_gbps;
    if (small.hbm_fraction) {
      metrics["hbm_fraction"] = *small.hbm_fraction;
    } else {
      null_with_reason(metrics, "hbm_fraction", "no datasheet bandwidth for this device");
    }
    const metrics::MemoryEnergySummary& me = large.memory_energy;
    metrics["amu_gb"] = me.amu_live_gb ? json(*me.amu_live_gb) : json();
    metrics["peak_live_bytes"] = me.peak_live_bytes ? json(*me.peak_live_bytes) : json();
    if (me.avg_power_w) {
      metrics["aec_w"] = *me.avg_power_w;
    } else {
      const auto it = me.unavailable_reasons.find("avg_power_w");
      null_with_reason(metrics, "aec_w", it != me.unavailable_reasons.end() ? it->second : "no energy counter");
    }
    if (large.j_per_token) {
      metrics["j_per_token"] = *large.j_per_token;
    } else {
      null_with_reason(metrics, "j_per_token", "no energy counter");
    }
  }
  report["metrics"] = metrics;
  return report;
}

std::vector<std::string> infer_command_line(const InferExperimentConfig& c, const std::string& report_path) {
  std::vector<std::string> a = {"generate", "--bench"};
  auto add = [&a](const std::string& k, const std::string& v) {
    a.push_back(k);
    a.push_back(v);
  };
  if (!c.source.hf_dir.empty()) add("--hf", c.source.hf_dir);
  if (!c.source.checkpoint.empty()) add("--init", c.source.checkpoint);
  if (!c.source.card.empty()) add("--model", c.source.card);
  if (!c.source.quantized_dir.empty()) add("--quantized", c.source.quantized_dir);
  if (!c.tokenizer.empty()) add("--tokenizer", c.tokenizer);
  add("--device", c.device.str());
  add("--precision", c.precision);
  add("--act-precision", c.act_precision);
  add("--quant-method", quant::quant_method_name(c.method));
  add("--group-size", std::to_string(c.group_size));
  if (!c.symmetric) a.push_back("--asym");
  for (const auto& s : c.calibration) add("--calib", s);
  add("--calib-samples", std::to_string(c.calibration_samples));
  add("--calib-seq-len", std::to_string(c.calibration_seq_len));
  for (const auto& s : c.val_shards) add("--eval-shard", s);
  add("--eval-seq-len", std::to_string(c.eval_seq_len));
  add("--eval-tokens", std::to_string(c.eval_tokens));
  if (!c.choice_task.empty()) add("--choice-task", c.choice_task);
  add("--choice-items", std::to_string(c.choice_items));
  std::string batches;
  for (int64_t b : c.bench.batch_sizes) batches += (batches.empty() ? "" : ",") + std::to_string(b);
  add("--batch-sizes", batches);
  add("--prompt-len", std::to_string(c.bench.prompt_len));
  add("--gen-len", std::to_string(c.bench.gen_len));
  add("--repetitions", std::to_string(c.bench.repetitions));
  add("--warmup", std::to_string(c.bench.warmup));
  add("--report", report_path);
  return a;
}

json to_json(const InferExperimentConfig& c) {
  return {{"model", c.source.describe()},
          {"precision", c.precision},
          {"act_precision", c.act_precision},
          {"method", quant::quant_method_name(c.method)},
          {"group_size", c.group_size},
          {"symmetric", c.symmetric},
          {"calibration", c.calibration},
          {"calibration_samples", c.calibration_samples},
          {"calibration_seq_len", c.calibration_seq_len},
          {"eval_seq_len", c.eval_seq_len},
          {"eval_tokens", c.eval_tokens},
          {"val_shards", c.val_shards.size()},
          {"choice_task", c.choice_task},
          {"choice_items", c.choice_items},
          {"bench", to_json(c.bench)}};
}

}  // namespace el::infer
