#include "bench/suite_yaml.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "bench/builtin_suites.h"
#include "data/choice_task.h"
#include "io/file_util.h"
#include "io/suggest.h"
#include "io/yaml_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

enum class FieldType { integer, number, text, choice };

// One field an axis understands. `fallback` is the value when neither the
// entry nor `defaults` sets it; null means required. `min` bounds numbers.
struct FieldSpec {
  std::string name;
  FieldType type;
  json fallback;
  double min = 1;  // integers and numbers must be >= min (numbers: > 0 when min is 0 < x)
  std::vector<std::string> choices = {};
  bool allow_empty = false;  // text: "" is a value (e.g. choice_task: none)
};

// The pretrain fallbacks are the SuiteSpec defaults (bench/suite.h), so a
// field a suite leaves out means what it means in a C++ spec.
const std::vector<FieldSpec>& pretrain_fields() {
  static const std::vector<FieldSpec> f = {
      {"card", FieldType::text, nullptr},
      {"dataset", FieldType::text, "builtin"},
      {"vocab_size", FieldType::integer, 4096},
      {"batch_size", FieldType::integer, 16},
      {"seq_len", FieldType::integer, 128},
      {"grad_accum", FieldType::integer, 1},
      {"steps", FieldType::integer, 400},
      {"lr", FieldType::number, 3e-3, 0},
      {"min_lr", FieldType::number, 3e-4, 0},
      {"warmup", FieldType::integer, 15, 0},
      {"eval_batches", FieldType::integer, 32},
      {"precision", FieldType::choice, "f32", 0, {"f32", "bf16", "f16"}},
      {"seed", FieldType::integer, 1234, 0},
  };
  return f;
}

// Finetune fallbacks: the paper's 1B row (§2.3; LoRA r 64, alpha 128, 3 epochs).
const std::vector<FieldSpec>& finetune_fields() {
  static const std::vector<FieldSpec> f = {
      {"model", FieldType::text, nullptr},
      {"dataset", FieldType::text, nullptr},
      {"method", FieldType::choice, nullptr, 0,
       {"lora", "lora_plus", "rslora", "dora", "pissa", "freeze", "full"}},
      {"batch_size", FieldType::integer, 4},
      {"grad_accum", FieldType::integer, 4},
      {"lr", FieldType::number, 5e-5, 0},
      {"epochs", FieldType::integer, 3},
      {"steps", FieldType::integer, 0},  // > 0: optimizer steps instead of epochs
      {"seq_len", FieldType::integer, 2048},  // the cutoff length of a sample
      {"precision", FieldType::choice, "bf16", 0, {"f32", "bf16", "f16"}},
      {"lora_r", FieldType::integer, 64},
      {"lora_alpha", FieldType::integer, 128},
  };
  return f;
}

// Infer (infer/infer_experiment.h): the paper's precisions (§2.4) and int8,
// which the paper dropped; the fallbacks are InferExperimentConfig's, the
// issue's batch sizes 1, 8, 32 and a 200-item choice task.
const std::vector<FieldSpec>& infer_fields() {
  static const std::vector<FieldSpec> f = {
      {"model", FieldType::text, nullptr},
      {"precision", FieldType::choice, "bf16", 0, {"f32", "bf16", "fp16", "int8", "int4"}},
      {"act_precision", FieldType::choice, "bf16", 0, {"f32", "bf16", "fp16"}},
      {"quant_method", FieldType::choice, "rtn", 0, {"rtn", "gptq"}},
      {"group_size", FieldType::integer, 128, 0},  // 0 = per output channel
      {"scheme", FieldType::choice, "symmetric", 0, {"symmetric", "asymmetric"}},
      // "" = [batch_size]: the older single integer (paper-quant) still works.
      {"batch_sizes", FieldType::text, "", 1, {}, true},
      {"batch_size", FieldType::integer, 1},
      {"prompt_len", FieldType::integer, 128},
      {"gen_len", FieldType::integer, 256},
      {"eval_tokens", FieldType::integer, 65536, 0},
      {"choice_task", FieldType::text, "builtin:corpus-cloze", 1, {}, true},
      {"choice_items", FieldType::integer, 200, 0},
      {"calib_samples", FieldType::integer, 128},
      {"calib_seq_len", FieldType::integer, 512},
  };
  return f;
}

