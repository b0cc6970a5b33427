// `efficientllm report <results...>`: result files (or directories of them)
// as a leaderboard: per suite + axis, the rank table, the values with their
// 95% CI and noise flag, and in HTML bar charts and Pareto fronts
// (bench/report.h has the rules). Formats: text (default), md, csv, html, or
// all four into a directory. Exit status: 0 when the report was written, 1 for
// bad input (missing file, empty directory, malformed line, mixed schema
// versions, no records) or an output that cannot be written.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/report.h"
#include "cli/common.h"
#include "io/atomic_file.h"

namespace el::cli {

void add_report_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "report", "Turn result files (JSON Lines) into rank tables, values with CIs and charts (text, md, csv, html)");
  struct Options {
    std::vector<std::string> inputs;
    std::string format = "text";
    std::string out;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("results", o->inputs, "Result files (.jsonl) or directories (every *.jsonl in them)")
      ->required();
  cmd->add_option("--format", o->format, "text (default), md, csv, html, or all (needs -o DIR)");
  cmd->add_option("-o,--out", o->out,
                  "Write to this file (atomically) instead of stdout; with --format all, a directory that gets "
                  "report.txt, report.md, report.csv and report.html");
  cmd->callback([&action, o] {
    action = [o]() -> int {
      std::vector<bench::ReportFormat> formats;
      if (o->format == "all") {
        if (o->out.empty()) {
          return report_error(make_error("--format all writes four files and needs an output directory", "--format",
                                         "add -o DIR"));
        }
        formats = {bench::ReportFormat::text, bench::ReportFormat::markdown, bench::ReportFormat::csv,
                   bench::ReportFormat::html};
      } else {
        auto f = bench::parse_report_format(o->format);
        if (!f.ok()) return report_error(f.error());
        formats = {f.value()};
      }
      auto report = bench::load_report(o->inputs);
      if (!report.ok()) return report_error(report.error());
      for (const auto& w : report.value().warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      if (o->out.empty()) {
        std::fputs(bench::render_report(report.value(), formats[0]).c_str(), stdout);
        return 0;
      }
      std::string dir;
      if (o->format == "all") {
        dir = o->out;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) {
          return report_error(make_error("cannot create the output directory: " + ec.message(), dir,
                                         "pass a writable -o DIR"));
        }
      }
      for (const auto f : formats) {
        const std::string path = dir.empty() ? o->out : dir + "/report." + bench::report_extension(f);
        const Status st = io::write_file_atomic(path, bench::render_report(report.value(), f));
        if (!st.ok()) return report_error(st.error());
        std::fprintf(stderr, "wrote %s (%zu experiments)\n", path.c_str(), report.value().experiment_count());
      }
      return 0;
    };
  });
}

}  // namespace el::cli
