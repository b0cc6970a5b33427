// The runner's parts that do not run anything (runner.h, "the parts"): the
// repetition rule, the resolved config and the dataset identity it hashes,
// the index of earlier results, experiment records, and the child's command line.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "bench/runner.h"
#include "data/sha256.h"
#include "io/atomic_file.h"
#include "io/file_util.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Size and modification time (ns since the Unix epoch): what tells a changed
// shard from an unchanged one without reading it.
Result<std::pair<int64_t, int64_t>> size_and_mtime(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return make_error(fmt::format("cannot read the shard: {}", std::strerror(errno)), path);
  return std::pair<int64_t, int64_t>{static_cast<int64_t>(st.st_size),
                                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

}  // namespace

bool need_another_repetition(int64_t declared, double min_duration_s, int64_t done, double measured_s) {
  if (done < declared) return true;
  return measured_s < min_duration_s && done < kMaxRepetitionFactor * declared;
}

double measured_seconds(const json& run) {
  const json::json_pointer n("/metrics/al_seconds/n"), mean("/metrics/al_seconds/mean");
  if (!run.is_object() || !run.contains(n) || !run.contains(mean)) return 0;
  if (!run.at(n).is_number() || !run.at(mean).is_number()) return 0;
  const double v = run.at(n).get<double>() * run.at(mean).get<double>();
  return std::isfinite(v) && v > 0 ? v : 0;
}

Result<json> dataset_identity(const data::Dataset& d, const std::string& cache_file) {
  // The files, with what tells a changed file from an unchanged one.
  json files = json::array();
  std::vector<std::pair<std::string, std::string>> shards;  // split, path
  for (const auto& p : d.train_shards) shards.emplace_back("train", p);
  for (const auto& p : d.val_shards) shards.emplace_back("val", p);
  for (const auto& [split, path] : shards) {
    EL_TRY_ASSIGN(auto size_mtime, size_and_mtime(path));
    files.push_back({split, fs::path(path).filename().string(), size_mtime.first, size_mtime.second});
  }
  std::error_code ec;
  const std::string key = fs::absolute(d.dir, ec).lexically_normal().string();
  json cache = json::object();
  if (fs::exists(cache_file, ec)) {
    auto text = io::read_file(cache_file);
    if (text.ok()) cache = json::parse(text.value(), nullptr, /*allow_exceptions=*/false);
    if (!cache.is_object()) cache = json::object();  // unreadable: recomputed and rewritten
  }
  std::string shards_sha;
  if (cache.contains(key) && cache[key].is_object() && cache[key].value("files", json()) == files &&
      cache[key].value("shards_sha256", json()).is_string()) {
    shards_sha = cache[key]["shards_sha256"].get<std::string>();
  } else {
    std::string lines;
    for (size_t i = 0; i < shards.size(); ++i) {
      EL_TRY_ASSIGN(std::string sha, data::sha256_file(shards[i].second));
      lines += fmt::format("{} {} {}\n", shards[i].first, files[i][1].get<std::string>(), sha);
    }
    shards_sha = data::sha256_hex(lines);
    cache[key] = {{"files", files}, {"shards_sha256", shards_sha}};
    // Only a cache: a failure to write it costs a re-hash next time, nothing else.
    fs::create_directories(fs::path(cache_file).parent_path(), ec);
    (void)io::write_file_atomic(cache_file, cache.dump(1) + "\n");
  }
  return json{{"tokenizer_sha256", d.tokenizer_sha256}, {"vocab_size", d.vocab_size},
              {"bos_id", d.bos_id},                     {"eos_id", d.eos_id},
              {"train_tokens", d.train_tokens},         {"val_tokens", d.val_tokens},
              {"train_documents", d.train_documents},   {"val_documents", d.val_documents},
              {"shards_sha256", shards_sha}};
}

Result<json> resolved_config(const ExpandedExperiment& e, const TrainConfig& cfg, const json& dataset_identity,
                             bool isolated) {
  auto card = find_model_card(cfg.model);
  if (!card.ok()) {
    return make_error(fmt::format("experiment '{}': {}", e.label, card.error().what), e.where, card.error().hint);
  }
  json train = cfg.to_json();
  // Paths and the device index say where, not what: the same data, card and
  // device kind give the same result wherever they are.
  train.erase("data_dir");
  train.erase("device");
  train["model"] = card.value().name;
  return json{{"axis", axis_name(e.axis)},
              {"train", train},
              {"model_card", model_card_to_yaml(card.value())},
              {"dataset", dataset_identity},
              {"device_kind", cfg.device.is_cpu() ? "cpu" : "cuda"},
              {"measure", e.config.value("measure", json::object())},
              {"mfu_probe", e.mfu_probe},
              {"isolated", isolated}};
}

const CachedRecord* ResultIndex::find(const std::string& config_hash) const {
  const auto it = ok.find(config_hash);
  return it == ok.end() ? nullptr : &it->second;
}

ResultIndex index_results_dir(const std::string& dir) {
  ResultIndex index;
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".jsonl" && entry.is_regular_file(ec)) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto read = read_jsonl_records(f);
    if (!read.ok()) {
      index.warnings.push_back(fmt::format("{} (its records are not used to skip experiments)",
                                           read.error().message()));
      continue;
    }
    for (const auto& w : read->warnings) index.warnings.push_back(w);
    for (size_t i = 0; i < read->records.size(); ++i) {
      const json& r = read->records[i];
      if (r.value("status", "") != "ok" || !r.contains("config_hash") || !r["config_hash"].is_string()) continue;
      index.ok[r["config_hash"].get<std::string>()] = {read->sources[i], r};
    }
  }
  return index;
}

Result<json> experiment_record(const ExperimentInfo& info, const std::vector<json>& runs, const json& build,
                               const json& machine) {
  if (runs.empty()) return make_result_record(info, {}, build, machine);
  // One record per repetition, as separate processes would write them, then
  // the one merge path (also what `compare` and `report` do on reading).
  std::vector<json> records;
  for (const auto& run : runs) records.push_back(make_result_record(info, {run}, build, machine));
  return merge_repetition_records(records);
}

std::vector<std::string> train_command_line(const TrainConfig& c, const std::string& report_path) {
  const auto num = [](auto v) { return fmt::format("{}", v); };
  std::vector<std::string> a = {"train",          "--model",      c.model,
                                "--data",         c.data_dir,     "--device",
                                c.device.str(),   "--precision",  precision_name(c.precision),
                                "--batch-size",   num(c.batch_size), "--seq-len",
                                num(c.seq_len),   "--grad-accum", num(c.grad_accum),
                                "--steps",        num(c.steps),   "--lr",
                                num(c.lr),        "--min-lr",     num(c.min_lr),
                                "--warmup",       num(c.warmup_steps), "--weight-decay",
                                num(c.weight_decay), "--beta1",   num(c.beta1),
                                "--beta2",        num(c.beta2),   "--grad-clip",
                                num(c.grad_clip), "--eval-every", num(c.eval_every),
                                "--eval-batches", num(c.eval_batches), "--seed",
                                num(c.seed),      "--sample-interval-ms", num(c.sample_interval_ms),
                                "--timing-warmup", num(c.timing_warmup_steps),
                                "--max-nonfinite-skips", num(c.max_nonfinite_skips),
                                "--report",       report_path};
  if (c.peak) {
    a.insert(a.end(), {"--peak-gflops", num(c.peak->gflops), "--peak-dtype", c.peak->dtype});
  }
  if (!c.out_dir.empty()) a.insert(a.end(), {"--out", c.out_dir});  // a finetune row starts from its checkpoint
  return a;
}

}  // namespace el::bench
