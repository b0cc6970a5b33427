#include "bench/suite.h"

#include <algorithm>

#include <fmt/format.h>

#include "bench/suite_yaml.h"
#include "finetune/sft_trainer.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

// A card of the suite: found, same vocabulary as the suite's tokenizer, long
// enough context for seq_len.
Status check_suite_card(const SuiteSpec& spec, const std::string& role, const std::string& card_name,
                        int64_t seq_len) {
  const std::string where = fmt::format("suite '{}': {}", spec.name, role);
  auto card = find_model_card(card_name);
  if (!card.ok()) {
    return make_error(fmt::format("card '{}': {}", card_name, card.error().what), where, card.error().hint);
  }
  if (card.value().vocab_size != spec.vocab_size) {
    return make_error(fmt::format("card '{}' has vocab_size {} but the suite's tokenizer has {} pieces",
                                  card_name, card.value().vocab_size, spec.vocab_size),
                      where, "set the card's vocab_size to the suite's vocab_size");
  }
  if (card.value().max_seq_len < seq_len) {
    return make_error(fmt::format("card '{}' allows max_seq_len {} but the suite trains at seq_len {}",
                                  card_name, card.value().max_seq_len, seq_len),
                      where);
  }
  return Status::Ok();
}

// An infer section: its model (a variant or a card), rows, sizes, and what
// the card allows (prompt + generation within the context, group sizes).
Status check_infer_section(const SuiteSpec& spec, const InferSection& x, const std::string& at) {
  std::string card_name = x.model;
  const bool pretrained = x.model.rfind(kPretrainedPrefix, 0) == 0;
  if (pretrained) {
    const std::string label = x.model.substr(std::string(kPretrainedPrefix).size());
    const auto v = std::find_if(spec.variants.begin(), spec.variants.end(),
                                [&](const SuiteVariant& s) { return s.label == label; });
    if (v == spec.variants.end()) {
      return make_error(fmt::format("'{}' names no variant of the suite", x.model), at,
                        "use pretrained:<variant label> or a model card");
    }
    card_name = v->card;
  }
  auto card = find_model_card(card_name);
  if (!card.ok()) return make_error(fmt::format("card '{}': {}", card_name, card.error().what), at, card.error().hint);
  if (x.rows.empty()) return make_error("no inference row", at);
  const std::vector<std::string> precisions = {"f32", "bf16", "fp16", "int8", "int4"};
  std::vector<std::string> labels;
  for (const auto& r : x.rows) {
    if (r.label.empty()) return make_error("a row has an empty label", at);
    if (std::find(labels.begin(), labels.end(), r.label) != labels.end()) {
      return make_error(fmt::format("two rows are labelled '{}'", r.label), at);
    }
    labels.push_back(r.label);
    if (std::find(precisions.begin(), precisions.end(), r.precision) == precisions.end()) {
      return make_error(fmt::format("row '{}': unknown precision '{}'", r.label, r.precision), at,
                        "use f32, bf16, fp16, int8 or int4");
    }
    if (r.quant_method != "rtn" && r.quant_method != "gptq") {
      return make_error(fmt::format("row '{}': unknown quant_method '{}'", r.label, r.quant_method), at,
                        "use rtn or gptq");
    }
    if (!pretrained && r.quant_method == "gptq" && (r.precision == "int8" || r.precision == "int4")) {
      return make_error(fmt::format("row '{}': GPTQ calibrates on text, and a model card has random weights and no "
                                    "tokenizer",
                                    r.label),
                        at, "use rtn, or a pretrained variant");
    }
    const std::string problem =
        infer_card_problem(card.value(), r.precision, x.group_size, x.prompt_len, x.gen_len);
    if (!problem.empty()) return make_error(fmt::format("row '{}': {}", r.label, problem), at);
  }
  if (x.act_precision != "f32" && x.act_precision != "bf16" && x.act_precision != "fp16") {
    return make_error(fmt::format("unknown act_precision '{}'", x.act_precision), at, "use f32, bf16 or fp16");
  }
  if (x.group_size < 0 || x.prompt_len < 1 || x.gen_len < 1 || x.eval_tokens < 0 || x.choice_items < 0 ||
      x.calib_samples < 1 || x.calib_seq_len < 1) {
    return make_error("group_size, eval_tokens and choice_items must be >= 0; prompt_len, gen_len, calib_samples "
                      "and calib_seq_len >= 1",
                      at);
  }
  EL_TRY(parse_batch_sizes(x.batch_sizes, at + ": batch_sizes"));
  return Status::Ok();
}

}  // namespace