const std::vector<std::string> kAxes = {"pretrain", "finetune", "infer"};
const std::vector<std::string> kTopKeys = {"name",         "description", "sized_for", "repetitions",
                                           "warmup_steps", "min_duration_s", "allow_missing",
                                           "mfu_probe",    "defaults",    "experiments"};

const std::vector<FieldSpec>& fields_of(Axis a) {
  switch (a) {
    case Axis::finetune: return finetune_fields();
    case Axis::infer: return infer_fields();
    default: return pretrain_fields();
  }
}

const FieldSpec* find_field(Axis a, const std::string& key) {
  for (const auto& f : fields_of(a))
    if (f.name == key) return &f;
  return nullptr;
}

std::vector<std::string> field_names(Axis a) {
  std::vector<std::string> out;
  for (const auto& f : fields_of(a)) out.push_back(f.name);
  return out;
}

std::vector<std::string> all_field_names() {
  std::vector<std::string> out;
  for (Axis a : {Axis::pretrain, Axis::finetune, Axis::infer})
    for (const auto& n : field_names(a))
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  return out;
}

// A value with the line it came from.
struct Value {
  json v;
  std::string where;
};

// One scalar of a field, typed and range-checked.
Result<json> convert(const FieldSpec& f, const YAML::Node& n, const std::string& source) {
  const std::string what = fmt::format("key '{}'", f.name);
  switch (f.type) {
    case FieldType::integer: {
      EL_TRY_ASSIGN(int64_t v, io::yaml_as<int64_t>(n, source, what));
      if (static_cast<double>(v) < f.min) {
        return make_error(fmt::format("{}: must be at least {}, got {}", what, f.min, v), io::yaml_where(source, n));
      }
      return json(v);
    }
    case FieldType::number: {
      EL_TRY_ASSIGN(double v, io::yaml_as<double>(n, source, what));
      if (!(v > f.min)) {
        return make_error(fmt::format("{}: must be greater than {}, got {}", what, f.min, v),
                          io::yaml_where(source, n));
      }
      return json(v);
    }
    case FieldType::text: {
      EL_TRY_ASSIGN(std::string v, io::yaml_as<std::string>(n, source, what));
      if (v.empty() && !f.allow_empty) {
        return make_error(fmt::format("{}: must not be empty", what), io::yaml_where(source, n));
      }
      return json(v);
    }
    case FieldType::choice: {
      EL_TRY_ASSIGN(std::string v, io::yaml_as<std::string>(n, source, what));
      if (std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end()) {
        return make_error(fmt::format("{}: unknown value '{}'{}; allowed: {}", what, v, io::did_you_mean(v, f.choices),
                                      io::quoted_list(f.choices)),
                          io::yaml_where(source, n));
      }
      return json(v);
    }
  }
  return json();
}

// One value or a list of values; an empty list is an error.
Result<std::vector<Value>> sweep_values(const FieldSpec& f, const io::YamlMap& m) {
  const YAML::Node n = m.node(f.name);
  std::vector<YAML::Node> items;
  if (n.IsSequence()) {
    if (n.size() == 0) {
      return make_error(fmt::format("key '{}': the list of values is empty (an empty matrix)", f.name),
                        m.where(f.name), "give at least one value, or remove the key");
    }
    for (const auto& it : n) items.push_back(it);
  } else {
    items.push_back(n);
  }
  std::vector<Value> out;
  for (const auto& it : items) {
    EL_TRY_ASSIGN(json v, convert(f, it, m.source()));
    out.push_back({std::move(v), io::yaml_where(m.source(), it)});
  }
  return out;
}

