#include "bench/suite.h"

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "bench/child_process.h"
#include "bench/results.h"
#include "bench/table.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "data/unigram.h"
#include "metrics/calibrate.h"
#include "metrics/proc.h"
#include "metrics/stats.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;

// Tokenizer + shards of the built-in corpus, made once and cached (one cache
// per vocabulary size, so suites with different vocabularies coexist).
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
                                "--report",       report_path};
  if (c.peak) {
    a.insert(a.end(), {"--peak-gflops", num(c.peak->gflops), "--peak-dtype", c.peak->dtype});
  }
  return a;
}

namespace {

// What one training run gave, whether it ran in this process or a child.
struct RunOutcome {
  bool ok = false;
  std::string error;
  std::string card;
  int64_t parameters = 0;
  double perplexity = NAN, val_loss = NAN;
  nlohmann::json metrics;
};

RunOutcome run_in_process(const TrainConfig& cfg, const TrainCallbacks& cb) {
  RunOutcome o;
  auto report = run_training(cfg, cb);
  if (!report.ok()) {
    o.error = report.error().message();
    return o;
  }
  const TrainReport& r = report.value();
  o.ok = true;
  o.card = r.card.name;
  o.parameters = r.parameters;
  o.perplexity = r.final_perplexity();
  o.val_loss = r.final_val_loss();
  o.metrics = r.metrics;
  return o;
}

RunOutcome run_in_child(const TrainConfig& cfg, const SuiteOptions& options,
                        const std::string& report_path) {
  RunOutcome o;
  ChildOptions co;
  co.argv = train_command_line(cfg, report_path);
  co.argv.insert(co.argv.begin(), options.self_exe);
  co.timeout_s = options.timeout_s;
  co.echo_stderr = true;  // the child's progress bar
  co.stdout_path = "/dev/null";
  std::error_code ec;
  std::filesystem::remove(report_path, ec);
  auto child = run_child(co);
  if (!child.ok()) {
    o.error = child.error().message();
    return o;
  }
  if (!child->ok()) {
    o.error = fmt::format("the experiment's process failed: {}; its stderr ended with:\n{}",
                          child->describe(), child->stderr_tail);
    return o;
  }
  std::ifstream in(report_path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("metrics")) {
    o.error = fmt::format("the experiment's process exited 0 but wrote no report at {}", report_path);
    return o;
  }
  const auto number = [](const nlohmann::json& v) { return v.is_number() ? v.get<double>() : NAN; };
  o.ok = true;
  o.card = j.value("card", cfg.model);
  o.parameters = j.value("parameters", int64_t{0});
  o.perplexity = number(j["perplexity"]);
  o.val_loss = number(j["val_loss"]);
  o.metrics = j["metrics"];
  // The child got the peak as a number; the record keeps the full calibration.
  if (cfg.peak) o.metrics["peak_calibration"] = metrics::to_json(*cfg.peak);
  std::filesystem::remove(report_path, ec);
  return o;
}

}  // namespace

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
                      {"precision", precision_name(spec.precision)},
                      {"calibration_dtype", spec.calibration_dtype ? nlohmann::json(dtype_name(*spec.calibration_dtype))
                                                                   : nlohmann::json()},
                      {"mfu_probe", nullptr}};
  if (spec.mfu_probe) {
    const MfuProbe& p = *spec.mfu_probe;
    j["mfu_probe"] = {{"label", p.label}, {"card", p.card}, {"batch_size", p.batch_size},
                      {"seq_len", p.seq_len}, {"steps", p.steps}};
  }
  return j;
}

