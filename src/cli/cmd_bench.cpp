// efficientllm bench — run a benchmark suite: `quick` on the CPU, `gpu-lite`
// on a GPU unless --suite says otherwise (bench/builtin_suites.h).
#include <cstdio>
#include <optional>

#include "bench/builtin_suites.h"
#include "bench/suite.h"
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

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "Run a benchmark suite and print the comparison table");
  auto suite = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>("cpu");
  auto opts = std::make_shared<bench::SuiteOptions>();
  auto no_probe = std::make_shared<bool>(false);
  cmd->add_option("--suite", *suite,
                  "Suite to run: quick (CPU, f32, tiny cards; the default on cpu) or gpu-lite (one GPU, bf16, "
                  "0.5B-shaped cards, ~10 min; the default on cuda)");
  cmd->add_option("--device", *device, "cpu | cuda[:N] | auto")->capture_default_str();
  cmd->add_option("--results-dir", opts->results_dir, "Where result files and the data cache go")
      ->capture_default_str();
  cmd->add_option("--steps", opts->steps, "Override the suite's optimizer steps per experiment");
  cmd->add_flag("--no-small,--no-probe", *no_probe, "Skip the suite's MFU probe (quick: the `small` card)");
  cmd->callback([&action, suite, device, opts, no_probe] {
    action = [suite, device, opts, no_probe]() -> int {
      // An unknown suite is reported before the device is opened, so the
      // error is the same on a machine without a GPU.
      std::optional<bench::SuiteSpec> spec;
      if (!suite->empty()) {
        auto found = bench::find_builtin_suite(*suite);
        if (!found.ok()) return report_error(found.error());
        spec = found.value();
      }
      auto dev = parse_device(*device);
      if (!dev.ok()) return report_error(dev.error());
      opts->device = dev.value();
      if (!spec) spec = bench::find_builtin_suite(bench::default_suite_name(opts->device)).value();
      if (spec->sized_for == DeviceKind::cuda && opts->device.is_cpu()) {
        std::fprintf(stderr,
                     "warning: suite '%s' is sized for a GPU (%lld steps of %lld x %lld tokens per variant); on the "
                     "CPU it will take a very long time. Use --device cuda, or --suite quick.\n",
                     spec->name.c_str(), static_cast<long long>(opts->steps > 0 ? opts->steps : spec->steps),
                     static_cast<long long>(spec->batch_size), static_cast<long long>(spec->seq_len));
      }
      opts->include_probe = !*no_probe;
      auto result = bench::run_suite(*spec, *opts);
      if (!result.ok()) return report_error(result.error());
      const auto& r = result.value();
      print_result(r);
      int failed = 0;
      for (const auto& rec : r.records) failed += rec.value("status", "") != "ok";
      return failed ? 1 : 0;
    };
  });
}

}  // namespace el::cli