std::string value_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// "b16", "T1024", "tiny-gqa", "lr=0.001": one swept field in an automatic label.
std::string label_piece(const std::string& key, const json& v) {
  if (key == "card" || key == "model" || key == "method" || key == "precision" || key == "quant_method" ||
      key == "scheme") {
    return value_text(v);
  }
  if (key == "batch_size" || key == "batch_sizes") return "b" + value_text(v);
  if (key == "seq_len") return "T" + value_text(v);
  if (key == "steps") return "s" + value_text(v);
  return key + "=" + value_text(v);
}

// Replaces {field} in a label template; an unknown field is an error.
Result<std::string> fill_template(const std::string& tmpl, const json& fields, const std::string& axis,
                                  const std::string& where) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] != '{') {
      out += tmpl[i++];
      continue;
    }
    const size_t close = tmpl.find('}', i);
    if (close == std::string::npos) {
      return make_error(fmt::format("label '{}': '{{' without a closing '}}'", tmpl), where);
    }
    const std::string key = tmpl.substr(i + 1, close - i - 1);
    if (key == "axis") {
      out += axis;
    } else if (fields.contains(key)) {
      out += value_text(fields[key]);
    } else {
      std::vector<std::string> names = {"axis"};
      for (const auto& [k, _] : fields.items()) names.push_back(k);
      return make_error(fmt::format("label '{}': unknown field '{{{}}}'{}", tmpl, key, io::did_you_mean(key, names)),
                        where, "placeholders: " + io::quoted_list(names));
    }
    i = close + 1;
  }
  return out;
}

struct ParseState {
  SuiteFile suite;
  std::string source;
  std::string base_dir;
  std::map<std::string, std::string> label_where;  // label -> where first seen
};

// Checks one resolved pretrain combination: the card, the dataset and the
// card against the built-in tokenizer. Sets the status (allow_missing) or fails.
Status check_pretrain(ParseState& st, ExpandedExperiment& e, json& fields, const std::map<std::string, std::string>& at) {
  const std::string card_name = fields["card"].get<std::string>();
  auto card = find_model_card(card_name);
  if (!card.ok()) {
    if (st.suite.allow_missing) {
      e.supported = false;
      e.status = fmt::format("not supported by this build: no card '{}'", card_name);
      return Status::Ok();
    }
    return make_error(fmt::format("experiment '{}': {}", e.label, card.error().what), at.at("card"),
                      card.error().hint);
  }
  if (fields["min_lr"].get<double>() > fields["lr"].get<double>()) {
    return make_error(fmt::format("experiment '{}': min_lr ({}) must not exceed lr ({})", e.label,
                                  value_text(fields["min_lr"]), value_text(fields["lr"])),
                      at.at("min_lr"));
  }
  const std::string dataset = fields["dataset"].get<std::string>();
  if (dataset == "builtin") {
    const int64_t vocab = fields["vocab_size"].get<int64_t>();
    if (card.value().vocab_size != vocab) {
      return make_error(fmt::format("experiment '{}': card '{}' has vocab_size {} but the built-in dataset's "
                                    "tokenizer is set to {} pieces",
                                    e.label, card_name, card.value().vocab_size, vocab),
                        at.at("card"), "set vocab_size to the card's, or use a card made for it");
    }
  } else {
    fs::path p(dataset);
    if (p.is_relative()) p = fs::path(st.base_dir) / p;
    p = p.lexically_normal();
    std::error_code ec;
    if (!fs::is_regular_file(p / "dataset.json", ec)) {
      if (!st.suite.allow_missing) {
        return make_error(fmt::format("experiment '{}': dataset '{}' is not a prepared dataset (no {})", e.label,
                                      dataset, (p / "dataset.json").string()),
                          at.at("dataset"), "use 'builtin', or make it with `efficientllm data prepare`");
      }
      e.supported = false;
      e.status = fmt::format("missing dataset '{}' (make it with `efficientllm data prepare`)", dataset);
    }
    fields["dataset"] = p.string();
  }
  if (card.value().max_seq_len < fields["seq_len"].get<int64_t>()) {
    return make_error(fmt::format("experiment '{}': card '{}' allows max_seq_len {} but seq_len is {}", e.label,
                                  card_name, card.value().max_seq_len, value_text(fields["seq_len"])),
                      at.at("seq_len"));
  }
  return Status::Ok();
}

