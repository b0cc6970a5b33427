// `efficientllm compare A.jsonl B.jsonl`: the experiments two result files
// share, side by side, with per-metric ratios B/A and whether each difference
// exceeds the measured noise (bench/result_compare.h has the rules).
// Exit status: 0 whenever the comparison could be made (a regression is data,
// not an error); 1 for bad input (unreadable file, schema mismatch, no common
// experiment).
#include <cstdio>
#include <memory>
#include <string>

#include "bench/result_compare.h"
#include "bench/results.h"
#include "cli/common.h"

namespace el::cli {

void add_compare_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("compare", "Compare two result files (JSON Lines) experiment by experiment");
  struct Options {
    std::string a, b;
    bool markdown = false, csv = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("A", o->a, "Baseline results (.jsonl)")->required();
  cmd->add_option("B", o->b, "Results to compare with the baseline (.jsonl); ratios are B/A")->required();
  auto* md = cmd->add_flag("--markdown", o->markdown, "Print a Markdown table");
  cmd->add_flag("--csv", o->csv, "Print CSV")->excludes(md);
  cmd->callback([&action, o] {
    action = [o]() -> int {
      // Read both through one call, so mixed schema versions are refused
      // with both files named.
      auto all = bench::read_jsonl_records(std::vector<std::string>{o->a, o->b});
      if (!all.ok()) return report_error(all.error());
      for (const auto& w : all.value().warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      std::vector<nlohmann::json> a, b;
      const auto& recs = all.value();
      for (size_t i = 0; i < recs.records.size(); ++i) {
        (recs.file_index[i] == 0 ? a : b).push_back(recs.records[i]);
      }
      if (a.empty()) return report_error(make_error("no result records in the file", o->a));
      if (b.empty()) return report_error(make_error("no result records in the file", o->b));
      auto cmp = bench::compare_results(a, b, o->a, o->b);
      if (!cmp.ok()) return report_error(cmp.error());
      const auto& c = cmp.value();
      const auto format = o->markdown ? bench::CompareFormat::markdown
                          : o->csv    ? bench::CompareFormat::csv
                                      : bench::CompareFormat::text;
      if (format == bench::CompareFormat::text) {
        std::printf("A: %s\nB: %s\n\n", o->a.c_str(), o->b.c_str());
      }
      std::fputs(bench::render_comparison(c, format).c_str(), stdout);
      for (const auto& n : c.only_a) std::fprintf(stderr, "note: only in A: %s\n", n.c_str());
      for (const auto& n : c.only_b) std::fprintf(stderr, "note: only in B: %s\n", n.c_str());
      return 0;
    };
  });
}

}  // namespace el::cli
