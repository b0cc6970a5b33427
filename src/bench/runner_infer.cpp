#include "bench/runner_infer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>

#include "bench/table.h"
#include "data/choice_task.h"
#include "data/sha256.h"

namespace el::bench {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_int_precision(const std::string& p) { return p == "int8" || p == "int4"; }

// The mean of a record's summary entry, NaN when absent.
double summary_mean(const json& record, const char* metric) {
  const json& s = record.value("summary", json::object());
  if (!s.is_object() || !s.contains(metric) || !s[metric].is_object()) return NAN;
  const json& m = s[metric].value("mean", json());
  return m.is_number() ? m.get<double>() : NAN;
}

}  // namespace

infer::InferExperimentConfig infer_experiment_config(const ExpandedExperiment& e, Device device,
                                                     const InferPretrainedSource& src) {
  infer::InferExperimentConfig c;
  const json& f = e.config.at("fields");
  const std::string kind = e.config.value("model_kind", "");
  const std::string model = f.at("model").get<std::string>();
  if (kind == kModelPretrained) {
    c.source.checkpoint = src.checkpoint;
    c.tokenizer = src.tokenizer;
    c.val_shards = src.val_shards;
  } else if (kind == kModelCard) {
    c.source.card = model;
  } else {
    c.source.hf_dir = model;
  }
  c.device = device;
  c.precision = f.at("precision").get<std::string>();
  if (is_int_precision(c.precision)) {
    c.act_precision = f.at("act_precision").get<std::string>();
    // The suite checked the name against the same list (suite_yaml.cpp).
    c.method = quant::parse_quant_method(f.at("quant_method").get<std::string>()).value();
    c.group_size = f.at("group_size").get<int64_t>();
    c.symmetric = f.at("scheme") == "symmetric";
    if (c.method == quant::QuantMethod::gptq) {
      c.calibration = {kind == kModelPretrained ? src.dataset_dir : std::string("builtin")};
      c.calibration_samples = f.at("calib_samples").get<int64_t>();
      c.calibration_seq_len = f.at("calib_seq_len").get<int64_t>();
    }
  } else {
    c.act_precision = c.precision;  // a float row computes in its own dtype
  }
  c.eval_tokens = f.at("eval_tokens").get<int64_t>();
  c.choice_task = f.at("choice_task").get<std::string>();
  c.choice_items = f.at("choice_items").get<int64_t>();
  if (kind == kModelCard) {
    // Random weights have no quality to measure (and no tokenizer for a task).
    c.choice_task.clear();
    c.choice_items = 0;
    c.eval_tokens = 0;
  }
  // parse_suite_yaml normalised the list.
  c.bench.batch_sizes = parse_batch_sizes(f.at("batch_sizes").get<std::string>(), "batch_sizes").value();
  c.bench.prompt_len = f.at("prompt_len").get<int64_t>();
  c.bench.gen_len = f.at("gen_len").get<int64_t>();
  c.bench.warmup = e.config.at("measure").at("warmup_steps").get<int64_t>();
  return c;
}

Result<json> hf_dir_identity(const std::string& dir) {
  EL_TRY_ASSIGN(std::string sha, data::sha256_file(dir + "/config.json"));
  json files = json::array();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") {
      files.push_back({entry.path().filename().string(), entry.file_size(ec)});
    }
  }
  std::sort(files.begin(), files.end());
  return json{{"config_sha256", sha}, {"safetensors", files}};
}

Result<json> choice_task_identity(const std::string& task) {
  if (task.empty()) return json();
  const std::string builtin = "builtin:";
  if (task.rfind(builtin, 0) == 0) {
    return json{{"builtin", task.substr(builtin.size())}, {"version", data::kCorpusClozeVersion}};
  }
  EL_TRY_ASSIGN(std::string sha, data::sha256_file(task));
  return json{{"file", fs::path(task).filename().string()}, {"sha256", sha}};
}

