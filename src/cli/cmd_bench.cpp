// efficientllm bench — run a benchmark suite (default: the built-in `quick`).
#include <cstdio>

#include "bench/quick_suite.h"
#include "cli/common.h"

namespace el::cli {

void add_bench_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench", "Run a benchmark suite and print the comparison table");
  auto suite = std::make_shared<std::string>("quick");
  auto device = std::make_shared<std::string>("cpu");
  auto opts = std::make_shared<bench::QuickSuiteOptions>();
  auto no_small = std::make_shared<bool>(false);
  cmd->add_option("--suite", *suite, "Suite to run (built-in: quick)")->capture_default_str();
  cmd->add_option("--device", *device, "cpu | cuda[:N]")->capture_default_str();
  cmd->add_option("--results-dir", opts->results_dir, "Where result files and the data cache go")
      ->capture_default_str();
  cmd->add_option("--steps", opts->steps, "Override the suite's optimizer steps per experiment");
  cmd->add_flag("--no-small", *no_small, "Skip the `small` card MFU probe");
  cmd->callback([&action, suite, device, opts, no_small] {
    action = [suite, device, opts, no_small]() -> int {
      if (*suite != "quick") {
        return report_error(make_error(fmt::format("unknown suite '{}'", *suite), "--suite",
                                       "built-in suites: quick"));
      }
      auto dev = parse_device(*device);
      if (!dev.ok()) return report_error(dev.error());
      opts->device = dev.value();
      opts->include_small = !*no_small;
      auto result = bench::run_quick_suite(*opts);
      if (!result.ok()) return report_error(result.error());
      const auto& r = result.value();
      std::printf("\nquick suite: tiny MHA / GQA / MQA pretrained with the same token budget on the built-in corpus\n");
      std::printf("unigram baseline perplexity of the corpus: %.1f (a model that learned nothing scores about this)\n\n",
                  r.unigram_perplexity);
      std::printf("%s\n", r.table.c_str());
      std::printf("MFU denominator: %.1f GFLOP/s, the best %s GEMM rate measured on this machine at start-up",
                  r.peak_gflops, r.peak_dtype.c_str());
      if (r.peak_datasheet_gflops) std::printf(" (datasheet: %.1f)", *r.peak_datasheet_gflops);
      std::printf(".\n");
      std::printf("PPL: validation perplexity; AMU: time-averaged allocator live memory; MFU: counted FLOPs/s over the\n"
                  "calibrated GEMM peak; AL: mean step time; TT: tokens per parameter per second; AEC: average power\n"
                  "from energy counters (null when the platform exposes none; see the JSON for the reason).\n");
      std::printf("results: %s\n         %s\n", r.jsonl_path.c_str(), r.csv_path.c_str());
      int failed = 0;
      for (const auto& rec : r.records) failed += rec.value("status", "") != "ok";
      return failed ? 1 : 0;
    };
  });
}

}  // namespace el::cli
