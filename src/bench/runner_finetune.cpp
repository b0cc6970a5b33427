#include "bench/runner_finetune.h"

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "bench/table.h"
#include "data/sft_builtin.h"
#include "data/sha256.h"

namespace el::bench {

namespace fs = std::filesystem;
using nlohmann::json;

std::string pretrain_checkpoint_dir(const std::string& results_dir, const std::string& config_hash) {
  return fmt::format("{}/checkpoints/{}", results_dir, config_hash.substr(0, 16));
}

finetune::FinetuneConfig finetune_experiment_config(const ExpandedExperiment& e, Device device,
                                                    const std::string& results_dir, int64_t timing_warmup) {
  finetune::FinetuneConfig c;
  const json& f = e.config.at("fields");
  const std::string model = f.at("model").get<std::string>();
  if (model.rfind(kPretrainedPrefix, 0) != 0) c.hf_dir = model;
  const std::string dataset = f.at("dataset").get<std::string>();
  c.data = {dataset};
  c.cache_dir = results_dir + "/cache";
  // The suite checked the name against the same list (suite_yaml.cpp).
  c.method = finetune::parse_method(f.at("method").get<std::string>()).value();
  c.batch_size = f.at("batch_size").get<int64_t>();
  c.grad_accum = f.at("grad_accum").get<int64_t>();
  c.lr = static_cast<float>(f.at("lr").get<double>());
  c.epochs = f.at("epochs").get<int64_t>();
  c.steps = f.at("steps").get<int64_t>();
  c.cutoff_len = f.at("seq_len").get<int64_t>();
  c.seq_len = 0;
  c.precision = parse_precision(f.at("precision").get<std::string>()).value();
  c.lora.r = f.at("lora_r").get<int64_t>();
  c.lora.alpha = static_cast<float>(f.at("lora_alpha").get<double>());
  c.device = device;
  c.timing_warmup_steps = timing_warmup;
  return c;
}

Result<json> sft_data_identity(const finetune::FinetuneConfig& c) {
  json files = json::array();
  for (const std::string& d : c.data) {
    std::string path = d;
    if (d == "builtin") {
      EL_TRY_ASSIGN(path, data::ensure_builtin_sft(c.cache_dir, {}));
    }
    EL_TRY_ASSIGN(std::string sha, data::sha256_file(path));
    files.push_back({{"name", d == "builtin" ? "builtin" : fs::path(d).filename().string()}, {"sha256", sha}});
  }
  return json{{"files", files}};
}

Result<json> finetune_resolved_config(const ExpandedExperiment& e, const finetune::FinetuneConfig& c,
                                      const json& model_identity, const json& data_identity, bool isolated) {
  json ft = c.to_json();
  // Paths and the device index say where, not what.
  for (const char* k : {"hf_dir", "init_checkpoint", "card", "tokenizer", "data", "device"}) ft.erase(k);
  return json{{"axis", axis_name(e.axis)},
              {"finetune", ft},
              {"model", model_identity},
              {"dataset", data_identity},
              {"device_kind", c.device.is_cpu() ? "cpu" : "cuda"},
              {"measure", e.config.value("measure", json::object())},
              {"isolated", isolated}};
}

std::vector<std::string> finetune_command_line(const finetune::FinetuneConfig& c, const std::string& report_path) {
  const auto num = [](auto v) { return fmt::format("{}", v); };
  std::vector<std::string> a = {"finetune"};
  if (!c.hf_dir.empty()) a.insert(a.end(), {"--hf", c.hf_dir});
  if (!c.init_checkpoint.empty()) a.insert(a.end(), {"--init", c.init_checkpoint});
  if (!c.card.empty()) a.insert(a.end(), {"--model", c.card});
  if (!c.tokenizer.empty()) a.insert(a.end(), {"--tokenizer", c.tokenizer});
  a.push_back("--data");
  for (const auto& d : c.data) a.push_back(d);
  a.insert(a.end(), {"--cache-dir", c.cache_dir, "--format", c.format, "--template", c.template_name,
                     "--cutoff-len", num(c.cutoff_len), "--val-fraction", num(c.val_fraction),
                     "--method", finetune::method_name(c.method), "--lora-r", num(c.lora.r),
                     "--lora-alpha", num(c.lora.alpha), "--lora-dropout", num(c.lora.dropout),
                     "--loraplus-ratio", num(c.loraplus_ratio), "--freeze-k", num(c.freeze.k),
                     "--device", c.device.str(), "--precision", precision_name(c.precision),
                     "--batch-size", num(c.batch_size), "--grad-accum", num(c.grad_accum),
                     "--seq-len", num(c.seq_len), "--pad-to-multiple", num(c.pad_to_multiple), "--epochs", num(c.epochs), "--steps", num(c.steps),
                     "--lr", num(c.lr), "--warmup-ratio", num(c.warmup_ratio),
                     "--weight-decay", num(c.weight_decay), "--grad-clip", num(c.grad_clip),
                     "--eval-every", num(c.eval_every), "--eval-batches", num(c.eval_batches),
                     "--seed", num(c.seed), "--sample-interval-ms", num(c.sample_interval_ms),
                     "--timing-warmup", num(c.timing_warmup_steps), "--report", report_path});
  if (c.freeze.mode == finetune::FreezeConfig::Mode::first_k_frozen) {
    a.insert(a.end(), {"--freeze-mode", "first_k_frozen"});
  }
  return a;
}

std::string render_finetune_table(const std::vector<SuiteRow>& rows) {
  TextTable table({"variant", "model", "method", "trainable", "train loss", "val loss", "AMU GB", "AL s",
                   "samples/s", "ST smp/param/s", "PCU %", "AEC W"});
  int n = 0;
  for (const auto& row : rows) {
    // Rows that cannot run stay in the main table (render_suite_table).
    if (row.record.value("axis", "") != "finetune" || row.status == "not_supported") continue;
    ++n;
    std::string label = row.label;
    if (row.cached) label += " (cached)";
    // The resolved config's "finetune" (a run row) or the suite's "fields" (not supported).
    const json& cfg = row.record.value("config", json::object());
    const std::string method = cfg.value("finetune", cfg.value("fields", json::object())).value("method", "");
    if (row.status != "ok" && row.status != "partial") {
      table.add_row({label, row.card, method, "-", row.status, "", "", "", "", "", "", ""});
      continue;
    }
    const json& s = row.record.value("summary", json::object());
    const auto mean = [&](const char* k) {
      return s.contains(k) && s[k].contains("mean") && s[k]["mean"].is_number() ? s[k]["mean"].get<double>() : NAN;
    };
    const json& run0 = row.record.value("runs", json::array()).empty() ? json::object() : row.record["runs"][0];
    const double trainable = run0.value("trainable_parameters", json()).is_number()
                                 ? run0["trainable_parameters"].get<double>()
                                 : NAN;
    const double aec = mean("aec_avg_power_w");
    const double pcu = mean("pcu");
    table.add_row({label, row.card, method, format_number(trainable), format_number(mean("train_loss")),
                   format_number(mean("val_loss")), format_number(mean("amu_live_gb")),
                   format_number(mean("al_seconds")), format_number(mean("samples_per_second")),
                   format_number(mean("st_samples_per_param_per_second")),
                   std::isnan(pcu) ? "null" : format_number(100.0 * pcu), std::isnan(aec) ? "null" : format_number(aec)});
  }
  return n == 0 ? "" : table.render();
}

}  // namespace el::bench
