// efficientllm bench — run a benchmark suite: `quick` on the CPU, `gpu-lite`
// on a GPU unless --suite says otherwise (bench/builtin_suites.h), or any
// suite file. --list shows the suite files (configs/suites), --dry-run the
// expanded matrix of one with an estimated time, --filter selects experiments
// by label (bench/suite_yaml.h). Every suite runs through bench/runner.h:
// each experiment in its own `efficientllm train` process (--in-process for
// debugging), finished experiments skipped by config hash (--force re-runs).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <fmt/ranges.h>

#include "bench/builtin_suites.h"
#include "bench/child_process.h"
#include "bench/runner.h"
#include "bench/suite.h"
#include "bench/suite_yaml.h"
#include "bench/table.h"
#include "cli/common.h"

namespace el::cli {
namespace {

// "9.83M", "41K": token counts for the note under the table.
std::string tokens_text(int64_t n) {
  const double v = static_cast<double>(n);
  if (n < 1000) return std::to_string(n);
  return v >= 1e6 ? fmt::format("{:.2f}M", v / 1e6) : fmt::format("{:.0f}K", v / 1e3);
}

// The note under the table: the token budget when the pretraining rows share
// one schedule (the built-in suites do), else where to find each one's.
void print_token_budget(const bench::SuiteResult& r) {
  std::set<std::string> schedules;
  const bench::ExpandedExperiment* first = nullptr;
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const auto& e = r.suite.experiments[i];
    if (e.axis != bench::Axis::pretrain || !e.supported || e.mfu_probe) continue;
    if (!first) first = &e;
    schedules.insert(fmt::format("{} {} {} {} {} {}", e.field("steps").dump(), e.field("batch_size").dump(),
                                 e.field("seq_len").dump(), e.field("grad_accum").dump(), e.field("precision").dump(),
                                 e.field("dataset").dump()));
  }
  if (!first) return;
  if (schedules.size() > 1 || r.datasets.size() != 1) {
    std::printf("Token budgets differ between experiments: each record has its tokens_trained and epochs.\n");
    return;
  }
  const int64_t steps = first->field("steps").get<int64_t>(), b = first->field("batch_size").get<int64_t>(),
                t = first->field("seq_len").get<int64_t>(), ga = first->field("grad_accum").get<int64_t>();
  const int64_t tokens = steps * b * t * ga;
  const bench::DatasetUse& d = r.datasets.front();
  const double epochs = d.train_tokens > 0 ? static_cast<double>(tokens) / static_cast<double>(d.train_tokens) : 0;
  const std::string shape = ga > 1 ? fmt::format("{} x {} x {}", ga, b, t) : fmt::format("{} x {}", b, t);
  const bool builtin = first->field("dataset") == "builtin";
  std::printf("Token budget: each variant trains %lld steps of %s tokens in %s = %s tokens, %.3g epochs of\n%s's %s "
              "training tokens",
              static_cast<long long>(steps), shape.c_str(), first->field("precision").get<std::string>().c_str(),
              tokens_text(tokens).c_str(), epochs, builtin ? "the built-in corpus" : d.name.c_str(),
              tokens_text(d.train_tokens).c_str());
  // More than one pass repeats the text; the perplexity stays an honest
  // held-out number because the validation documents are never trained on.
  std::fputs(epochs > 1 ? " (the corpus is small, so the runs repeat it; PPL is on held-out documents).\n" : ".\n",
             stdout);
}

void print_result(const bench::SuiteResult& r) {
  const bench::SuiteFile& s = r.suite;
  std::printf("\n%s suite: %s\n", s.name.c_str(), s.description.c_str());
  for (const auto& d : r.datasets) {
    if (r.datasets.size() == 1) {
      std::printf("unigram baseline perplexity of the corpus: %.1f (a model that learned nothing scores about this)\n",
                  d.unigram_perplexity);
    } else {
      std::printf("unigram baseline perplexity of %s: %.1f\n", d.name.c_str(), d.unigram_perplexity);
    }
  }
  std::printf("\n%s\n", r.table.c_str());
  print_token_budget(r);
  for (const auto& p : r.peaks) {
    std::printf("MFU denominator: %.1f GFLOP/s, the best %s GEMM rate measured on this machine at start-up",
                p.gflops, p.dtype.c_str());
    if (p.datasheet_gflops) std::printf(" (datasheet: %.1f)", *p.datasheet_gflops);
    std::printf(".\n");
  }
  std::printf("PPL: validation perplexity; AMU: time-averaged allocator live memory; MFU: counted FLOPs/s over the\n"
              "calibrated GEMM peak; AL: mean step time; TT: tokens per parameter per second; AEC: average power\n"
              "from energy counters (null when the platform exposes none; see the JSON for the reason).\n");
  // The "active" column: a row whose active parameters are not all of them.
  const bool moe = std::any_of(r.rows.begin(), r.rows.end(), [](const bench::SuiteRow& row) {
    const auto& rec = row.record;
    return rec.contains("active_parameters") && rec.contains("parameters") &&
           rec["active_parameters"] != rec["parameters"];
  });
  if (moe) {
    std::printf("active: a mixture of experts' parameters per token (its k of E experts); TT divides by all of\n"
                "them, the records also hold TT per active parameter (tt_tokens_per_active_param_per_second).\n");
  }
  // What the rows do not say by themselves.
  std::map<std::string, std::vector<std::string>> not_run;  // reason -> labels
  bool cached_header = false;
  for (const auto& row : r.rows) {
    const auto& rec = row.record;
    if (row.cached) {
      if (!cached_header) {
        std::printf("(cached): not run again, an earlier run recorded an ok result with the same config hash "
                    "(--force re-runs):\n");
        cached_header = true;
      }
      std::printf("  %s: %s\n", row.label.c_str(), row.cached_from.c_str());
    } else if (row.status == "not_supported") {
      not_run[rec.value("reason", "")].push_back(row.label);
    } else if (row.status != "ok" && rec.contains("error") && rec["error"].is_string()) {
      const std::string e = rec["error"].get<std::string>();
      std::printf("%s %s: %s\n", row.label.c_str(), row.status.c_str(), e.substr(0, e.find('\n')).c_str());
    }
    const int64_t reps = rec.value("repetitions", int64_t{0});
    const nlohmann::json::json_pointer tps("/summary/tokens_per_second");
    if (reps > 1 && rec.contains(tps) && rec.at(tps).value("n", 0) > 1) {
      const auto& t = rec.at(tps);
      const auto ci = t.value("ci95", nlohmann::json());
      const double mean = t.value("mean", 0.0);
      const double half = ci.is_array() && ci[0].is_number() && ci[1].is_number() && mean != 0
                              ? (ci[1].get<double>() - ci[0].get<double>()) / 2 / mean * 100
                              : NAN;
      std::printf("%s: %lld repetitions, tok/s %s +- %.1f%% (95%% CI)%s\n", row.label.c_str(),
                  static_cast<long long>(reps), bench::format_number(mean).c_str(), half,
                  t.value("noisy", nlohmann::json()) == true ? ", noisy (CV > 5%)" : "");
    }
  }
  for (const auto& [reason, labels] : not_run) {
    std::printf("%zu experiment%s not run: %s (%s)\n", labels.size(), labels.size() == 1 ? "" : "s", reason.c_str(),
                labels.size() <= 3 ? fmt::format("{}", fmt::join(labels, ", ")).c_str()
                                   : fmt::format("{}, ...", fmt::join(labels.begin(), labels.begin() + 3, ", ")).c_str());
  }
  if (!r.jsonl_path.empty()) {
    std::printf("results: %s\n         %s\n", r.jsonl_path.c_str(), r.csv_path.c_str());
  } else if (!r.csv_path.empty()) {
    std::printf("results: nothing new was measured (every experiment was cached)\n         %s\n", r.csv_path.c_str());
  }
}

// "12 s", "4.2 min", "3.1 h", "2.5 d".
std::string duration_text(double s) {
  if (s < 90) return fmt::format("{:.0f} s", s);
  if (s < 5400) return fmt::format("{:.1f} min", s / 60);
  if (s < 172800) return fmt::format("{:.1f} h", s / 3600);
  return fmt::format("{:.1f} d", s / 86400);
}

std::string kind_name(DeviceKind k) { return k == DeviceKind::cpu ? "cpu" : "cuda"; }

// The fields that tell the rows of one axis apart, compactly.
std::string key_fields(const bench::ExpandedExperiment& e) {
  auto t = [&](const char* k) {
    const auto& v = e.field(k);
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  switch (e.axis) {
    case bench::Axis::pretrain:
      return fmt::format("B{} T{} x{} steps {} {}", t("batch_size"), t("seq_len"), t("grad_accum"), t("steps"),
                         t("precision"));
    case bench::Axis::finetune:
      return fmt::format("{} {} B{} x{} lr {}", t("method"), t("dataset"), t("batch_size"), t("grad_accum"), t("lr"));
    case bench::Axis::infer:
      return fmt::format("{} B{} prompt {} gen {}", t("precision"), t("batch_sizes"), t("prompt_len"), t("gen_len"));
  }
  return "";
}

int list_suites() {
  const auto names = bench::builtin_suite_file_names();
  if (names.empty()) {
    return report_error(make_error("no suite files found", "configs/suites",
                                   "set EFFICIENTLLM_HOME to the EfficientLLM source tree"));
  }
  bench::TextTable table({"suite", "sized for", "experiments", "pretrain", "finetune", "infer", "not runnable",
                          "description"});
  for (const auto& name : names) {
    auto s = bench::find_suite_file(name);
    if (!s.ok()) {
      table.add_row({name, "-", "-", "-", "-", "-", "-", "error: " + s.error().message()});
      continue;
    }
    std::map<bench::Axis, int> by_axis;
    int not_runnable = 0;
    for (const auto& e : s->experiments) {
      ++by_axis[e.axis];
      not_runnable += !e.supported;
    }
    table.add_row({name, kind_name(s->sized_for), std::to_string(s->experiments.size()),
                   std::to_string(by_axis[bench::Axis::pretrain]), std::to_string(by_axis[bench::Axis::finetune]),
                   std::to_string(by_axis[bench::Axis::infer]), std::to_string(not_runnable), s->description});
  }
  std::printf("%s", table.render().c_str());
  std::printf("\nSuite files: %s\n`efficientllm bench --suite NAME --dry-run` shows a suite's experiments.\n",
              fmt::format("{}", fmt::join(bench::suite_search_dirs(), ", ")).c_str());
  return 0;
}

// `s`: the planned suite (filtered); `total`: its experiments before the filter.
int dry_run(const bench::SuiteFile& s, size_t total_experiments, DeviceKind kind) {
  const auto& rows = s.experiments;
  std::printf("suite %s (%s): %s\n", s.name.c_str(), s.path.c_str(), s.description.c_str());
  std::printf("sized for %s; repetitions %lld, warm-up steps %lld, minimum measured time %g s; %zu of %zu "
              "experiments selected\n\n",
              kind_name(s.sized_for).c_str(), static_cast<long long>(s.repetitions),
              static_cast<long long>(s.warmup_steps), s.min_duration_s, rows.size(), total_experiments);
  bench::TextTable table({"label", "axis", "card/model", "settings", "status", "est. time", "spec hash"});
  double total = 0;
  int estimated = 0;
  for (const auto& e : rows) {
    const auto& primary = e.field(e.axis == bench::Axis::pretrain ? "card" : "model");
    const auto est = bench::estimate_seconds(e, kind);
    if (est) {
      total += *est;
      ++estimated;
    }
    table.add_row({e.label, bench::axis_name(e.axis), primary.is_string() ? primary.get<std::string>() : "",
                   key_fields(e), e.status, est ? duration_text(*est) : "-", e.hash.substr(0, 12)});
  }
  std::printf("%s", table.render().c_str());
  std::printf("\nest. time is an estimate, not a measurement: steps x B x T x training FLOPs per token / an assumed "
              "%s rate of %.3g TFLOP/s, times the repetitions; evaluation and start-up are not counted.\n"
              "estimated total for the %d experiments with an estimate: %s\n"
              "spec hash: SHA-256 of the suite's fields for the experiment; the results' config_hash also covers the "
              "model card, the dataset's content and the device kind (docs/RESULTS.md).\n",
              kind_name(kind).c_str(), bench::assumed_flops_per_second(kind) / 1e12, estimated,
              duration_text(total).c_str());
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "Run a benchmark suite and print the comparison table");
  auto suite = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>("cpu");
  auto opts = std::make_shared<bench::SuiteOptions>();
  auto plan = std::make_shared<bench::PlanOptions>();
  auto no_probe = std::make_shared<bool>(false);
  auto list = std::make_shared<bool>(false);
  auto dry = std::make_shared<bool>(false);
  auto isolate = std::make_shared<bool>(false);
  cmd->add_option("--suite", *suite,
                  "Suite to run: quick (CPU, f32, tiny cards; the default on cpu), gpu-lite (one GPU, bf16, "
                  "0.5B-shaped cards, 3 runs each, then fine-tuning and inference rows, ~1 h 45 min; the default "
                  "on cuda), another suite of --list, or a suite .yaml path");
  auto* device_opt = cmd->add_option("--device", *device, "cpu | cuda[:N] | auto")->capture_default_str();
  cmd->add_flag("--list", *list, "List the suites (configs/suites) with their experiment counts");
  cmd->add_flag("--dry-run", *dry, "Print the suite's expanded experiments with an estimated time; run nothing");
  cmd->add_option("--filter", plan->filter, "Only the experiments whose label matches (regex or substring, any case)");
  cmd->add_option("--results-dir", opts->results_dir, "Where result files and the data cache go")
      ->capture_default_str();
  cmd->add_option("--steps", plan->steps, "Override the suite's optimizer steps per experiment");
  cmd->add_flag("--no-small,--no-probe", *no_probe, "Skip the suite's MFU probe (quick: the `small` card)");
  cmd->add_flag("--force", opts->force,
                "Run every experiment, also those with an ok result of the same config hash in --results-dir");
  cmd->add_flag("--in-process", opts->in_process,
                "Debugging: run the experiments in this process instead of one `efficientllm train` process each "
                "(memory figures then include earlier runs, and a crash ends the suite)");
  cmd->add_option("--timeout", opts->timeout_s,
                  "Seconds after which a repetition's process is stopped and recorded as failed");
  // Isolation became the default; the flag stays so that old command lines work.
  cmd->add_flag("--isolate", *isolate, "Run each experiment in its own process (the default)")->group("");
  cmd->callback([&action, suite, device, opts, plan, no_probe, list, dry, device_opt] {
    const bool device_given = device_opt->count() > 0;
    action = [suite, device, opts, plan, no_probe, list, dry, device_given]() -> int {
      if (*list) return list_suites();
      // An unknown suite is reported before the device is opened, so the
      // error is the same on a machine without a GPU. quick and gpu-lite come
      // from their C++ specs (builtin_suites.cpp; a test keeps their YAML
      // files equal), any other suite from its file; both run the same way.
      auto from_spec = [](const std::string& name) -> Result<bench::SuiteFile> {
        EL_TRY_ASSIGN(bench::SuiteSpec spec, bench::find_builtin_suite(name));
        EL_TRY(bench::validate_suite_spec(spec));
        return bench::suite_spec_to_file(spec);
      };
      std::optional<bench::SuiteFile> file;
      if (!suite->empty()) {
        const bool builtin = *suite == "quick" || *suite == "gpu-lite";
        auto found = builtin ? from_spec(*suite) : bench::find_suite_file(*suite);
        if (!found.ok()) return report_error(found.error());
        file = found.value();
      }
      auto dev = parse_device(*device);
      if (!dev.ok()) return report_error(dev.error());
      opts->device = dev.value();
      if (!file) {
        auto found = from_spec(bench::default_suite_name(opts->device));
        if (!found.ok()) return report_error(found.error());
        file = found.value();
      }
      plan->include_probe = !*no_probe;
      auto planned = bench::plan_suite(*file, *plan);
      if (!planned.ok()) return report_error(planned.error());
      if (*dry) {
        bench::PlanOptions all = *plan;
        all.filter.clear();
        auto unfiltered = bench::plan_suite(*file, all);
        const size_t total = unfiltered.ok() ? unfiltered->experiments.size() : planned->experiments.size();
        return dry_run(planned.value(), total, device_given ? opts->device.kind : file->sized_for);
      }
      if (file->sized_for == DeviceKind::cuda && opts->device.is_cpu()) {
        std::fprintf(stderr,
                     "warning: suite '%s' is sized for a GPU; on the CPU it will take a very long time "
                     "(`--dry-run --device cpu` estimates it). Use --device cuda, or --suite quick.\n",
                     file->name.c_str());
      }
      if (opts->in_process && opts->timeout_s > 0) {
        return report_error(make_error("--timeout stops an experiment's process; with --in-process there is none",
                                       "--timeout", "drop --in-process (each experiment then runs in its own process)"));
      }
      if (!opts->in_process) {
        std::error_code ec;
        opts->self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
        if (ec) {
          return report_error(make_error("cannot find this program's path to run the experiments: " + ec.message(),
                                         "/proc/self/exe", "run with --in-process"));
        }
        bench::install_interrupt_handler();  // Ctrl-C stops the current child, keeps the rest
      }
      auto result = bench::run_suite(planned.value(), *opts);
      if (!result.ok()) return report_error(result.error());
      const auto& r = result.value();
      print_result(r);
      if (r.interrupted) {
        size_t finished = 0;
        for (const auto& row : r.rows) finished += !row.cached && row.status != "interrupted";
        std::fprintf(stderr,
                     "interrupted: %zu finished record(s) are in %s, the interrupted experiment is recorded with "
                     "status 'interrupted'; the rest did not run\n",
                     finished, r.jsonl_path.c_str());
        return 130;
      }
      return r.failures() ? 1 : 0;
    };
  });
}

}  // namespace el::cli