// `name` as a path relative to base_dir, else under the directory in the
// environment variable `env`, with each suffix tried; the match must hold
// `inside` (a directory's file) or be a regular file (inside empty).
std::optional<std::string> find_under(const std::string& base_dir, const std::string& name, const char* env,
                                      const std::vector<std::string>& suffixes, const std::string& inside) {
  std::vector<fs::path> roots;
  roots.push_back(fs::path(name).is_relative() ? fs::path(base_dir) / name : fs::path(name));
  if (const char* root = std::getenv(env); root && *root && fs::path(name).is_relative()) {
    roots.push_back(fs::path(root) / name);
  }
  std::error_code ec;
  for (const auto& r : roots) {
    for (const auto& suffix : suffixes) {
      const fs::path p = (r.string() + suffix);
      const bool ok = inside.empty() ? fs::is_regular_file(p, ec) : fs::is_regular_file(p / inside, ec);
      if (ok) return p.lexically_normal().string();
    }
  }
  return std::nullopt;
}

// model "pretrained:<label>": the earlier pretrain experiment it names (an
// error when there is none); nullptr when that source cannot run, with e
// marked unsupported and the reason in its status.
Result<const ExpandedExperiment*> pretrained_source(ParseState& st, ExpandedExperiment& e, const std::string& model,
                                                    const std::map<std::string, std::string>& at) {
  const std::string source = model.substr(std::string(kPretrainedPrefix).size());
  const auto it = std::find_if(st.suite.experiments.begin(), st.suite.experiments.end(),
                               [&](const ExpandedExperiment& x) { return x.label == source; });
  if (it == st.suite.experiments.end() || it->axis != Axis::pretrain) {
    return make_error(fmt::format("experiment '{}': '{}' names no earlier pretrain experiment", e.label, model),
                      at.at("model"), "use pretrained:<label of a pretrain experiment listed above it>");
  }
  if (!it->supported) {
    e.supported = false;
    e.status = fmt::format("its source '{}' cannot run: {}", source, it->status);
    return static_cast<const ExpandedExperiment*>(nullptr);
  }
  return &*it;
}

// Checks one resolved finetune combination. model: "pretrained:<label>" (the
// checkpoint an earlier pretrain experiment of this suite writes) or a
// Hugging Face directory; dataset: "builtin" (data/sft_builtin.h) or an SFT
// file. A missing directory or file sets the status (allow_missing) or fails.
Status check_finetune(ParseState& st, ExpandedExperiment& e, json& fields, const std::map<std::string, std::string>& at,
                      std::string& source_card) {
  const std::string model = fields["model"].get<std::string>();
  auto missing = [&](const std::string& what, const std::string& key, const std::string& hint) -> Status {
    if (!st.suite.allow_missing) return make_error(fmt::format("experiment '{}': {}", e.label, what), at.at(key), hint);
    e.supported = false;
    e.status = what;
    return Status::Ok();
  };
  if (model.rfind(kPretrainedPrefix, 0) == 0) {
    EL_TRY_ASSIGN(const ExpandedExperiment* src, pretrained_source(st, e, model, at));
    if (src == nullptr) return Status::Ok();
    source_card = src->field("card").get<std::string>();
  } else {
    // A path (relative to the suite file), else a name under $EL_MODELS_DIR.
    const auto found = find_under(st.base_dir, model, "EL_MODELS_DIR", {""}, "config.json");
    if (!found) {
      return missing(fmt::format("missing model '{}' (no config.json in {} or $EL_MODELS_DIR/{})", model,
                                 (fs::path(st.base_dir) / model).lexically_normal().string(), model),
                     "model", "point model at a Hugging Face directory, set EL_MODELS_DIR, or use pretrained:<label>");
    }
    fields["model"] = *found;
  }
  const std::string dataset = fields["dataset"].get<std::string>();
  if (dataset != "builtin") {
    // A file (relative to the suite file), else <name>.jsonl / .json under $EL_SFT_DATA_DIR.
    const auto found = find_under(st.base_dir, dataset, "EL_SFT_DATA_DIR", {"", ".jsonl", ".json"}, "");
    if (!found) {
      return missing(fmt::format("missing SFT dataset '{}' (no file {} or $EL_SFT_DATA_DIR/{}.jsonl)", dataset,
                                 (fs::path(st.base_dir) / dataset).lexically_normal().string(), dataset),
                     "dataset", "use 'builtin', a JSON Lines file, or set EL_SFT_DATA_DIR");
    }
    fields["dataset"] = *found;
  }
  return Status::Ok();
}

