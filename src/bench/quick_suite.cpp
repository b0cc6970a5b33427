#include "bench/quick_suite.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "bench/results.h"
#include "bench/table.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/unigram.h"
#include "data/tokenizer.h"
#include "metrics/calibrate.h"
#include "metrics/proc.h"
#include "metrics/stats.h"
#include "train/trainer.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;

// The suite as data: every variant trains with the same token budget.
struct QuickVariant {
  const char* label;  // the table's "variant" column
  const char* card;   // configs/models/<card>.yaml
};
constexpr QuickVariant kAttentionVariants[] = {{"MHA", "tiny"}, {"GQA", "tiny-gqa"}, {"MQA", "tiny-mqa"}};

struct QuickSettings {
  int vocab_size = 4096;
  int64_t batch_size = 16;
  int64_t seq_len = 128;
  int64_t steps = 400;
  float lr = 3e-3f;
  float min_lr = 3e-4f;
  int64_t warmup_steps = 15;
  int64_t eval_batches = 32;
  // The `small` card MFU probe: a few steps of a realistic shape.
  int64_t small_batch_size = 8;
  int64_t small_seq_len = 256;
  int64_t small_steps = 3;
};

// Tokenizer + shards of the built-in corpus, made once and cached.
Result<std::string> ensure_builtin_dataset(const std::string& cache_dir, int vocab_size, ProgressBar& bar) {
  const std::string tok_prefix = cache_dir + "/tokenizer";
  const std::string data_dir = cache_dir + "/dataset";
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return make_error("cannot create the cache directory: " + ec.message(), cache_dir);
  EL_TRY_ASSIGN(std::vector<std::string> files, data::builtin_corpus_files());
  if (!fs::exists(tok_prefix + ".model")) {
    bar.update("tokenizer", 0, 1, fmt::format("training SentencePiece BPE ({} pieces)", vocab_size), -1);
    data::TokenizerTrainOptions t;
    t.input_files = files;
    t.model_prefix = tok_prefix;
    t.vocab_size = vocab_size;
    EL_TRY(data::train_tokenizer(t));
    bar.update("tokenizer", 1, 1, "done", -1);
    bar.finish();
  }
  if (!fs::exists(data_dir + "/dataset.json")) {
    bar.update("prepare", 0, 1, "tokenizing the built-in corpus", -1);
    data::PrepareOptions p;
    p.inputs = files;
    p.tokenizer_path = tok_prefix + ".model";
    p.out_dir = data_dir;
    EL_TRY(data::prepare_dataset(p));
    bar.update("prepare", 1, 1, "done", -1);
    bar.finish();
  }
  return data_dir;
}

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

double json_double(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; }

}  // namespace