Result<SuiteResult> run_suite(const SuiteSpec& spec_in, const SuiteOptions& options) {
  const SuiteSpec spec = apply_step_override(spec_in, options.steps);
  EL_TRY(validate_suite_spec(spec));
  EL_TRY(ensure_writable_dir(options.results_dir));
  ProgressBar bar;
  EL_TRY_ASSIGN(std::string data_dir,
                ensure_builtin_dataset(options.results_dir + "/cache/builtin-sp" + std::to_string(spec.vocab_size),
                                       spec.vocab_size, bar));
  EL_TRY_ASSIGN(data::Dataset dataset, data::load_dataset_manifest(data_dir));
  EL_TRY_ASSIGN(double unigram, data::unigram_perplexity(dataset));

  SuiteResult result;
  result.spec = spec;
  result.unigram_perplexity = unigram;
  result.train_tokens = dataset.train_tokens;
  result.tokens_per_run = spec.steps * spec.batch_size * spec.seq_len;
  result.epochs = dataset.train_tokens > 0
                      ? static_cast<double>(result.tokens_per_run) / static_cast<double>(dataset.train_tokens)
                      : NAN;
  const nlohmann::json build = build_info_json();
  const nlohmann::json machine = machine_info_json(metrics::collect_platform_info());
  const nlohmann::json spec_json = suite_spec_to_json(spec);
  const std::string run_id = timestamp();

  // One calibration for the whole suite, so every MFU has the same denominator.
  bar.update("calibrate", 0, 1, "timing the GEMM peak for MFU", -1);
  EL_TRY_ASSIGN(const metrics::PeakCalibration peak,
                metrics::try_calibrate_peak_gemm(options.device, 2.0, 0,
                                                 suite_calibration_dtype(spec, options.device)));
  bar.update("calibrate", 1, 1, fmt::format("{:.1f} GFLOP/s", peak.gflops), -1);
  bar.finish();
  result.peak_gflops = peak.gflops;
  result.peak_dtype = peak.dtype;
  result.peak_datasheet_gflops = peak.datasheet_gflops;

  struct Row { std::string label; TrainConfig cfg; bool quality; };
  std::vector<Row> rows;
  for (const auto& v : spec.variants) {
    TrainConfig c = variant_train_config(spec, v, options.device, data_dir);
    c.peak = peak;
    rows.push_back({v.label, c, true});
  }
  if (options.include_probe && spec.mfu_probe) {
    const MfuProbe& p = *spec.mfu_probe;
    TrainConfig c = rows.front().cfg;
    c.model = p.card;
    c.batch_size = p.batch_size;
    c.seq_len = p.seq_len;
    c.steps = p.steps;
    c.warmup_steps = 0;
    c.eval_batches = 1;
    rows.push_back({p.label, c, false});
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
    if (options.isolate && interrupt_requested()) break;  // Ctrl-C: keep what finished
    const RunOutcome run =
        options.isolate ? run_in_child(row.cfg, options,
                                       fmt::format("{}/.run-{}-{}.json", options.results_dir, run_id, i))
                        : run_in_process(row.cfg, cb);
    bar.finish();
    const int64_t tokens = row.cfg.steps * row.cfg.batch_size * row.cfg.seq_len * row.cfg.grad_accum;
    // `rec` is this repetition's run object; to_record wraps it into a v2
    // result record (docs/RESULTS.md) with build, machine and config hash.
    nlohmann::json config = row.cfg.to_json();
    config["axis"] = "pretrain";
    const ExperimentInfo info{spec.name, row.label, "pretrain", run_id, config, spec_json};
    auto to_record = [&](const nlohmann::json& run) { return make_result_record(info, {run}, build, machine); };
    nlohmann::json rec = nlohmann::json::object();
    // Passes over the training split: the built-in corpus is small, so a
    // GPU-sized token budget repeats it (gpu-lite: about three epochs).
    rec["tokens_trained"] = tokens;
    rec["dataset_train_tokens"] = dataset.train_tokens;
    rec["epochs"] = dataset.train_tokens > 0
                        ? metrics::json_number_or_null(static_cast<double>(tokens) /
                                                       static_cast<double>(dataset.train_tokens))
                        : nlohmann::json();
    rec["isolated"] = options.isolate;
    if (!run.ok) {
      // A failing experiment is recorded and the suite goes on.
      rec["status"] = "failed";
      rec["error"] = run.error;
      table.add_row({row.label, row.cfg.model, "-", "failed", "", "", "", "", "", ""});
      result.records.push_back(to_record(rec));
      continue;
    }
    const auto& m = run.metrics;
    const auto& me = m["memory_energy"];
    rec["status"] = "ok";
    rec["card"] = run.card;
    rec["parameters"] = run.parameters;
    rec["unigram_perplexity"] = unigram;
    rec["perplexity"] = row.quality ? metrics::json_number_or_null(run.perplexity) : nlohmann::json();
    rec["val_loss"] = row.quality ? metrics::json_number_or_null(run.val_loss) : nlohmann::json();
    rec["metrics"] = m;
    result.records.push_back(to_record(rec));
    const double amu = json_double(me["amu_live_gb"]);
    const double aec = json_double(me["avg_power_w"]);
    table.add_row({row.label, run.card, format_number(static_cast<double>(run.parameters)),
                   row.quality ? format_number(run.perplexity) : "-", format_number(amu),
                   format_number(100.0 * json_double(m["mfu"])), format_number(json_double(m["al_seconds"]["mean"])),
                   format_number(json_double(m["tt_tokens_per_param_per_second"])),
                   format_number(json_double(m["tokens_per_second"])), std::isnan(aec) ? "null" : format_number(aec)});
  }

  result.table = table.render();
  result.jsonl_path = options.results_dir + "/" + spec.name + "-" + run_id + ".jsonl";
  result.csv_path = options.results_dir + "/" + spec.name + "-" + run_id + ".csv";
  EL_TRY(write_jsonl(result.jsonl_path, result.records));
  EL_TRY(write_csv(result.csv_path, result.records));
  return result;
}

}  // namespace el::bench