// Checks one resolved infer combination and resolves its batch sizes and
// model: "pretrained:<label>" (an earlier pretrain experiment), a model card
// (random weights), or a Hugging Face directory (relative to the suite file,
// else under $EL_MODELS_DIR); a choice task file is resolved like a dataset.
// A missing model or task file sets the status (allow_missing) or fails.
Status check_infer(ParseState& st, ExpandedExperiment& e, json& fields, const std::map<std::string, std::string>& at,
                   std::string& source_card, std::string& model_kind) {
  auto missing = [&](const std::string& what, const std::string& key, const std::string& hint) -> Status {
    if (!st.suite.allow_missing) return make_error(fmt::format("experiment '{}': {}", e.label, what), at.at(key), hint);
    e.supported = false;
    e.status = what;
    return Status::Ok();
  };
  // batch_sizes, else the single batch_size; only batch_sizes stays.
  std::string batches = fields["batch_sizes"].get<std::string>();
  if (batches.empty()) batches = std::to_string(fields["batch_size"].get<int64_t>());
  auto parsed = parse_batch_sizes(batches, at.at("batch_sizes"));
  if (!parsed.ok()) {
    return make_error(fmt::format("experiment '{}': {}", e.label, parsed.error().what), parsed.error().where,
                      parsed.error().hint);
  }
  fields["batch_sizes"] = fmt::format("{}", fmt::join(parsed.value(), ","));
  fields.erase("batch_size");

  const std::string precision = fields["precision"].get<std::string>();
  const bool is_int = precision == "int8" || precision == "int4";
  const std::string model = fields["model"].get<std::string>();
  if (model.rfind(kPretrainedPrefix, 0) == 0) {
    EL_TRY_ASSIGN(const ExpandedExperiment* src, pretrained_source(st, e, model, at));
    model_kind = kModelPretrained;
    if (src == nullptr) return Status::Ok();
    source_card = src->field("card").get<std::string>();
  } else if (find_model_card(model).ok()) {
    model_kind = kModelCard;
    source_card = model;
    if (is_int && fields["quant_method"] == "gptq") {
      return make_error(fmt::format("experiment '{}': GPTQ calibrates on text, and the model card '{}' has random "
                                    "weights and no tokenizer",
                                    e.label, model),
                        at.at("quant_method"), "use quant_method: rtn, or a pretrained:<label> or Hugging Face model");
    }
  } else {
    model_kind = kModelHf;
    const auto found = find_under(st.base_dir, model, "EL_MODELS_DIR", {""}, "config.json");
    if (!found) {
      return missing(fmt::format("missing model '{}' (not a model card; no config.json in {} or $EL_MODELS_DIR/{})",
                                 model, (fs::path(st.base_dir) / model).lexically_normal().string(), model),
                     "model", "use pretrained:<label>, a card of configs/models, a Hugging Face directory, or set "
                     "EL_MODELS_DIR");
    }
    fields["model"] = *found;
  }
  if (!source_card.empty()) {
    auto card = find_model_card(source_card);
    if (card.ok()) {
      const std::string problem =
          infer_card_problem(card.value(), precision, fields["group_size"].get<int64_t>(),
                             fields["prompt_len"].get<int64_t>(), fields["gen_len"].get<int64_t>());
      if (!problem.empty()) {
        const bool group = problem.find("group_size") != std::string::npos;
        return make_error(fmt::format("experiment '{}': {}", e.label, problem),
                          at.at(group ? "group_size" : "gen_len"),
                          group ? "use a group_size dividing every width, or 0 for per-channel scales"
                                : "shorten prompt_len or gen_len");
      }
    }
  }
  const std::string task = fields["choice_task"].get<std::string>();
  const std::string builtin = "builtin:";
  if (task.rfind(builtin, 0) == 0) {
    const auto names = data::builtin_choice_task_names();
    const std::string name = task.substr(builtin.size());
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      return make_error(fmt::format("experiment '{}': unknown built-in choice task '{}'{}", e.label, name,
                                    io::did_you_mean(name, names)),
                        at.at("choice_task"), "built-in tasks: " + io::quoted_list(names));
    }
  } else if (!task.empty()) {
    fs::path p(task);
    if (p.is_relative()) p = fs::path(st.base_dir) / p;
    p = p.lexically_normal();
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) {
      return missing(fmt::format("missing choice task '{}' (no file {})", task, p.string()), "choice_task",
                     "use builtin:corpus-cloze, a JSON Lines task file, or \"\" for none");
    }
    fields["choice_task"] = p.string();
  }
  return Status::Ok();
}

