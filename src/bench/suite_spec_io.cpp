// suite_spec_io.cpp — the built-in C++ suites (SuiteSpec, bench/suite.h) to
// suite-file YAML and back (suite_yaml.h: suite_spec_to_yaml,
// suite_spec_to_file, suite_file_to_spec).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "bench/suite_yaml.h"

namespace el::bench {

using nlohmann::json;

namespace {

std::string value_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// One finetune experiment into the spec's FinetuneSection: each must
// fine-tune a variant of the suite on the built-in records, and they may
// differ only in the method.
template <class Refuse>
Status add_finetune_to_spec(const ExpandedExperiment& e, SuiteSpec& s, const Refuse& refuse) {
  const json& f = e.config.at("fields");
  const std::string model = f.at("model").get<std::string>();
  if (model.rfind(kPretrainedPrefix, 0) != 0 || f.at("dataset") != "builtin" || f.at("grad_accum") != 1) {
    return refuse(fmt::format("experiment '{}' fine-tunes a directory or another dataset, or sets grad_accum", e.label),
                  e.where);
  }
  FinetuneSection sec;
  sec.source = model.substr(std::string(kPretrainedPrefix).size());
  sec.batch_size = f.at("batch_size").get<int64_t>();
  sec.seq_len = f.at("seq_len").get<int64_t>();
  sec.steps = f.at("steps").get<int64_t>();
  sec.lr = static_cast<float>(f.at("lr").get<double>());
  sec.lora_r = f.at("lora_r").get<int64_t>();
  sec.lora_alpha = f.at("lora_alpha").get<int64_t>();
  EL_TRY_ASSIGN(sec.precision, parse_precision(f.at("precision").get<std::string>()));
  const std::string method = f.at("method").get<std::string>();
  if (!s.finetune) {
    sec.methods = {method};
    s.finetune = sec;
    return Status::Ok();
  }
  FinetuneSection& have = *s.finetune;
  sec.methods = have.methods;
  const auto section_json = [](const FinetuneSection& f) {
    SuiteSpec one;
    one.finetune = f;
    return suite_spec_to_json(one)["finetune"];
  };
  if (section_json(sec) != section_json(have)) {
    return refuse(fmt::format("experiment '{}' has another fine-tuning schedule than the first", e.label), e.where);
  }
  have.methods.push_back(method);
  return Status::Ok();
}

// An infer section as suite_spec_to_json writes it.
json infer_section_json(const InferSection& x) {
  SuiteSpec one;
  one.infer = {x};
  return suite_spec_to_json(one)["infer"][0];
}

// One infer experiment into the spec's infer sections: a row of the last
// section when it has the same model and settings (only the precision and
// the quantization method differ), else a new section.
template <class Refuse>
Status add_infer_to_spec(const ExpandedExperiment& e, SuiteSpec& s, const Refuse& refuse) {
  const json& f = e.config.at("fields");
  const std::string kind = e.config.value("model_kind", "");
  if (kind != kModelPretrained && kind != kModelCard) {
    return refuse(fmt::format("experiment '{}' runs a Hugging Face directory", e.label), e.where);
  }
  InferSection x;
  x.model = f.at("model").get<std::string>();
  x.act_precision = f.at("act_precision").get<std::string>();
  x.group_size = f.at("group_size").get<int64_t>();
  x.symmetric = f.at("scheme") == "symmetric";
  x.batch_sizes = f.at("batch_sizes").get<std::string>();
  x.prompt_len = f.at("prompt_len").get<int64_t>();
  x.gen_len = f.at("gen_len").get<int64_t>();
  x.eval_tokens = f.at("eval_tokens").get<int64_t>();
  x.choice_task = f.at("choice_task").get<std::string>();
  x.choice_items = f.at("choice_items").get<int64_t>();
  x.calib_samples = f.at("calib_samples").get<int64_t>();
  x.calib_seq_len = f.at("calib_seq_len").get<int64_t>();
  const InferVariant row{e.label, f.at("precision").get<std::string>(), f.at("quant_method").get<std::string>()};
  if (!s.infer.empty()) {
    InferSection& last = s.infer.back();
    x.rows = last.rows;
    if (infer_section_json(x) == infer_section_json(last)) {
      last.rows.push_back(row);
      return Status::Ok();
    }
    x.rows.clear();
  }
  x.rows.push_back(row);
  s.infer.push_back(std::move(x));
  return Status::Ok();
}

}  // namespace

Result<SuiteSpec> suite_file_to_spec(const SuiteFile& suite) {
  const std::string hint = "a SuiteSpec holds one shared pretraining schedule; `efficientllm bench` runs the suite "
                           "file itself — `efficientllm bench --dry-run` shows the matrix";
  auto refuse = [&](const std::string& why, const std::string& where) {
    return make_error(fmt::format("suite '{}' cannot run in this build: {}", suite.name, why), where, hint);
  };
  SuiteSpec s;
  s.name = suite.name;
  s.description = suite.description;
  s.sized_for = suite.sized_for;
  s.mfu_probe = suite.mfu_probe;
  const json* first = nullptr;
  static const std::vector<std::string> kShared = {"dataset", "vocab_size", "batch_size", "seq_len", "grad_accum",
                                                   "steps",   "lr",         "min_lr",     "warmup",  "eval_batches",
                                                   "precision", "seed"};
  for (const auto& e : suite.experiments) {
    if (e.axis == Axis::finetune && e.supported) {
      EL_TRY(add_finetune_to_spec(e, s, refuse));
      continue;
    }
    if (e.axis == Axis::infer && e.supported) {
      EL_TRY(add_infer_to_spec(e, s, refuse));
      continue;
    }
    if (e.axis != Axis::pretrain || !e.supported) {
      return refuse(fmt::format("experiment '{}' is {} ({})", e.label, axis_name(e.axis), e.status), e.where);
    }
    const json& f = e.config.at("fields");
    if (f.at("dataset") != "builtin") return refuse(fmt::format("experiment '{}' uses a dataset directory", e.label), e.where);
    if (f.at("grad_accum") != 1 || f.at("seed") != 1234) {
      return refuse(fmt::format("experiment '{}' sets grad_accum or seed", e.label), e.where);
    }
    if (!first) {
      first = &f;
      s.vocab_size = static_cast<int>(f.at("vocab_size").get<int64_t>());
      s.batch_size = f.at("batch_size").get<int64_t>();
      s.seq_len = f.at("seq_len").get<int64_t>();
      s.steps = f.at("steps").get<int64_t>();
      s.lr = static_cast<float>(f.at("lr").get<double>());
      s.min_lr = static_cast<float>(f.at("min_lr").get<double>());
      s.warmup_steps = f.at("warmup").get<int64_t>();
      s.eval_batches = f.at("eval_batches").get<int64_t>();
      EL_TRY_ASSIGN(s.precision, parse_precision(f.at("precision").get<std::string>()));
    }
    for (const auto& k : kShared) {
      if (f.at(k) != first->at(k)) {
        return refuse(fmt::format("experiment '{}' has {} {} where the first has {}", e.label, k,
                                  value_text(f.at(k)), value_text(first->at(k))),
                      e.where);
      }
    }
    s.variants.push_back({e.label, f.at("card").get<std::string>()});
  }
  // Checked after the experiments: an unsupported axis is the likelier reason.
  if (suite.warmup_steps != 1 || suite.min_duration_s != 0) {
    return refuse("it sets warmup_steps or min_duration_s (a SuiteSpec has 1 and 0)", suite.path);
  }
  s.repetitions = suite.repetitions;
  return s;
}

std::string suite_spec_to_yaml(const SuiteSpec& spec) {
  // Strings as JSON strings (valid YAML double-quoted scalars); numbers in
  // their shortest round-trip form, so 3e-3f reads back as the file's 3.0e-3.
  const auto str = [](const std::string& v) { return json(v).dump(); };
  std::string y;
  y += "name: " + str(spec.name) + "\n";
  y += "description: " + str(spec.description) + "\n";
  y += fmt::format("sized_for: {}\n", spec.sized_for == DeviceKind::cpu ? "cpu" : "cuda");
  y += fmt::format("repetitions: {}\nwarmup_steps: 1\nmin_duration_s: 0\n", spec.repetitions);
  if (spec.mfu_probe) {
    const MfuProbe& p = *spec.mfu_probe;
    y += fmt::format("mfu_probe: {{label: {}, card: {}, batch_size: {}, seq_len: {}, steps: {}}}\n", str(p.label),
                     str(p.card), p.batch_size, p.seq_len, p.steps);
  }
  y += fmt::format(
      "defaults:\n  dataset: builtin\n  vocab_size: {}\n  batch_size: {}\n  seq_len: {}\n  steps: {}\n"
      "  lr: {}\n  min_lr: {}\n  warmup: {}\n  eval_batches: {}\n  precision: {}\n",
      spec.vocab_size, spec.batch_size, spec.seq_len, spec.steps, spec.lr, spec.min_lr, spec.warmup_steps,
      spec.eval_batches, precision_name(spec.precision));
  y += "experiments:\n";
  for (const auto& v : spec.variants) {
    y += fmt::format("  - {{axis: pretrain, label: {}, card: {}}}\n", str(v.label), str(v.card));
  }
  if (spec.finetune) {
    const FinetuneSection& f = *spec.finetune;
    y += fmt::format("  - {{axis: finetune, label: \"{{method}}\", model: {}, method: [{}], batch_size: {}, "
                     "grad_accum: 1, seq_len: {}, steps: {}, lr: {}, lora_r: {}, lora_alpha: {}, precision: {}}}\n",
                     str(std::string(kPretrainedPrefix) + f.source), fmt::join(f.methods, ", "), f.batch_size,
                     f.seq_len, f.steps, f.lr, f.lora_r, f.lora_alpha, precision_name(f.precision));
  }
  // One entry per inference row, every field written (batch_sizes wins over
  // the defaults' batch_size).
  for (const InferSection& x : spec.infer) {
    for (const InferVariant& r : x.rows) {
      y += fmt::format("  - {{axis: infer, label: {}, model: {}, precision: {}, quant_method: {}, act_precision: {}, "
                       "group_size: {}, scheme: {}, batch_sizes: {}, prompt_len: {}, gen_len: {}, eval_tokens: {}, "
                       "choice_task: {}, choice_items: {}, calib_samples: {}, calib_seq_len: {}}}\n",
                       str(r.label), str(x.model), r.precision, r.quant_method, x.act_precision, x.group_size,
                       x.symmetric ? "symmetric" : "asymmetric", str(x.batch_sizes), x.prompt_len, x.gen_len,
                       x.eval_tokens, str(x.choice_task), x.choice_items, x.calib_samples, x.calib_seq_len);
    }
  }
  return y;
}

Result<SuiteFile> suite_spec_to_file(const SuiteSpec& spec) {
  EL_TRY_ASSIGN(SuiteFile f, parse_suite_yaml(suite_spec_to_yaml(spec), "<built-in " + spec.name + ">"));
  f.calibration_dtype = spec.calibration_dtype;
  return f;
}

}  // namespace el::bench