Result<json> infer_resolved_config(const ExpandedExperiment& e, const infer::InferExperimentConfig& c,
                                   const json& model_identity, bool isolated) {
  json inf = infer::to_json(c);
  // Paths say where, not what: the model's identity replaces "model", and
  // GPTQ's calibration text is the pretrained source's (covered by its hash)
  // or the built-in corpus.
  inf.erase("model");
  const bool gptq = is_int_precision(c.precision) && c.method == quant::QuantMethod::gptq;
  inf["calibration"] = !gptq ? json()
                       : e.config.value("model_kind", "") == kModelPretrained ? json("source train shards")
                                                                               : json("builtin");
  EL_TRY_ASSIGN(inf["choice_task"], choice_task_identity(c.choice_task));
  return json{{"axis", axis_name(e.axis)},
              {"infer", inf},
              {"model", model_identity},
              {"device_kind", c.device.is_cpu() ? "cpu" : "cuda"},
              {"measure", e.config.value("measure", json::object())},
              {"isolated", isolated}};
}

void fill_infer_run(json& run, const json& report) {
  run["status"] = "ok";
  for (const char* k : {"card", "parameters", "precision", "quantization", "quality", "bench", "metrics"}) {
    run[k] = report.value(k, json());
  }
  if (!run["metrics"].is_object()) run["metrics"] = json::object();
  json& m = run["metrics"];
  run["perplexity"] = m.value("perplexity", json());
  const json& batches = run["bench"].is_object() ? run["bench"].value("batches", json::array()) : json::array();
  if (batches.is_array() && !batches.empty()) m["memory_energy"] = batches.back().value("memory_energy", json());
  if (!m.value("bits_per_weight", json()).is_number()) m["bits_per_weight"] = m.value("bits", json());
  run["measured_seconds"] = infer_measured_seconds(run);
}

double infer_measured_seconds(const json& run) {
  const json::json_pointer p("/bench/batches");
  if (!run.is_object() || !run.contains(p) || !run.at(p).is_array()) return 0;
  double total = 0;
  for (const json& b : run.at(p)) {
    const json::json_pointer t("/raw/total_s");
    if (!b.is_object() || !b.contains(t) || !b.at(t).is_array()) continue;
    for (const json& v : b.at(t)) {
      if (v.is_number() && std::isfinite(v.get<double>())) total += v.get<double>();
    }
  }
  return total;
}

std::vector<McrResult> compute_mcr(const std::vector<McrInput>& rows) {
  std::vector<McrResult> out(rows.size());
  std::map<std::string, size_t> reference;  // model -> its first bf16 row
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].precision == "bf16") reference.emplace(rows[i].model, i);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto it = reference.find(rows[i].model);
    if (it == reference.end()) continue;
    const McrInput& r = rows[i];
    const McrInput& b = rows[it->second];
    double quality = NAN;
    if (it->second == i) {
      quality = 1;
    } else if (std::isfinite(r.acc) && std::isfinite(b.acc) && b.acc > 0) {
      quality = r.acc / b.acc;
    } else if (std::isfinite(r.perplexity) && std::isfinite(b.perplexity) && r.perplexity > 0) {
      quality = b.perplexity / r.perplexity;
    }
    if (std::isfinite(r.bits) && r.bits > 0) out[i].mcr = 16.0 / r.bits * quality;
    if (std::isfinite(r.weight_bytes) && r.weight_bytes > 0 && std::isfinite(b.weight_bytes)) {
      out[i].mcr_bytes = b.weight_bytes / r.weight_bytes * quality;
    }
  }
  return out;
}