// Expands one entry of `experiments` into st.suite.experiments.
Status expand_entry(ParseState& st, const YAML::Node& node, size_t index, const io::YamlMap* defaults) {
  const std::string ctx = fmt::format("experiment {}", index + 1);
  EL_TRY_ASSIGN(io::YamlMap any, io::YamlMap::open_any(node, st.source, ctx));
  EL_TRY_ASSIGN(std::string axis_text, any.get_choice("axis", kAxes));
  const Axis axis = static_cast<Axis>(std::find(kAxes.begin(), kAxes.end(), axis_text) - kAxes.begin());
  std::vector<std::string> known = {"axis", "label"};
  for (const auto& n : field_names(axis)) known.push_back(n);
  EL_TRY_ASSIGN(io::YamlMap m, io::YamlMap::open(node, st.source, fmt::format("{} ({})", ctx, axis_text), known));
  std::optional<std::string> label_tmpl;
  if (m.has("label")) {
    EL_TRY_ASSIGN(std::string l, m.get<std::string>("label"));
    if (l.empty()) return make_error("key 'label': must not be empty", m.where("label"));
    label_tmpl = l;
  }

  // Field order: the entry's keys, then the defaults', then the rest; the
  // product varies the last list fastest.
  std::vector<std::pair<std::string, std::vector<Value>>> axes_values;
  std::set<std::string> done;
  for (const auto& k : m.keys()) {
    if (k == "axis" || k == "label") continue;
    EL_TRY_ASSIGN(auto vals, sweep_values(*find_field(axis, k), m));
    axes_values.emplace_back(k, std::move(vals));
    done.insert(k);
  }
  if (defaults) {
    for (const auto& k : defaults->keys()) {
      const FieldSpec* f = find_field(axis, k);
      if (!f || done.count(k)) continue;
      EL_TRY_ASSIGN(auto vals, sweep_values(*f, *defaults));
      axes_values.emplace_back(k, std::move(vals));
      done.insert(k);
    }
  }
  for (const auto& f : fields_of(axis)) {
    if (done.count(f.name)) continue;
    if (f.fallback.is_null()) {
      return make_error(fmt::format("missing required key '{}' in {} ({})", f.name, ctx, axis_text), m.where(),
                        "set it in the experiment or in defaults");
    }
    axes_values.push_back({f.name, {{f.fallback, m.where()}}});
  }
  std::vector<std::string> swept;
  for (const auto& [k, vals] : axes_values)
    if (vals.size() > 1) swept.push_back(k);

  std::vector<size_t> idx(axes_values.size(), 0);
  while (true) {
    ExpandedExperiment e;
    e.axis = axis;
    e.where = m.where();
    json fields = json::object();
    std::map<std::string, std::string> at;
    for (size_t i = 0; i < axes_values.size(); ++i) {
      const Value& v = axes_values[i].second[idx[i]];
      fields[axes_values[i].first] = v.v;
      at[axes_values[i].first] = v.where;
    }
    // Label: the template, or the primary field plus the swept fields.
    std::string auto_label;
    const std::string primary = axis == Axis::pretrain ? "card" : "model";
    std::vector<std::string> pieces;
    for (const auto& k : swept)
      if (k != primary) pieces.push_back(label_piece(k, fields[k]));
    if (label_tmpl) {
      EL_TRY_ASSIGN(e.label, fill_template(*label_tmpl, fields, axis_text, m.where("label")));
      if (label_tmpl->find('{') == std::string::npos && !swept.empty()) {
        if (std::find(swept.begin(), swept.end(), primary) != swept.end())
          pieces.insert(pieces.begin(), value_text(fields[primary]));
        e.label += " " + fmt::format("{}", fmt::join(pieces, " "));
      }
    } else {
      pieces.insert(pieces.begin(), value_text(fields[primary]));
      e.label = fmt::format("{}", fmt::join(pieces, " "));
    }
    if (auto [it, fresh] = st.label_where.emplace(e.label, e.where); !fresh) {
      return make_error(fmt::format("duplicate experiment label '{}' (first at {})", e.label, it->second), e.where,
                        "labels name the rows of the results; give the entries distinct labels");
    }
    e.status = "ready";
    std::string source_card;  // a finetune row's pretrained source card; an infer row's card
    std::string model_kind;   // infer rows: kModelPretrained / kModelCard / kModelHf
    if (axis == Axis::pretrain) {
      EL_TRY(check_pretrain(st, e, fields, at));
    } else if (axis == Axis::finetune) {
      EL_TRY(check_finetune(st, e, fields, at, source_card));
    } else {
      EL_TRY(check_infer(st, e, fields, at, source_card, model_kind));
    }
    e.config = {{"axis", axis_text},
                {"fields", fields},
                {"measure",
                 {{"repetitions", st.suite.repetitions},
                  {"warmup_steps", st.suite.warmup_steps},
                  {"min_duration_s", st.suite.min_duration_s}}}};
    if (!source_card.empty()) e.config["source_card"] = source_card;  // for estimate_seconds
    if (!model_kind.empty()) e.config["model_kind"] = model_kind;     // for the runner
    e.hash = config_hash(e.config);
    st.suite.experiments.push_back(std::move(e));
    // Odometer: the last field varies fastest.
    size_t i = axes_values.size();
    bool carry = true;
    while (carry && i > 0) {
      --i;
      if (++idx[i] < axes_values[i].second.size()) {
        carry = false;
      } else {
        idx[i] = 0;
      }
    }
    if (carry) return Status::Ok();
  }
}

}  // namespace

