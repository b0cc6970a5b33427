// suite_files.cpp — finding suite files (by name or path, in the search
// directories), loading them, --filter, their JSON form, and the runner's
// time estimates. Parsing and expansion are in suite_yaml.cpp.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "bench/builtin_suites.h"
#include "bench/suite_yaml.h"
#include "io/file_util.h"
#include "io/suggest.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool has_yaml_extension(const std::string& s) {
  auto ends = [&](std::string_view suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  return ends(".yaml") || ends(".yml");
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

Result<SuiteFile> load_suite_file(const std::string& path) {
  EL_TRY_ASSIGN(std::string text, io::read_file(path));
  std::string base = fs::path(path).parent_path().string();
  if (base.empty()) base = ".";
  return parse_suite_yaml(text, path, base);
}

std::vector<std::string> suite_search_dirs() {
  std::vector<std::string> out;
  for (const auto& models : model_card_search_dirs()) {
    const fs::path p = fs::path(models).parent_path() / "suites";
    std::error_code ec;
    if (fs::is_directory(p, ec)) out.push_back(p.string());
  }
  return out;
}

std::vector<std::string> builtin_suite_file_names() {
  std::set<std::string> names;
  for (const auto& dir : suite_search_dirs()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".yaml") names.insert(e.path().stem().string());
  }
  return {names.begin(), names.end()};
}

Result<SuiteFile> find_suite_file(const std::string& name_or_path) {
  if (has_yaml_extension(name_or_path) || name_or_path.find('/') != std::string::npos)
    return load_suite_file(name_or_path);
  for (const auto& dir : suite_search_dirs()) {
    const fs::path p = fs::path(dir) / (name_or_path + ".yaml");
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return load_suite_file(p.string());
  }
  // quick and gpu-lite first (the suites most people want), then the rest.
  std::vector<std::string> names;
  const auto files = builtin_suite_file_names();
  for (const auto& n : builtin_suite_names())
    if (std::find(files.begin(), files.end(), n) != files.end()) names.push_back(n);
  for (const auto& n : files)
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  return make_error(
      fmt::format("unknown suite '{}'{}; the built-in suites are: {}", name_or_path,
                  io::did_you_mean(name_or_path, names), fmt::join(names, ", ")),
      "--suite", "or pass the path of a suite .yaml file (`efficientllm bench --list` shows them)");
}

Result<std::vector<ExpandedExperiment>> filter_experiments(const std::vector<ExpandedExperiment>& all,
                                                           const std::string& pattern) {
  std::vector<ExpandedExperiment> out;
  std::optional<std::regex> re;
  try {
    re.emplace(pattern, std::regex::ECMAScript | std::regex::icase);
  } catch (const std::regex_error&) {
    re.reset();  // not a regex: a plain substring
  }
  for (const auto& e : all) {
    const bool hit = re ? std::regex_search(e.label, *re) : lower(e.label).find(lower(pattern)) != std::string::npos;
    if (hit) out.push_back(e);
  }
  if (out.empty()) {
    std::vector<std::string> labels;
    for (const auto& e : all) labels.push_back(e.label);
    return make_error(fmt::format("--filter '{}' matches no experiment label", pattern), "--filter",
                      "labels: " + io::quoted_list(labels));
  }
  return out;
}

Result<TrainConfig> pretrain_train_config(const ExpandedExperiment& e, Device device,
                                          const std::string& builtin_data_dir) {
  if (e.axis != Axis::pretrain) {
    return make_error(fmt::format("experiment '{}' is a {} experiment, not pretrain", e.label, axis_name(e.axis)),
                      e.where);
  }
  if (!e.supported) return make_error(fmt::format("experiment '{}': {}", e.label, e.status), e.where);
  const json& f = e.config.at("fields");
  TrainConfig c;
  c.model = f.at("card").get<std::string>();
  const std::string ds = f.at("dataset").get<std::string>();
  c.data_dir = ds == "builtin" ? builtin_data_dir : ds;
  c.device = device;
  c.batch_size = f.at("batch_size").get<int64_t>();
  c.seq_len = f.at("seq_len").get<int64_t>();
  c.grad_accum = f.at("grad_accum").get<int64_t>();
  c.steps = f.at("steps").get<int64_t>();
  c.lr = static_cast<float>(f.at("lr").get<double>());
  c.min_lr = static_cast<float>(f.at("min_lr").get<double>());
  c.warmup_steps = f.at("warmup").get<int64_t>();
  c.eval_batches = f.at("eval_batches").get<int64_t>();
  c.seed = f.at("seed").get<uint64_t>();
  EL_TRY_ASSIGN(c.precision, parse_precision(f.at("precision").get<std::string>()));
  c.timing_warmup_steps = e.config.at("measure").at("warmup_steps").get<int64_t>();
  return c;
}

json suite_file_to_json(const SuiteFile& s) {
  json labels = json::array();
  for (const auto& e : s.experiments) labels.push_back(e.label);
  json probe = nullptr;
  if (s.mfu_probe) {
    const MfuProbe& p = *s.mfu_probe;
    probe = {{"label", p.label}, {"card", p.card}, {"batch_size", p.batch_size}, {"seq_len", p.seq_len},
             {"steps", p.steps}};
  }
  return {{"name", s.name},
          {"description", s.description},
          {"path", s.path},
          {"sized_for", s.sized_for == DeviceKind::cpu ? "cpu" : "cuda"},
          {"repetitions", s.repetitions},
          {"warmup_steps", s.warmup_steps},
          {"min_duration_s", s.min_duration_s},
          {"allow_missing", s.allow_missing},
          {"calibration_dtype", s.calibration_dtype ? json(dtype_name(*s.calibration_dtype)) : json()},
          {"mfu_probe", probe},
          {"experiments", labels}};
}

double assumed_flops_per_second(DeviceKind kind) {
  // Effective training rates (counted FLOPs over wall time), not peaks, from
  // docs/PERFORMANCE.md: the quick suite's tiny cards run at ~110 GFLOP/s on
  // the 2-core machine (~60% MFU), gpu-lite at ~400 TFLOP/s on one H200; the
  // CUDA figure is set lower so that an H100 is not underestimated.
  return kind == DeviceKind::cpu ? 1.0e11 : 3.0e14;
}

std::optional<double> estimate_seconds(const ExpandedExperiment& e, DeviceKind kind) {
  if (e.axis == Axis::infer) return estimate_infer_seconds(e, kind);
  // Rows waiting only for their dataset are estimated too: the time depends
  // on the card and the schedule.
  // A finetune row from a pretrained source: its card, the samples at their
  // cutoff length (an upper bound: most are shorter) and a full backward.
  std::string card_name;
  if (e.axis == Axis::pretrain) {
    card_name = e.field("card").get<std::string>();
  } else if (e.axis == Axis::finetune && e.config.contains("source_card") && e.field("steps").get<int64_t>() > 0) {
    card_name = e.config["source_card"].get<std::string>();
  } else {
    return std::nullopt;
  }
  auto card = find_model_card(card_name);
  if (!card.ok()) return std::nullopt;
  const int64_t T = e.field("seq_len").get<int64_t>();
  const double tokens = static_cast<double>(e.field("steps").get<int64_t>()) *
                        static_cast<double>(e.field("batch_size").get<int64_t>()) * static_cast<double>(T) *
                        static_cast<double>(e.field("grad_accum").get<int64_t>());
  const double reps = static_cast<double>(e.config.at("measure").at("repetitions").get<int64_t>());
  return tokens * flops_per_token(card.value(), T).train() * reps / assumed_flops_per_second(kind);
}

}  // namespace el::bench
