// efficientllm bench — run a benchmark suite: `quick` on the CPU, `gpu-lite`
// on a GPU unless --suite says otherwise (bench/builtin_suites.h). --list shows
// the suite files (configs/suites), --dry-run the expanded matrix of one with
// an estimated time, --filter selects experiments by label
// (bench/suite_yaml.h).
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <fmt/ranges.h>

#include "bench/child_process.h"
#include "bench/builtin_suites.h"
#include "bench/suite.h"
#include "bench/suite_yaml.h"
#include "bench/table.h"
#include "cli/common.h"

namespace el::cli {
namespace {

// "9.83M", "41K": token counts for the note under the table.
std::string tokens_text(int64_t n) {
  const double v = static_cast<double>(n);
  return v >= 1e6 ? fmt::format("{:.2f}M", v / 1e6) : fmt::format("{:.0f}K", v / 1e3);
}

void print_result(const bench::SuiteResult& r) {
  const bench::SuiteSpec& s = r.spec;
  std::printf("\n%s suite: %s\n", s.name.c_str(), s.description.c_str());
  std::printf("unigram baseline perplexity of the corpus: %.1f (a model that learned nothing scores about this)\n\n",
              r.unigram_perplexity);
  std::printf("%s\n", r.table.c_str());
  std::printf("Token budget: each variant trains %lld steps of %lld x %lld tokens in %s = %s tokens, %.3g epochs of\n"
              "the built-in corpus's %s training tokens",
              static_cast<long long>(s.steps), static_cast<long long>(s.batch_size), static_cast<long long>(s.seq_len),
              precision_name(s.precision), tokens_text(r.tokens_per_run).c_str(), r.epochs,
              tokens_text(r.train_tokens).c_str());
  // More than one pass repeats the text; the perplexity stays an honest
  // held-out number because the validation documents are never trained on.
  std::fputs(r.epochs > 1 ? " (the corpus is small, so the runs repeat it; PPL is on held-out documents).\n" : ".\n",
             stdout);
  std::printf("MFU denominator: %.1f GFLOP/s, the best %s GEMM rate measured on this machine at start-up",
              r.peak_gflops, r.peak_dtype.c_str());
  if (r.peak_datasheet_gflops) std::printf(" (datasheet: %.1f)", *r.peak_datasheet_gflops);
  std::printf(".\n");
  std::printf("PPL: validation perplexity; AMU: time-averaged allocator live memory; MFU: counted FLOPs/s over the\n"
              "calibrated GEMM peak; AL: mean step time; TT: tokens per parameter per second; AEC: average power\n"
              "from energy counters (null when the platform exposes none; see the JSON for the reason).\n");
  std::printf("results: %s\n         %s\n", r.jsonl_path.c_str(), r.csv_path.c_str());
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
      return fmt::format("{} B{} prompt {} gen {}", t("precision"), t("batch_size"), t("prompt_len"), t("gen_len"));
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

int dry_run(const bench::SuiteFile& s, const std::vector<bench::ExpandedExperiment>& rows, DeviceKind kind) {
  std::printf("suite %s (%s): %s\n", s.name.c_str(), s.path.c_str(), s.description.c_str());
  std::printf("sized for %s; repetitions %lld, warm-up steps %lld, minimum measured time %g s; %zu of %zu "
              "experiments selected\n\n",
              kind_name(s.sized_for).c_str(), static_cast<long long>(s.repetitions),
              static_cast<long long>(s.warmup_steps), s.min_duration_s, rows.size(), s.experiments.size());
  bench::TextTable table({"label", "axis", "card/model", "settings", "status", "est. time", "hash"});
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
              "%s rate of %.3g TFLOP/s, times the repetitions; evaluation, start-up and the MFU probe are not "
              "counted.\nestimated total for the %d experiments with an estimate: %s\n",
              kind_name(kind).c_str(), bench::assumed_flops_per_second(kind) / 1e12, estimated,
              duration_text(total).c_str());
  return 0;
}

// Keeps the spec's variants whose label matches (as filter_experiments does).
Result<bench::SuiteSpec> filter_spec(bench::SuiteSpec spec, const std::string& pattern) {
  std::vector<bench::ExpandedExperiment> rows;
  for (const auto& v : spec.variants) {
    bench::ExpandedExperiment e;
    e.label = v.label;
    rows.push_back(e);
  }
  EL_TRY_ASSIGN(auto kept, bench::filter_experiments(rows, pattern));
  std::vector<bench::SuiteVariant> variants;
  for (const auto& v : spec.variants)
    for (const auto& k : kept)
      if (k.label == v.label) variants.push_back(v);
  spec.variants = variants;
  return spec;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "Run a benchmark suite and print the comparison table");
  auto suite = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>("cpu");
  auto opts = std::make_shared<bench::SuiteOptions>();
  auto no_probe = std::make_shared<bool>(false);
  auto list = std::make_shared<bool>(false);
  auto dry = std::make_shared<bool>(false);
  auto filter = std::make_shared<std::string>();
  cmd->add_option("--suite", *suite,
                  "Suite to run: quick (CPU, f32, tiny cards; the default on cpu), gpu-lite (one GPU, bf16, "
                  "0.5B-shaped cards, ~10 min; the default on cuda), another suite of --list, or a suite .yaml path");
  auto* device_opt = cmd->add_option("--device", *device, "cpu | cuda[:N] | auto")->capture_default_str();
  cmd->add_flag("--list", *list, "List the suites (configs/suites) with their experiment counts");
  cmd->add_flag("--dry-run", *dry, "Print the suite's expanded experiments with an estimated time; run nothing");
  cmd->add_option("--filter", *filter, "Only the experiments whose label matches (regex or substring, any case)");
  cmd->add_option("--results-dir", opts->results_dir, "Where result files and the data cache go")
      ->capture_default_str();
  cmd->add_option("--steps", opts->steps, "Override the suite's optimizer steps per experiment");
  cmd->add_flag("--no-small,--no-probe", *no_probe, "Skip the suite's MFU probe (quick: the `small` card)");
  cmd->add_flag("--isolate", opts->isolate,
                "Run each experiment in its own process (clean memory accounting; a crash or "
                "out-of-memory kill becomes a failed row and the suite goes on)");
  cmd->add_option("--timeout", opts->timeout_s,
                  "With --isolate: seconds after which an experiment is stopped and recorded as failed");
  cmd->callback([&action, suite, device, opts, no_probe, list, dry, filter, device_opt] {
    const bool device_given = device_opt->count() > 0;
    action = [suite, device, opts, no_probe, list, dry, filter, device_given]() -> int {
      if (*list) return list_suites();
      const bool builtin = suite->empty() || *suite == "quick" || *suite == "gpu-lite";
      // An unknown suite is reported before the device is opened, so the
      // error is the same on a machine without a GPU. quick and gpu-lite run
      // from their C++ specs (builtin_suites.cpp; a test keeps their YAML
      // files equal); any other suite from its file.
      std::optional<bench::SuiteSpec> spec;
      std::optional<bench::SuiteFile> file;
      if (!suite->empty() && (!builtin || *dry)) {
        auto found = bench::find_suite_file(*suite);
        if (!found.ok()) return report_error(found.error());
        file = found.value();
      } else if (!suite->empty()) {
        spec = bench::find_builtin_suite(*suite).value();
      }
      auto dev = parse_device(*device);
      if (!dev.ok()) return report_error(dev.error());
      opts->device = dev.value();
      if (!spec && !file) {
        const std::string name = bench::default_suite_name(opts->device);
        if (*dry) {
          auto found = bench::find_suite_file(name);
          if (!found.ok()) return report_error(found.error());
          file = found.value();
        } else {
          spec = bench::find_builtin_suite(name).value();
        }
      }
      if (file) {
        std::vector<bench::ExpandedExperiment> rows = file->experiments;
        if (!filter->empty()) {
          auto kept = bench::filter_experiments(rows, *filter);
          if (!kept.ok()) return report_error(kept.error());
          rows = kept.value();
        }
        if (*dry) return dry_run(*file, rows, device_given ? opts->device.kind : file->sized_for);
        file->experiments = rows;
        auto converted = bench::suite_file_to_spec(*file);
        if (!converted.ok()) return report_error(converted.error());
        spec = converted.value();
      } else if (!filter->empty()) {
        auto kept = filter_spec(*spec, *filter);
        if (!kept.ok()) return report_error(kept.error());
        spec = kept.value();
      }
      if (spec->sized_for == DeviceKind::cuda && opts->device.is_cpu()) {
        std::fprintf(stderr,
                     "warning: suite '%s' is sized for a GPU (%lld steps of %lld x %lld tokens per variant); on the "
                     "CPU it will take a very long time. Use --device cuda, or --suite quick.\n",
                     spec->name.c_str(), static_cast<long long>(opts->steps > 0 ? opts->steps : spec->steps),
                     static_cast<long long>(spec->batch_size), static_cast<long long>(spec->seq_len));
      }
      opts->include_probe = !*no_probe;
      if (opts->isolate) {
        std::error_code ec;
        opts->self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
        if (ec) {
          return report_error(make_error("cannot find this program's path for --isolate: " + ec.message(),
                                         "/proc/self/exe"));
        }
        bench::install_interrupt_handler();  // Ctrl-C stops the current child, keeps the rest
      }
      auto result = bench::run_suite(*spec, *opts);
      if (!result.ok()) return report_error(result.error());
      const auto& r = result.value();
      print_result(r);
      if (opts->isolate && bench::interrupt_requested()) {
        std::fprintf(stderr, "interrupted: the %zu experiments that finished are recorded\n",
                     r.records.size());
        return 130;
      }
      int failed = 0;
      for (const auto& rec : r.records) failed += rec.value("status", "") != "ok";
      return failed ? 1 : 0;
    };
  });
}

}  // namespace el::cli