const char* axis_name(Axis a) {
  switch (a) {
    case Axis::finetune: return "finetune";
    case Axis::infer: return "infer";
    default: return "pretrain";
  }
}

const json& ExpandedExperiment::field(const std::string& key) const {
  static const json kNull;
  const auto f = config.find("fields");
  if (f == config.end()) return kNull;
  const auto it = f->find(key);
  return it == f->end() ? kNull : *it;
}

Result<SuiteFile> parse_suite_yaml(const std::string& text, const std::string& source, const std::string& base_dir) {
  EL_TRY_ASSIGN(YAML::Node root, io::parse_yaml(text, source));
  EL_TRY_ASSIGN(io::YamlMap m, io::YamlMap::open(root, source, "suite", kTopKeys));
  ParseState st;
  st.source = source;
  st.base_dir = base_dir;
  SuiteFile& s = st.suite;
  s.path = source;
  EL_TRY(m.read("name", s.name));
  const bool name_ok = !s.name.empty() && s.name.front() != '.' &&
                       s.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                "0123456789._-") == std::string::npos;
  if (!name_ok) {
    return make_error(fmt::format("key 'name': '{}' must be non-empty and use only letters, digits, '.', '_' and "
                                  "'-' (it names the result files)",
                                  s.name),
                      m.where("name"));
  }
  EL_TRY(m.read_optional("description", s.description));
  EL_TRY_ASSIGN(std::string sized, m.get_choice_or("sized_for", {"cpu", "cuda"}, "cpu"));
  s.sized_for = sized == "cuda" ? DeviceKind::cuda : DeviceKind::cpu;
  EL_TRY(m.read_optional("repetitions", s.repetitions));
  if (s.repetitions < 1) {
    return make_error(fmt::format("key 'repetitions': must be at least 1, got {}", s.repetitions),
                      m.where("repetitions"));
  }
  EL_TRY(m.read_optional("warmup_steps", s.warmup_steps));
  if (s.warmup_steps < 0) {
    return make_error(fmt::format("key 'warmup_steps': must not be negative, got {}", s.warmup_steps),
                      m.where("warmup_steps"));
  }
  EL_TRY(m.read_optional("min_duration_s", s.min_duration_s));
  if (s.min_duration_s < 0) {
    return make_error(fmt::format("key 'min_duration_s': must not be negative, got {}", s.min_duration_s),
                      m.where("min_duration_s"));
  }
  EL_TRY(m.read_optional("allow_missing", s.allow_missing));
  if (m.has("mfu_probe")) {
    EL_TRY_ASSIGN(io::YamlMap p, m.get_map("mfu_probe", "mfu_probe", {"label", "card", "batch_size", "seq_len", "steps"}));
    MfuProbe probe;
    EL_TRY(p.read("label", probe.label));
    EL_TRY(p.read("card", probe.card));
    EL_TRY(p.read_optional("batch_size", probe.batch_size));
    EL_TRY(p.read_optional("seq_len", probe.seq_len));
    EL_TRY(p.read_optional("steps", probe.steps));
    if (probe.batch_size <= 0 || probe.seq_len <= 0 || probe.steps <= 0) {
      return make_error("mfu_probe: batch_size, seq_len and steps must be positive", p.where());
    }
    if (auto c = find_model_card(probe.card); !c.ok()) {
      return make_error("mfu_probe: " + c.error().what, p.where("card"), c.error().hint);
    }
    s.mfu_probe = probe;
  }
  std::optional<io::YamlMap> defaults;
  if (m.has("defaults")) {
    EL_TRY_ASSIGN(io::YamlMap d, m.get_map("defaults", "defaults", all_field_names()));
    // Each default is checked with the type of the first axis that has it.
    for (const auto& k : d.keys()) {
      for (Axis a : {Axis::pretrain, Axis::finetune, Axis::infer}) {
        if (const FieldSpec* f = find_field(a, k)) {
          EL_TRY(sweep_values(*f, d));
          break;
        }
      }
    }
    defaults = std::move(d);
  }
  EL_TRY_ASSIGN(std::vector<YAML::Node> entries, m.get_list("experiments"));
  if (entries.empty()) {
    return make_error("the suite has no experiments (an empty matrix)", m.where("experiments"),
                      "add at least one entry under 'experiments:'");
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    EL_TRY(expand_entry(st, entries[i], i, defaults ? &*defaults : nullptr));
  }
  return std::move(st.suite);
}

}  // namespace el::bench