std::string render_infer_table(const std::vector<SuiteRow>& rows) {
  // Rows that cannot run stay in the main table (render_suite_table).
  std::vector<const SuiteRow*> mine;
  for (const auto& row : rows) {
    if (row.record.value("axis", "") == "infer" && row.status != "not_supported") mine.push_back(&row);
  }
  if (mine.empty()) return "";
  const auto ok = [](const SuiteRow& r) { return r.status == "ok" || r.status == "partial"; };
  // IT at each batch size: the mean over the successful repetitions.
  std::set<int64_t> batches;
  std::vector<std::map<int64_t, double>> it_by_batch(mine.size());
  std::vector<McrInput> mcr_in(mine.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    const json& rec = mine[i]->record;
    const json& cfg = rec.value("config", json::object());
    // The resolved config's "infer" (a run row) or the suite's "fields".
    const json& inf = cfg.value("infer", cfg.value("fields", json::object()));
    McrInput& m = mcr_in[i];
    m.model = cfg.contains("model") ? cfg["model"].dump() : mine[i]->card;
    m.precision = inf.value("precision", "");
    m.bits = infer::precision_bits(m.precision);
    if (!ok(*mine[i])) continue;
    m.acc = summary_mean(rec, "choice_acc");
    m.perplexity = summary_mean(rec, "perplexity");
    m.weight_bytes = summary_mean(rec, "weight_bytes");
    std::map<int64_t, std::pair<double, int>> sums;
    for (const json& run : rec.value("runs", json::array())) {
      if (run.value("status", "") != "ok") continue;
      const json::json_pointer p("/metrics/it_tokens_per_second_by_batch");
      if (!run.contains(p) || !run.at(p).is_object()) continue;
      for (const auto& [b, v] : run.at(p).items()) {
        if (!v.is_number()) continue;
        const int64_t batch = std::stoll(b);
        sums[batch].first += v.get<double>();
        sums[batch].second += 1;
        batches.insert(batch);
      }
    }
    for (const auto& [b, s] : sums) it_by_batch[i][b] = s.first / s.second;
  }
  const std::vector<McrResult> mcr = compute_mcr(mcr_in);
  std::vector<std::string> header = {"variant", "model", "precision", "bits/weight", "PPL", "acc"};
  for (int64_t b : batches) header.push_back(fmt::format("IT b{} tok/s", b));
  for (const char* h : {"TTFT ms", "TPOT ms", "AMU GB", "J/token", "MCR", "MCR bytes"}) header.push_back(h);
  TextTable table(header);
  const auto num = [](double v) { return std::isnan(v) ? std::string("-") : format_number(v); };
  for (size_t i = 0; i < mine.size(); ++i) {
    const SuiteRow& row = *mine[i];
    std::string label = row.label;
    if (row.cached) label += " (cached)";
    const json& cfg = row.record.value("config", json::object());
    const json& inf = cfg.value("infer", cfg.value("fields", json::object()));
    std::string precision = inf.value("precision", "");
    if (is_int_precision(precision)) precision += " " + inf.value("method", inf.value("quant_method", ""));
    std::vector<std::string> cells = {label, row.card, precision};
    if (!ok(row)) {
      cells.push_back("-");
      cells.push_back(row.status);
      cells.resize(header.size());
      table.add_row(cells);
      continue;
    }
    if (row.status == "partial") cells[0] += " (partial)";
    const json& rec = row.record;
    const double jpt = summary_mean(rec, "j_per_token");
    cells.insert(cells.end(), {num(summary_mean(rec, "bits_per_weight")), num(summary_mean(rec, "perplexity")),
                               num(summary_mean(rec, "choice_acc"))});
    for (int64_t b : batches) {
      const auto it = it_by_batch[i].find(b);
      cells.push_back(it == it_by_batch[i].end() ? "-" : format_number(it->second));
    }
    cells.insert(cells.end(), {num(1e3 * summary_mean(rec, "ttft_s")), num(1e3 * summary_mean(rec, "tpot_s")),
                               num(summary_mean(rec, "amu_live_gb")), std::isnan(jpt) ? "null" : format_number(jpt),
                               num(mcr[i].mcr), num(mcr[i].mcr_bytes)});
    table.add_row(cells);
  }
  return table.render() +
         "bits/weight: of the quantized projections (codes + scales), or the float width; PPL on the source's "
         "validation split;\nacc: multiple-choice accuracy; IT: generated tokens/s (prefill included); TTFT, TPOT: "
         "medians at the smallest batch;\nAMU at the largest batch; MCR: (16 / bits) x quality relative to the "
         "model's bf16 row (accuracy ratio, else\nthe perplexity ratio bf16 / this); MCR bytes: the same with the "
         "bf16 row's weight bytes over this row's; \"-\": not measured\n(a model card has random weights: speed "
         "only) or no bf16 row of the model.\n";
}

}  // namespace el::bench