Status validate_suite_spec(const SuiteSpec& spec) {
  const std::string where = fmt::format("suite '{}'", spec.name);
  const bool name_ok = !spec.name.empty() && spec.name.front() != '.' &&
                       spec.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                   "0123456789._-") == std::string::npos;
  if (!name_ok) {
    return make_error("the suite name must be non-empty and use only letters, digits, '.', '_' and '-' "
                      "(it names the result files)",
                      where);
  }
  if (spec.variants.empty()) return make_error("the suite has no variants", where + ": variants");
  if (spec.vocab_size <= 0) return make_error("vocab_size must be positive", where + ": vocab_size");
  if (spec.batch_size <= 0 || spec.seq_len <= 0 || spec.steps <= 0) {
    return make_error(fmt::format("batch_size ({}), seq_len ({}) and steps ({}) must be positive",
                                  spec.batch_size, spec.seq_len, spec.steps),
                      where);
  }
  if (spec.warmup_steps < 0) return make_error("warmup_steps must not be negative", where + ": warmup_steps");
  if (spec.eval_batches <= 0) return make_error("eval_batches must be positive", where + ": eval_batches");
  if (spec.repetitions < 1) return make_error("repetitions must be at least 1", where + ": repetitions");
  if (!(spec.lr > 0) || !(spec.min_lr > 0) || spec.min_lr > spec.lr) {
    return make_error(fmt::format("expected 0 < min_lr <= lr, got lr {} and min_lr {}", spec.lr, spec.min_lr),
                      where + ": lr");
  }
  for (const auto& v : spec.variants) {
    if (v.label.empty()) return make_error("a variant has an empty label", where + ": variants");
    EL_TRY(check_suite_card(spec, fmt::format("variant '{}'", v.label), v.card, spec.seq_len));
  }
  if (spec.mfu_probe) {
    const MfuProbe& p = *spec.mfu_probe;
    if (p.batch_size <= 0 || p.seq_len <= 0 || p.steps <= 0) {
      return make_error("the MFU probe's batch_size, seq_len and steps must be positive", where + ": mfu_probe");
    }
    EL_TRY(check_suite_card(spec, "mfu_probe", p.card, p.seq_len));
  }
  if (spec.finetune) {
    const FinetuneSection& f = *spec.finetune;
    const std::string at = where + ": finetune";
    const auto source = std::find_if(spec.variants.begin(), spec.variants.end(),
                                     [&](const SuiteVariant& v) { return v.label == f.source; });
    if (source == spec.variants.end()) {
      return make_error(fmt::format("the fine-tuning source '{}' is not a variant's label", f.source), at);
    }
    if (f.methods.empty()) return make_error("no fine-tuning method", at);
    for (const auto& m : f.methods) {
      if (auto parsed = finetune::parse_method(m); !parsed.ok()) return parsed.error();
    }
    if (f.batch_size <= 0 || f.seq_len <= 1 || f.steps <= 0 || !(f.lr > 0) || f.lora_r <= 0 || f.lora_alpha <= 0) {
      return make_error("batch_size, steps, lr, lora_r, lora_alpha must be positive and seq_len >= 2", at);
    }
    EL_TRY(check_suite_card(spec, "finetune", source->card, f.seq_len));
  }
  for (size_t i = 0; i < spec.infer.size(); ++i) {
    EL_TRY(check_infer_section(spec, spec.infer[i], fmt::format("{}: infer[{}]", where, i)));
  }
  return Status::Ok();
}

