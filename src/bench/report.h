// report.h — `efficientllm report`: result files turned into a leaderboard.
//
// Reads JSON Lines result records (results.h; any mix of files and
// directories, one schema version), merges the repetitions of each experiment
// (records with one config_hash in one suite, build and machine), groups
// experiments by suite + axis and renders, per group, the paper's rank table
// (rank 1 = best per metric, as its leaderboard), the raw values with units,
// mean ± 95% CI over repetitions and a "noisy" flag (CV > 5%). Formats: an
// aligned terminal table, Markdown, a long-form CSV and one self-contained
// HTML page with inline SVG charts (bar chart per metric, Pareto fronts) and a
// small inline script that sorts and filters the tables (report_html.cpp,
// report_svg.h). docs/RESULTS.md ("Reports") is the user-facing description.
//
// Failed, partial and not-supported experiments are rows like any other: the
// status column says what happened and their missing metrics show "-"; they
// are never dropped.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/results.h"
#include "core/error.h"

namespace el::bench {

// ---- metrics: the one table of what the report shows and which way is better

enum class Better { lower, higher };

struct ReportMetricSpec {
  std::string name;   // key in a record's "summary" (or in a run), e.g. "perplexity"
  std::string label;  // short column title, the paper's name where it has one: "PPL"
  std::string title;  // long name for chart titles and tooltips
  std::string unit;   // "GB", "s", "" (dimensionless)
  Better better;
  // Where one repetition's run object holds the value when the record's
  // summary has no entry for it (e.g. PCU); empty = try "/metrics/<name>",
  // then "/<name>". Such values are summarised here (result_stats.h).
  std::string run_pointer;
};

// Every metric the report knows, in column order (the leaderboard's:
// quality, AMU, PCU/MFU, AL, throughput, AEC, MCR). Lower is better for
// PPL, losses, AMU, AL, latency, energy, AEC; higher for MFU, PCU, TT, ST,
// IT, tokens/s, quality/accuracy, MCR and compression ratio. Metrics found in
// no record are not shown; names not listed here are ignored.
const std::vector<ReportMetricSpec>& report_metrics();
// nullptr when `name` is not in report_metrics().
const ReportMetricSpec* find_report_metric(std::string_view name);

// A Pareto plot: y against x (both metric names), drawn when at least two
// experiments of a group have both.
struct ParetoPlotSpec {
  std::string x, y;
};
// PPL vs AMU, PPL vs AL, AL vs AEC, quality vs MCR, quality vs compression.
const std::vector<ParetoPlotSpec>& pareto_plots();

// ---- the report model -------------------------------------------------------

struct MetricCell {
  double mean = NAN;  // over the repetitions that measured it
  double ci_low = NAN, ci_high = NAN;  // 95% CI of the mean; NaN for n < 2
  double cv = NAN;                     // NaN for n < 2
  size_t n = 0;                        // repetitions that measured it
  bool noisy = false;                  // cv > kNoisyCv
  int rank = 0;                        // 1 = best in the group; 0 = no value, no rank
  bool has_value() const { return std::isfinite(mean); }
};

// One experiment: all records with its config_hash merged.
struct ReportRow {
  std::string name;   // unique within the group: the label, plus the hash's
                      // first 8 digits when two experiments share a label
  std::string label, suite, axis, status, error, card, config_hash, run_id;
  int64_t repetitions = 0;
  int64_t parameters = -1;  // -1: unknown
  int64_t active_parameters = -1;  // per token (a mixture of experts: < parameters); -1: not recorded
  std::string git_commit, compiler, build_type;  // from "build"
  std::string machine;                           // "CPU model (N cores); GPU: model" from "machine"
  std::vector<std::string> sources;              // "path:line" of every merged record
  std::map<std::string, MetricCell> metrics;     // by metric name; only metrics with a value
  // The cell of `metric`, or an empty one (no value, no rank).
  const MetricCell& cell(const std::string& metric) const;
};

struct ReportGroup {
  std::string suite, axis;
  std::vector<std::string> metrics;  // names with a value in some row, in report_metrics() order
  std::vector<ReportRow> rows;       // in the order first seen in the inputs
  std::string title() const;         // "quick / pretrain"
};

struct Report {
  std::vector<std::string> files;     // the result files read, in order
  std::vector<ReportGroup> groups;    // in the order first seen
  std::vector<std::string> warnings;  // torn last lines, duplicate records
  size_t experiment_count() const;
};

// Input paths → result files: a file as given, a directory as every "*.jsonl"
// directly in it (sorted by name). The same file named twice is read once.
// Errors: a path that does not exist, a directory with no *.jsonl file.
Result<std::vector<std::string>> collect_result_files(const std::vector<std::string>& inputs);

// The report of records already read (read_jsonl_records output). Records
// with one config_hash, suite, build (commit, compiler, build type) and
// machine are repetitions of one experiment and merged
// (merge_repetition_records); the same config on another build or machine
// stays a row of its own (named "label @commit"), since its numbers are not
// samples of the same thing. A
// record identical to an earlier one (a file read twice, a copy) is skipped
// with a warning rather than counted twice. Errors: no records, a merge that
// fails.
Result<Report> build_report(const JsonlRecords& records, const std::vector<std::string>& files);

// collect_result_files + read_jsonl_records (mixed schema versions refused) +
// build_report.
Result<Report> load_report(const std::vector<std::string>& inputs);

// Competition ranks ("1224"): rank = 1 + the number of values strictly better.
// Values within a relative 1e-9 of each other tie (float noise in a mean is
// not a difference). NaN → rank 0 (no rank).
std::vector<int> rank_values(const std::vector<double>& values, Better better);

// Indices of the Pareto-optimal points among (x[i], y[i]) — no other point is
// at least as good on both axes and strictly better on one — sorted by x
// ascending (then y), ready to connect. Points with a NaN coordinate are
// ignored. Equal points are all on the front.
std::vector<size_t> pareto_front(const std::vector<double>& x, const std::vector<double>& y, Better x_better,
                                 Better y_better);

// ---- rendering --------------------------------------------------------------

enum class ReportFormat { text, markdown, csv, html };

// "text"/"txt", "md"/"markdown", "csv", "html"; an Error naming the choices.
Result<ReportFormat> parse_report_format(const std::string& name);
// "txt", "md", "csv", "html": the extension of report.<ext> for --format all.
const char* report_extension(ReportFormat format);

std::string render_report(const Report& report, ReportFormat format);
std::string render_report_text(const Report& report);
std::string render_report_markdown(const Report& report);
// Long form, one line per experiment × metric of its group (one line with an
// empty metric when the group has none), full-precision numbers.
std::string render_report_csv(const Report& report);
// One self-contained page (report_html.cpp): no network, no external file.
std::string render_report_html(const Report& report);

// Escapes & < > " ' for HTML/SVG text and attribute values.
std::string html_escape(std::string_view s);
// One CSV field (RFC 4180): quoted when it holds , " CR or LF, quotes doubled.
std::string csv_field(std::string_view s);
// A CSV field for free text from a record (labels, errors): as csv_field, and
// a leading = + - @ TAB or CR gets a "'" so a spreadsheet shows it instead of
// evaluating it as a formula.
std::string csv_text_field(std::string_view s);

// Shared by the renderers: "60.0", "1.02e+03 ± 24.8" style strings.
// 4 significant digits ("0.02831", "131.0", "1692", "17680"), exponent form
// below 1e-3 and from 1e6 on, "-" for NaN.
std::string format_metric_value(double v);
// Values are shown in display units: a "fraction" (MFU, PCU) as "%" (× 100);
// everything else as recorded. CSV keeps the recorded unit.
double display_factor(const ReportMetricSpec& m);
std::string display_unit(const ReportMetricSpec& m);
// "mean ± half" (the 95% CI's half-width, n >= 2) or "mean", in display units.
std::string format_metric_cell(const MetricCell& c, const ReportMetricSpec& m, std::string_view plus_minus);
// What a group's rows were built and run on, for the provenance lines:
// {"build", "aaaaaaaaaaaa (GNU-12.2.0 Release)"}, {"machine", ...},
// {"run ids", ...}; distinct values joined by "; ".
std::vector<std::pair<std::string, std::string>> group_provenance(const ReportGroup& group);
// "lower is better: PPL, AL; higher is better: MFU" for the metrics of a group.
std::string direction_legend(const std::vector<std::string>& metrics);
// "PPL", "AMU (GB)", "MFU (%)": the column title of a metric with its display unit.
std::string metric_column_title(const ReportMetricSpec& m);
// "abc…" cut at `max_chars` code points (UTF-8 safe).
std::string truncate_utf8(std::string_view s, size_t max_chars);

}  // namespace el::bench