Result<QuickSuiteResult> run_quick_suite(const QuickSuiteOptions& options) {
  QuickSettings s;
  if (options.steps > 0) s.steps = options.steps;
  EL_TRY(ensure_writable_dir(options.results_dir));
  ProgressBar bar;
  EL_TRY_ASSIGN(std::string data_dir,
                ensure_builtin_dataset(options.results_dir + "/cache/builtin-sp" + std::to_string(s.vocab_size),
                                       s.vocab_size, bar));
  EL_TRY_ASSIGN(data::Dataset dataset, data::load_dataset_manifest(data_dir));
  EL_TRY_ASSIGN(double unigram, data::unigram_perplexity(dataset));

  QuickSuiteResult result;
  result.unigram_perplexity = unigram;
  const nlohmann::json platform = metrics::to_json(metrics::collect_platform_info());
  const std::string run_id = timestamp();

  // One calibration for the whole suite, so every MFU has the same denominator.
  bar.update("calibrate", 0, 1, "timing the GEMM peak for MFU", -1);
  EL_TRY_ASSIGN(const metrics::PeakCalibration peak, metrics::try_calibrate_peak_gemm(options.device, 2.0, 0, DType::f32));  // the suite trains in f32
  bar.update("calibrate", 1, 1, fmt::format("{:.1f} GFLOP/s", peak.gflops), -1);
  bar.finish();
  result.peak_gflops = peak.gflops;
  result.peak_dtype = peak.dtype;
  result.peak_datasheet_gflops = peak.datasheet_gflops;

  struct Row { std::string label; TrainConfig cfg; bool quality; };
  std::vector<Row> rows;
  for (const auto& v : kAttentionVariants) {
    TrainConfig c;
    c.model = v.card;
    c.data_dir = data_dir;
    c.device = options.device;
    c.batch_size = s.batch_size;
    c.seq_len = s.seq_len;
    c.steps = s.steps;
    c.lr = s.lr;
    c.min_lr = s.min_lr;
    c.warmup_steps = s.warmup_steps;
    c.eval_batches = s.eval_batches;
    c.peak = peak;
    rows.push_back({v.label, c, true});
  }
  if (options.include_small) {
    TrainConfig c = rows.front().cfg;
    c.model = "small";
    c.batch_size = s.small_batch_size;
    c.seq_len = s.small_seq_len;
    c.steps = s.small_steps;
    c.warmup_steps = 0;
    c.eval_batches = 1;
    rows.push_back({"small (MFU probe)", c, false});
  }

  TextTable table({"variant", "card", "params", "PPL", "AMU GB", "MFU %", "AL s", "TT tok/param/s",
                   "tok/s", "AEC W"});
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const std::string label = fmt::format("[{}/{}] {}", i + 1, rows.size(), row.label);
    TrainCallbacks cb;
    cb.on_step = [&](const StepRecord& r, const TrainConfig& c) {
      bar.update(label, r.step, c.steps, fmt::format("loss {:.3f}", r.loss),
                 r.seconds * static_cast<double>(c.steps - r.step));
    };
    auto report = run_training(row.cfg, cb);
    bar.finish();
    nlohmann::json rec = {{"schema", "efficientllm.result.v1"}, {"suite", "quick"}, {"run_id", run_id},
                          {"axis", "pretrain"}, {"variant", row.label}, {"config", row.cfg.to_json()},
                          {"platform", platform}};
    if (!report.ok()) {
      // A failing experiment is recorded and the suite goes on.
      rec["status"] = "failed";
      rec["error"] = report.error().message();
      table.add_row({row.label, row.cfg.model, "-", "failed", "", "", "", "", "", ""});
      result.records.push_back(rec);
      continue;
    }
    const TrainReport& r = report.value();
    const auto& m = r.metrics;
    const auto& me = m["memory_energy"];
    rec["status"] = "ok";
    rec["card"] = r.card.name;
    rec["parameters"] = r.parameters;
    rec["unigram_perplexity"] = unigram;
    rec["perplexity"] = row.quality ? metrics::json_number_or_null(r.final_perplexity()) : nlohmann::json();
    rec["val_loss"] = row.quality ? metrics::json_number_or_null(r.final_val_loss()) : nlohmann::json();
    rec["metrics"] = m;
    result.records.push_back(rec);
    const double amu = json_double(me["amu_live_gb"]);
    const double aec = json_double(me["avg_power_w"]);
    table.add_row({row.label, r.card.name, format_number(static_cast<double>(r.parameters)),
                   row.quality ? format_number(r.final_perplexity()) : "-", format_number(amu),
                   format_number(100.0 * json_double(m["mfu"])), format_number(json_double(m["al_seconds"]["mean"])),
                   format_number(json_double(m["tt_tokens_per_param_per_second"])),
                   format_number(json_double(m["tokens_per_second"])), std::isnan(aec) ? "null" : format_number(aec)});
  }

  result.table = table.render();
  result.jsonl_path = options.results_dir + "/quick-" + run_id + ".jsonl";
  result.csv_path = options.results_dir + "/quick-" + run_id + ".csv";
  EL_TRY(write_jsonl(result.jsonl_path, result.records));
  EL_TRY(write_csv(result.csv_path, result.records));
  return result;
}

}  // namespace el::bench