SuiteSpec apply_step_override(SuiteSpec spec, int64_t steps) {
  if (steps <= 0) return spec;
  spec.steps = steps;
  if (spec.warmup_steps >= steps) spec.warmup_steps = steps / 10;
  return spec;
}

TrainConfig variant_train_config(const SuiteSpec& spec, const SuiteVariant& variant, Device device,
                                 const std::string& data_dir) {
  TrainConfig c;
  c.model = variant.card;
  c.data_dir = data_dir;
  c.device = device;
  c.batch_size = spec.batch_size;
  c.seq_len = spec.seq_len;
  c.steps = spec.steps;
  c.lr = spec.lr;
  c.min_lr = spec.min_lr;
  c.warmup_steps = spec.warmup_steps;
  c.eval_batches = spec.eval_batches;
  c.precision = spec.precision;
  return c;
}

DType suite_calibration_dtype(const SuiteSpec& spec, Device device) {
  if (spec.calibration_dtype) return *spec.calibration_dtype;
  // The same rule as run_training: the CPU backend computes bf16/f16 in f32.
  return device.is_cpu() ? DType::f32 : precision_dtype(spec.precision);
}

nlohmann::json suite_spec_to_json(const SuiteSpec& spec) {
  nlohmann::json variants = nlohmann::json::array();
  for (const auto& v : spec.variants) variants.push_back({{"label", v.label}, {"card", v.card}});
  nlohmann::json j = {{"name", spec.name},
                      {"description", spec.description},
                      {"sized_for", spec.sized_for == DeviceKind::cpu ? "cpu" : "cuda"},
                      {"variants", variants},
                      {"vocab_size", spec.vocab_size},
                      {"batch_size", spec.batch_size},
                      {"seq_len", spec.seq_len},
                      {"steps", spec.steps},
                      {"lr", spec.lr},
                      {"min_lr", spec.min_lr},
                      {"warmup_steps", spec.warmup_steps},
                      {"eval_batches", spec.eval_batches},
                      {"repetitions", spec.repetitions},
                      {"precision", precision_name(spec.precision)},
                      {"calibration_dtype", spec.calibration_dtype ? nlohmann::json(dtype_name(*spec.calibration_dtype))
                                                                   : nlohmann::json()},
                      {"mfu_probe", nullptr}};
  if (spec.mfu_probe) {
    const MfuProbe& p = *spec.mfu_probe;
    j["mfu_probe"] = {{"label", p.label}, {"card", p.card}, {"batch_size", p.batch_size},
                      {"seq_len", p.seq_len}, {"steps", p.steps}};
  }
  j["finetune"] = nullptr;
  if (spec.finetune) {
    const FinetuneSection& f = *spec.finetune;
    j["finetune"] = {{"source", f.source},         {"methods", f.methods}, {"batch_size", f.batch_size},
                     {"seq_len", f.seq_len},       {"steps", f.steps},     {"lr", f.lr},
                     {"lora_r", f.lora_r},         {"lora_alpha", f.lora_alpha},
                     {"precision", precision_name(f.precision)}};
  }
  j["infer"] = nlohmann::json::array();
  for (const InferSection& x : spec.infer) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : x.rows) {
      rows.push_back({{"label", r.label}, {"precision", r.precision}, {"quant_method", r.quant_method}});
    }
    j["infer"].push_back({{"model", x.model},
                          {"rows", rows},
                          {"act_precision", x.act_precision},
                          {"group_size", x.group_size},
                          {"symmetric", x.symmetric},
                          {"batch_sizes", x.batch_sizes},
                          {"prompt_len", x.prompt_len},
                          {"gen_len", x.gen_len},
                          {"eval_tokens", x.eval_tokens},
                          {"choice_task", x.choice_task},
                          {"choice_items", x.choice_items},
                          {"calib_samples", x.calib_samples},
                          {"calib_seq_len", x.calib_seq_len}});
  }
  return j;
}

}  // namespace el::bench
