#include "bench/runner.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "bench/child_process.h"
#include "bench/progress.h"
#include "bench/runner_finetune.h"
#include "bench/runner_infer.h"
#include "bench/table.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "data/unigram.h"
#include "metrics/proc.h"
#include "metrics/stats.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kNoSlot = std::numeric_limits<size_t>::max();

// Tokenizer + shards of the built-in corpus, made once and cached (one cache
// per vocabulary size, so suites with different vocabularies coexist).
Result<std::string> ensure_builtin_dataset(const std::string& cache_dir, int64_t vocab_size) {
  const std::string tok_prefix = cache_dir + "/tokenizer";
  const std::string data_dir = cache_dir + "/dataset";
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return make_error("cannot create the cache directory: " + ec.message(), cache_dir);
  if (fs::exists(tok_prefix + ".model") && fs::exists(data_dir + "/dataset.json")) return data_dir;
  ProgressBar bar;
  EL_TRY_ASSIGN(std::vector<std::string> files, data::builtin_corpus_files());
  if (!fs::exists(tok_prefix + ".model")) {
    bar.update("tokenizer", 0, 1, fmt::format("training SentencePiece BPE ({} pieces)", vocab_size), -1);
    data::TokenizerTrainOptions t;
    t.input_files = files;
    t.model_prefix = tok_prefix;
    t.vocab_size = static_cast<int>(vocab_size);
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

// A dataset the suite trains on: loaded (and for the built-in one, made) once.
struct DatasetCtx {
  std::string name;
  data::Dataset dataset;
  json identity;
  double unigram = NAN;
};

// One row of the suite as the runner sees it.
struct Item {
  const ExpandedExperiment* e = nullptr;
  TrainConfig cfg;                // pretrain rows
  bool is_finetune = false;
  finetune::FinetuneConfig ft;    // finetune rows
  bool is_infer = false;
  infer::InferExperimentConfig inf;  // infer rows
  std::string checkpoint;         // pretrain rows a finetune / infer row starts from: the file it must leave
  json config;  // resolved (runnable rows) or the suite-level config (not supported)
  std::string hash;
  DatasetCtx* dataset = nullptr;
  const CachedRecord* cached = nullptr;
  size_t eta_slot = kNoSlot;
};

DType calibration_dtype(const SuiteFile& s, const TrainConfig& c) {
  if (s.calibration_dtype) return *s.calibration_dtype;
  // The rule of run_training: the CPU backend computes bf16/f16 in f32.
  return c.device.is_cpu() ? DType::f32 : precision_dtype(c.precision);
}

// "train  40% loss ..." — the child's progress lines (ProgressBar's plain
// mode, its stderr being a pipe) give the fraction of its steps done.
class ChildProgressParser {
 public:
  // Returns the newest fraction seen in `data`, or -1.
  double feed(const char* data, size_t n) {
    double latest = -1;
    for (size_t i = 0; i < n; ++i) {
      const char c = data[i];
      if (c != '\n' && c != '\r') {
        if (line_.size() < 512) line_ += c;
        continue;
      }
      const bool train = line_.rfind("train ", 0) == 0;
      if (train || line_.rfind("finetune ", 0) == 0) {
        size_t p = train ? 5 : 8;
        while (p < line_.size() && line_[p] == ' ') ++p;
        size_t q = p;
        while (q < line_.size() && std::isdigit(static_cast<unsigned char>(line_[q]))) ++q;
        if (q > p && q < line_.size() && line_[q] == '%') latest = std::stod(line_.substr(p, q - p)) / 100.0;
      }
      line_.clear();
    }
    return latest;
  }

 private:
  std::string line_;
};

struct Repetition {
  json run;                  // the run object (results.h: "runs[i]")
  bool interrupted = false;  // stopped by Ctrl-C: not a result
};

// One repetition, in this process or as `efficientllm train` in a child.
Repetition run_repetition(const Item& it, const SuiteOptions& o, int64_t rep, const std::string& report_path,
                          const std::function<void(double, const std::string&)>& progress) {
  const TrainConfig& cfg = it.cfg;
  Repetition out;
  json& run = out.run;
  run["repetition"] = rep;
  run["isolated"] = !o.in_process;
  const auto t0 = std::chrono::steady_clock::now();
  json report;  // {card, parameters, perplexity, val_loss, metrics}
  std::string error;
  if (o.in_process) {
    TrainCallbacks cb;
    cb.on_step = [&](const StepRecord& r, const TrainConfig& c) {
      progress(static_cast<double>(r.step) / static_cast<double>(c.steps), fmt::format("loss {:.3f}", r.loss));
    };
    if (it.is_infer) {
      progress(-1, "quality, then speed");
      auto r = infer::run_infer_experiment(it.inf);
      if (r.ok()) {
        report = std::move(r.value());
      } else {
        error = r.error().message();
      }
    } else if (it.is_finetune) {
      auto r = finetune::run_finetune(it.ft, cb);
      if (r.ok()) {
        report = finetune::report_to_json(it.ft, r.value());
      } else {
        error = r.error().message();
      }
    } else if (auto r = run_training(cfg, cb); r.ok()) {
      report = {{"card", r->card.name},
                {"parameters", r->parameters},
                {"perplexity", metrics::json_number_or_null(r->final_perplexity())},
                {"val_loss", metrics::json_number_or_null(r->final_val_loss())},
                {"metrics", r->metrics}};
    } else {
      error = r.error().message();
    }
  } else {
    ChildOptions co;
    co.argv = it.is_infer      ? infer::infer_command_line(it.inf, report_path)
              : it.is_finetune ? finetune_command_line(it.ft, report_path)
                               : train_command_line(cfg, report_path);
    co.argv.insert(co.argv.begin(), o.self_exe);
    co.timeout_s = o.timeout_s;
    co.stdout_path = "/dev/null";
    // The child's own progress bar is not echoed (it would fight the suite's
    // line); its lines are read for the fraction done, its tail kept for errors.
    ChildProgressParser parser;
    double fraction = -1;
    co.on_stderr = [&](const char* data, size_t n) {
      const double f = parser.feed(data, n);
      if (f >= 0) fraction = f;
    };
    co.on_tick = [&] { progress(fraction, ""); };
    std::error_code ec;
    fs::remove(report_path, ec);
    auto child = run_child(co);
    if (!child.ok()) {
      error = child.error().message();
    } else if (child->interrupted) {
      out.interrupted = true;
    } else if (!child->ok()) {
      error = fmt::format("the experiment's process failed: {}; its stderr ended with:\n{}", child->describe(),
                          child->stderr_tail);
    } else {
      std::ifstream in(report_path);
      report = json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (!report.is_object() || !report.contains("metrics")) {
        error = fmt::format("the experiment's process exited 0 but wrote no report at {}", report_path);
      }
    }
    fs::remove(report_path, ec);
  }
  run["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (it.is_infer) {
    if (out.interrupted || !error.empty()) {
      run["status"] = "failed";
      run["error"] = out.interrupted ? "interrupted" : error;
      return out;
    }
    fill_infer_run(run, report);
    return out;
  }
  if (it.is_finetune) {
    if (out.interrupted || !error.empty()) {
      run["status"] = "failed";
      run["error"] = out.interrupted ? "interrupted" : error;
      return out;
    }
    run["status"] = "ok";
    for (const char* k : {"card", "parameters", "trainable_parameters", "adapted_modules", "val_loss", "train_loss",
                          "data", "metrics"}) {
      run[k] = report.value(k, json());
    }
    return out;
  }
  const int64_t tokens = cfg.steps * cfg.batch_size * cfg.seq_len * cfg.grad_accum;
  const int64_t train_tokens = it.dataset->dataset.train_tokens;
  run["tokens_trained"] = tokens;
  run["dataset_train_tokens"] = train_tokens;
  // Passes over the training split: the built-in corpus is small, so a
  // GPU-sized token budget repeats it (gpu-lite: several epochs).
  run["epochs"] = train_tokens > 0 ? metrics::json_number_or_null(static_cast<double>(tokens) /
                                                                  static_cast<double>(train_tokens))
                                   : json();
  run["dataset_dir"] = it.dataset->dataset.dir;
  if (out.interrupted || !error.empty()) {
    run["status"] = "failed";
    run["error"] = out.interrupted ? "interrupted" : error;
    return out;
  }
  run["status"] = "ok";
  run["card"] = report.value("card", cfg.model);
  run["parameters"] = report.value("parameters", int64_t{0});
  run["unigram_perplexity"] = metrics::json_number_or_null(it.dataset->unigram);
  // The MFU probe runs too few steps for a quality number.
  run["perplexity"] = it.e->mfu_probe ? json() : report.value("perplexity", json());
  run["val_loss"] = it.e->mfu_probe ? json() : report.value("val_loss", json());
  run["metrics"] = report["metrics"];
  // A mixture of experts runs k of its E experts per token: its active
  // parameters beside the total (count_parameters, which a test keeps equal
  // to the built model's count), and TT per active parameter beside TT per
  // parameter (equal for a dense card). The paper does not say which count
  // its TT divides by for its MoE rows; the records keep both.
  if (auto card = find_model_card(cfg.model); card.ok()) {
    const ParameterCounts counts = count_parameters(card.value());
    const json& tps = run["metrics"].value("tokens_per_second", json());
    if (counts.total == run["parameters"].get<int64_t>() && counts.active > 0) {
      run["active_parameters"] = counts.active;
      if (tps.is_number()) {
        run["metrics"]["tt_tokens_per_active_param_per_second"] =
            tps.get<double>() / static_cast<double>(counts.active);
      }
    }
  }
  // A child got the peak as a number; the record keeps the full calibration.
  if (cfg.peak) run["metrics"]["peak_calibration"] = metrics::to_json(*cfg.peak);
  run["measured_seconds"] = measured_seconds(run);
  return out;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// A finetune row: its FinetuneConfig, the model's and the data's identity,
// its resolved config and hash. A "pretrained:<label>" model is the
// checkpoint that the (earlier) pretrain row <label> is told to leave.
// data_identities: the SFT files' identities already hashed in this run (a
// dataset is read once, not once per method).
Status resolve_finetune_item(Item& it, std::vector<Item>& items, const SuiteOptions& o, int64_t warmup,
                             std::map<std::string, json>& data_identities) {
  const ExpandedExperiment& e = *it.e;
  it.is_finetune = true;
  it.ft = finetune_experiment_config(e, o.device, o.results_dir, warmup);
  if (it.ft.steps > 0) it.ft.timing_warmup_steps = std::min(it.ft.timing_warmup_steps, it.ft.steps - 1);
  json model_identity;
  const std::string model = e.field("model").get<std::string>();
  if (model.rfind(kPretrainedPrefix, 0) == 0) {
    const std::string source = model.substr(std::string(kPretrainedPrefix).size());
    Item* src = nullptr;
    for (auto& x : items) {
      if (!x.is_finetune && x.e->label == source && x.e->supported) src = &x;
    }
    if (!src) {
      return make_error(fmt::format("experiment '{}': its source '{}' is not in the planned suite", e.label, source),
                        e.where, "plan_suite keeps the sources of the finetune rows; do not drop them");
    }
    src->cfg.out_dir = pretrain_checkpoint_dir(o.results_dir, src->hash);
    src->checkpoint = src->cfg.out_dir + "/checkpoint.safetensors";
    it.ft.init_checkpoint = src->checkpoint;
    it.ft.tokenizer = src->dataset->dataset.tokenizer_path;
    model_identity = {{"pretrained", src->hash}};
  } else {
    EL_TRY_ASSIGN(model_identity, hf_dir_identity(it.ft.hf_dir));
  }
  const std::string data_key = json(it.ft.data).dump();
  if (!data_identities.count(data_key)) {
    EL_TRY_ASSIGN(data_identities[data_key], sft_data_identity(it.ft));
  }
  const json& data_identity = data_identities[data_key];
  EL_TRY_ASSIGN(it.config, finetune_resolved_config(e, it.ft, model_identity, data_identity, !o.in_process));
  it.hash = config_hash(it.config);
  return Status::Ok();
}

// An infer row: its InferExperimentConfig, the model's identity, its
// resolved config and hash. A "pretrained:<label>" model is the checkpoint
// that the (earlier) pretrain row <label> is told to leave, with that row's
// tokenizer, validation shards (perplexity) and train shards (GPTQ).
Status resolve_infer_item(Item& it, std::vector<Item>& items, const SuiteOptions& o) {
  const ExpandedExperiment& e = *it.e;
  it.is_infer = true;
  const std::string kind = e.config.value("model_kind", "");
  const std::string model = e.field("model").get<std::string>();
  InferPretrainedSource src;
  json model_identity;
  if (kind == kModelPretrained) {
    const std::string source = model.substr(std::string(kPretrainedPrefix).size());
    Item* from = nullptr;
    for (auto& x : items) {
      if (!x.is_finetune && !x.is_infer && x.e->label == source && x.e->supported) from = &x;
    }
    if (!from) {
      return make_error(fmt::format("experiment '{}': its source '{}' is not in the planned suite", e.label, source),
                        e.where, "plan_suite keeps the sources of the infer rows; do not drop them");
    }
    from->cfg.out_dir = pretrain_checkpoint_dir(o.results_dir, from->hash);
    from->checkpoint = from->cfg.out_dir + "/checkpoint.safetensors";
    const data::Dataset& ds = from->dataset->dataset;
    src = {from->checkpoint, ds.tokenizer_path, ds.val_shards, ds.dir};
    model_identity = {{"pretrained", from->hash}};
  } else if (kind == kModelCard) {
    auto card = find_model_card(model);
    if (!card.ok()) {
      return make_error(fmt::format("experiment '{}': {}", e.label, card.error().what), e.where, card.error().hint);
    }
    model_identity = {{"card", model_card_to_yaml(card.value())}, {"seed", infer::ModelSource{}.seed}};
  } else {
    EL_TRY_ASSIGN(json hf, hf_dir_identity(model));
    model_identity = {{"hf", hf}};
  }
  it.inf = infer_experiment_config(e, o.device, src);
  EL_TRY_ASSIGN(it.config, infer_resolved_config(e, it.inf, model_identity, !o.in_process));
  it.hash = config_hash(it.config);
  return Status::Ok();
}

}  // namespace

int SuiteResult::failures() const {
  int n = 0;
  for (const auto& r : rows) n += !r.cached && (r.status == "failed" || r.status == "partial");
  return n;
}

Result<SuiteFile> plan_suite(SuiteFile suite, const PlanOptions& o) {
  if (o.steps > 0) {
    for (auto& e : suite.experiments) {
      if (e.axis != Axis::pretrain) continue;
      json& f = e.config["fields"];
      f["steps"] = o.steps;
      // As apply_step_override: an override to a few steps still reaches the peak LR.
      if (f["warmup"].get<int64_t>() >= o.steps) f["warmup"] = o.steps / 10;
      e.hash = config_hash(e.config);
    }
  }
  if (o.include_probe && suite.mfu_probe) {
    const MfuProbe& p = *suite.mfu_probe;
    const ExpandedExperiment* first = nullptr;
    for (const auto& e : suite.experiments) {
      if (e.axis == Axis::pretrain && e.supported) {
        first = &e;
        break;
      }
    }
    if (first) {
      const std::string where = suite.path + ": mfu_probe";
      for (const auto& e : suite.experiments) {
        if (e.label == p.label) {
          return make_error(fmt::format("the MFU probe's label '{}' is also an experiment's label ({})", p.label,
                                        e.where),
                            where);
        }
      }
      EL_TRY_ASSIGN(ModelCard card, find_model_card(p.card));
      if (first->field("dataset") == "builtin" && card.vocab_size != first->field("vocab_size").get<int64_t>()) {
        return make_error(fmt::format("card '{}' has vocab_size {} but the built-in tokenizer has {} pieces", p.card,
                                      card.vocab_size, first->field("vocab_size").get<int64_t>()),
                          where, "use a probe card with the suite's vocab_size");
      }
      if (card.max_seq_len < p.seq_len) {
        return make_error(fmt::format("card '{}' allows max_seq_len {} but the probe runs seq_len {}", p.card,
                                      card.max_seq_len, p.seq_len),
                          where);
      }
      ExpandedExperiment probe = *first;
      probe.label = p.label;
      probe.where = where;
      probe.mfu_probe = true;
      json& f = probe.config["fields"];
      f["card"] = p.card;
      f["batch_size"] = p.batch_size;
      f["seq_len"] = p.seq_len;
      f["steps"] = p.steps;
      f["warmup"] = 0;
      f["eval_batches"] = 1;
      probe.config["mfu_probe"] = true;
      probe.hash = config_hash(probe.config);
      suite.experiments.push_back(std::move(probe));
    }
  }
  if (!o.filter.empty()) {
    EL_TRY_ASSIGN(std::vector<ExpandedExperiment> kept, filter_experiments(suite.experiments, o.filter));
    // A kept finetune / infer row keeps the pretrain row whose checkpoint it starts from.
    std::set<std::string> labels;
    for (const auto& e : kept) {
      labels.insert(e.label);
      const json& m = e.field("model");
      if (e.axis != Axis::pretrain && m.is_string() && m.get<std::string>().rfind(kPretrainedPrefix, 0) == 0) {
        labels.insert(m.get<std::string>().substr(std::string(kPretrainedPrefix).size()));
      }
    }
    std::vector<ExpandedExperiment> out;
    for (auto& e : suite.experiments) {
      if (labels.count(e.label)) out.push_back(std::move(e));
    }
    suite.experiments = std::move(out);
  }
  return suite;
}

Result<SuiteResult> run_suite(const SuiteSpec& spec, const SuiteOptions& options, const PlanOptions& plan) {
  EL_TRY(validate_suite_spec(spec));
  EL_TRY_ASSIGN(SuiteFile file, suite_spec_to_file(spec));
  EL_TRY_ASSIGN(SuiteFile planned, plan_suite(std::move(file), plan));
  return run_suite(planned, options);
}

Result<SuiteResult> run_suite(const SuiteFile& suite, const SuiteOptions& o) {
  if (!o.in_process && o.self_exe.empty()) {
    return make_error("no program to run the experiments with (SuiteOptions::self_exe is empty)", "run_suite",
                      "set self_exe to the efficientllm binary, or run in process");
  }
  EL_TRY(ensure_writable_dir(o.results_dir));
  SuiteResult result;
  result.suite = suite;
  result.run_id = timestamp();

  // ---- resolve every runnable experiment before anything runs: datasets
  // (the built-in one is made once per vocabulary and cached), configs, hashes.
  std::map<std::string, std::unique_ptr<DatasetCtx>> datasets;
  const std::string identity_cache = o.results_dir + "/cache/dataset-identity.json";
  auto dataset_for = [&](const ExpandedExperiment& e) -> Result<DatasetCtx*> {
    const std::string ds = e.field("dataset").get<std::string>();
    const bool builtin = ds == "builtin";
    const int64_t vocab = builtin ? e.field("vocab_size").get<int64_t>() : 0;
    const std::string key = builtin ? fmt::format("builtin:{}", vocab) : ds;
    if (auto it = datasets.find(key); it != datasets.end()) return it->second.get();
    std::string dir = ds;
    if (builtin) {
      EL_TRY_ASSIGN(dir, ensure_builtin_dataset(fmt::format("{}/cache/builtin-sp{}", o.results_dir, vocab), vocab));
    }
    auto ctx = std::make_unique<DatasetCtx>();
    ctx->name = builtin ? fmt::format("the built-in corpus ({} pieces)", vocab) : ds;
    EL_TRY_ASSIGN(ctx->dataset, data::load_dataset_manifest(dir));
    EL_TRY_ASSIGN(ctx->identity, dataset_identity(ctx->dataset, identity_cache));
    EL_TRY_ASSIGN(ctx->unigram, data::unigram_perplexity(ctx->dataset));
    result.datasets.push_back({ctx->name, ctx->dataset.train_tokens, ctx->unigram});
    return datasets.emplace(key, std::move(ctx)).first->second.get();
  };
  std::vector<Item> items;
  std::map<std::string, json> sft_identities;
  for (const auto& e : suite.experiments) {
    Item it;
    it.e = &e;
    if (!e.supported) {
      it.config = e.config;
      it.hash = e.hash;
      items.push_back(std::move(it));
      continue;
    }
    if (e.axis == Axis::finetune) {
      EL_TRY(resolve_finetune_item(it, items, o, suite.warmup_steps, sft_identities));
      items.push_back(std::move(it));
      continue;
    }
    if (e.axis == Axis::infer) {
      EL_TRY(resolve_infer_item(it, items, o));
      items.push_back(std::move(it));
      continue;
    }
    EL_TRY_ASSIGN(it.dataset, dataset_for(e));
    EL_TRY_ASSIGN(it.cfg, pretrain_train_config(e, o.device, it.dataset->dataset.dir));
    // At least one timed step, whatever the override left of the run.
    it.cfg.timing_warmup_steps = std::min(it.cfg.timing_warmup_steps, it.cfg.steps - 1);
    EL_TRY_ASSIGN(it.config, resolved_config(e, it.cfg, it.dataset->identity, !o.in_process));
    it.hash = config_hash(it.config);
    items.push_back(std::move(it));
  }

  // ---- what is already measured
  ResultIndex index;
  if (!o.force) index = index_results_dir(o.results_dir);
  std::vector<double> estimates;
  for (auto& it : items) {
    if (!it.e->supported) continue;
    it.cached = index.find(it.hash);
    // A finetune / infer row needs this run's checkpoint: without it, run it again.
    std::error_code ec;
    if (it.cached && !it.checkpoint.empty() && !fs::is_regular_file(it.checkpoint, ec)) it.cached = nullptr;
    if (it.cached) continue;
    it.eta_slot = estimates.size();
    estimates.push_back(estimate_seconds(*it.e, o.device.kind).value_or(NAN));
  }
  SuiteProgress progress(o.progress, items.size(), EtaModel(estimates));
  for (const auto& w : index.warnings) progress.line("warning: " + w);

  const json build = build_info_json();
  const json machine = machine_info_json(metrics::collect_platform_info());
  const json suite_json = suite_file_to_json(suite);
  const std::string jsonl = fmt::format("{}/{}-{}.jsonl", o.results_dir, suite.name, result.run_id);
  std::map<DType, metrics::PeakCalibration> peaks;

  auto append = [&](json& rec, SuiteRow& row) -> Status {
    std::string warning;
    EL_TRY(append_jsonl_record(jsonl, rec, &warning));
    if (!warning.empty()) progress.line("warning: " + warning);
    result.jsonl_path = jsonl;
    row.record = rec;
    return Status::Ok();
  };

  for (size_t i = 0; i < items.size(); ++i) {
    Item& it = items[i];
    const ExpandedExperiment& e = *it.e;
    const std::string tag = fmt::format("[{}/{}] {}", i + 1, items.size(), e.label);
    if (interrupt_requested()) {
      result.interrupted = true;
      break;
    }
    SuiteRow row;
    row.label = e.label;
    row.mfu_probe = e.mfu_probe;
    const json& primary = e.field(e.axis == Axis::pretrain ? "card" : "model");
    row.card = primary.is_string() ? primary.get<std::string>() : "";
    const ExperimentInfo info{suite.name, e.label, axis_name(e.axis), result.run_id, it.config, suite_json};

    if (!e.supported) {
      json rec = make_result_record(info, {}, build, machine);
      rec["status"] = "not_supported";
      rec["reason"] = e.status;
      row.status = "not_supported";
      EL_TRY(append(rec, row));
      progress.line(fmt::format("{}: {}", tag, e.status));
      result.rows.push_back(std::move(row));
      continue;
    }
    if (it.cached) {
      row.cached = true;
      row.cached_from = it.cached->where;
      row.record = it.cached->record;
      row.status = row.record.value("status", "ok");
      if (row.record.contains("card") && row.record["card"].is_string()) row.card = row.record["card"];
      progress.line(fmt::format("{}: cached ({})", tag, it.cached->where));
      result.rows.push_back(std::move(row));
      continue;
    }

    // One calibration per GEMM dtype for the whole suite, so the MFUs of the
    // experiments share their denominator.
    // Fine-tuning and inference rows report no MFU.
    const bool pretrain = !it.is_finetune && !it.is_infer;
    const DType dt = calibration_dtype(suite, it.cfg);
    if (pretrain && !peaks.count(dt)) {
      progress.line(fmt::format("calibrating the {} GEMM peak for MFU on {}", dtype_name(dt), o.device.str()));
      EL_TRY_ASSIGN(metrics::PeakCalibration peak, metrics::try_calibrate_peak_gemm(o.device, o.calibration_seconds, 0, dt));
      progress.line(fmt::format("MFU denominator: {:.1f} GFLOP/s ({})", peak.gflops, peak.dtype));
      peaks[dt] = peak;
      result.peaks.push_back(peak);
    }
    if (pretrain) it.cfg.peak = peaks[dt];

    const int64_t declared = e.config.at("measure").at("repetitions").get<int64_t>();
    const double min_duration = e.config.at("measure").at("min_duration_s").get<double>();
    progress.begin(i, e.label, it.eta_slot);
    std::vector<json> runs;
    double measured = 0;
    bool interrupted = false;
    while (need_another_repetition(declared, min_duration, static_cast<int64_t>(runs.size()), measured)) {
      if (interrupt_requested()) {
        interrupted = true;
        break;
      }
      const int64_t k = static_cast<int64_t>(runs.size());
      const std::string rep_text = declared > 1 || k > 0 ? fmt::format("rep {}/{}", k + 1, std::max(declared, k + 1)) : "";
      auto on_progress = [&](double f, const std::string& detail) {
        const double whole = f < 0 ? -1 : std::min(0.999, (static_cast<double>(k) + f) / static_cast<double>(declared));
        progress.update(whole, detail.empty() ? rep_text : rep_text.empty() ? detail : rep_text + " " + detail);
      };
      Repetition rep = run_repetition(
          it, o, k + 1, fmt::format("{}/.run-{}-{}-{}.json", o.results_dir, result.run_id, i, k), on_progress);
      if (rep.interrupted) {
        interrupted = true;
        break;
      }
      const bool ok = rep.run.value("status", "") == "ok";
      measured += it.is_infer ? infer_measured_seconds(rep.run) : measured_seconds(rep.run);
      runs.push_back(std::move(rep.run));
      if (!ok) break;  // a failure would most likely repeat; the record keeps its reason
    }
    EL_TRY_ASSIGN(json rec, experiment_record(info, runs, build, machine));
    if (interrupted) {
      rec["status"] = "interrupted";
      rec["error"] = fmt::format("stopped by an interrupt (Ctrl-C / SIGTERM) after {} finished repetition(s)",
                                 runs.size());
      result.interrupted = true;
    }
    row.status = rec.value("status", "failed");
    if (rec.contains("card") && rec["card"].is_string()) row.card = rec["card"];
    EL_TRY(append(rec, row));
    std::string outcome = row.status;
    if (runs.size() > 1) outcome += fmt::format(", {} repetitions", runs.size());
    if (interrupted) {
      outcome += fmt::format(" after {} finished repetition(s)", runs.size());
    } else if (rec.contains("error") && rec["error"].is_string()) {
      outcome += ": " + first_line(rec["error"]);
    }
    progress.end(outcome);
    result.rows.push_back(std::move(row));
    if (interrupted) break;
  }

  result.table = render_suite_table(result.rows);
  if (const std::string ft = render_finetune_table(result.rows); !ft.empty()) result.table += "\nfine-tuning:\n" + ft;
  if (const std::string inf = render_infer_table(result.rows); !inf.empty()) result.table += "\ninference:\n" + inf;
  if (!result.rows.empty()) {
    result.csv_path = fmt::format("{}/{}-{}.csv", o.results_dir, suite.name, result.run_id);
    std::vector<json> records;
    for (const auto& r : result.rows) records.push_back(r.record);
    EL_TRY(write_csv(result.csv_path, records));
  }
  return result;
}

std::string render_suite_table(const std::vector<SuiteRow>& rows) {
  const auto number = [](const json& rec, const char* k) {
    return rec.contains(k) && rec[k].is_number() ? rec[k].get<double>() : NAN;
  };
  // A mixture of experts among the rows: a column of the parameters a token
  // runs (its k of E experts; all of a dense model's).
  bool moe = false;
  for (const auto& row : rows) {
    const double active = number(row.record, "active_parameters");
    moe = moe || (std::isfinite(active) && active != number(row.record, "parameters"));
  }
  std::vector<std::string> header = {"variant", "card", "params", "PPL", "AMU GB", "MFU %", "AL s",
                                     "TT tok/param/s", "tok/s", "AEC W"};
  if (moe) header.insert(header.begin() + 3, "active");
  TextTable table(header);
  for (const auto& row : rows) {
    // Fine-tuning and inference rows have their own columns (render_finetune_table, render_infer_table).
    const std::string axis = row.record.value("axis", "");
    if ((axis == "finetune" || axis == "infer") && row.status != "not_supported") continue;
    std::string label = row.label;
    if (row.cached) label += " (cached)";
    if (row.status != "ok" && row.status != "partial") {
      const std::string what = row.status == "not_supported" ? "not supported" : row.status;
      std::vector<std::string> cells = {label, row.card, "-", what, "", "", "", "", "", ""};
      if (moe) cells.insert(cells.begin() + 3, "-");
      table.add_row(cells);
      continue;
    }
    if (row.status == "partial") label += " (partial)";
    const json& s = row.record.value("summary", json::object());
    const auto mean = [&](const char* k) {
      return s.contains(k) && s[k].contains("mean") && s[k]["mean"].is_number() ? s[k]["mean"].get<double>() : NAN;
    };
    const double params = number(row.record, "parameters");
    const double aec = mean("aec_avg_power_w");
    std::vector<std::string> cells = {
        label, row.card, format_number(params), row.mfu_probe ? "-" : format_number(mean("perplexity")),
        format_number(mean("amu_live_gb")), format_number(100.0 * mean("mfu")),
        format_number(mean("al_seconds")), format_number(mean("tt_tokens_per_param_per_second")),
        format_number(mean("tokens_per_second")), std::isnan(aec) ? "null" : format_number(aec)};
    if (moe) cells.insert(cells.begin() + 3, format_number(number(row.record, "active_parameters")));
    table.add_row(cells);
  }
  return table.render();
}

}  // namespace el::bench
