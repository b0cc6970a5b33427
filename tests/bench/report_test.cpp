// `efficientllm report` (bench/report.h, report_svg.h): ranks with ties and
// both directions, missing metrics, grouping, merging repetitions, escaping,
// CSV quoting, Pareto fronts, chart ticks, the SVG/HTML structure, and every
// bad-input error. The browser test of the page is tests/cli/report_dom_test.sh.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>

#include "bench/report.h"
#include "bench/report_svg.h"
#include "bench/result_stats.h"
#include "bench/results.h"

namespace el::bench {
namespace {

using nlohmann::json;

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "no '" << (needle) << "' in: " << (haystack)
#define EXPECT_LACKS(haystack, needle) \
  EXPECT_EQ(std::string(haystack).find(needle), std::string::npos) << "'" << (needle) << "' in: " << (haystack)

const std::string kFixtures = EL_TEST_DATA_DIR "/results";

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("el_report_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
  static inline int counter_ = 0;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

json run(double tok_s, double ppl, double amu = 0.05) {
  return {{"status", "ok"},
          {"card", "tiny"},
          {"parameters", 1000},
          {"perplexity", ppl},
          {"metrics",
           {{"tokens_per_second", tok_s},
            {"al_seconds", {{"mean", 1000.0 / tok_s}}},
            {"memory_energy", {{"amu_live_gb", amu}, {"mean_device_util", 0.5}}}}}};
}

json failed_run(const std::string& why) { return {{"status", "failed"}, {"error", why}}; }

json record(const std::string& suite, const std::string& axis, const std::string& label, const std::vector<json>& runs,
            const std::string& commit = "aaaaaaaaaaaa") {
  ExperimentInfo info{suite, label, axis, "20261122-000000", {{"label", label}, {"suite", suite}, {"axis", axis}}, {}};
  json build = {{"git_commit", commit}, {"compiler", "GNU-12.2.0"}, {"build_type", "Release"}, {"flags", nullptr}};
  json machine = {{"cpu_model", "test CPU"}, {"physical_cores", 2}, {"gpu", nullptr}};
  return make_result_record(info, runs, build, machine);
}

JsonlRecords records_of(const std::vector<json>& recs) {
  JsonlRecords out;
  out.schema = kResultSchemaV2;
  for (size_t i = 0; i < recs.size(); ++i) {
    out.records.push_back(recs[i]);
    out.sources.push_back("mem.jsonl:" + std::to_string(i + 1));
    out.file_index.push_back(0);
  }
  return out;
}

Report build(const std::vector<json>& recs) {
  auto r = build_report(records_of(recs), {"mem.jsonl"});
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? r.value() : Report{};
}

const ReportRow* find_row(const ReportGroup& g, const std::string& name) {
  for (const auto& r : g.rows) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

// ---- ranks and direction ------------------------------------------------------------

TEST(ReportRanks, LowerIsBetterWithTiesSharingARank) {
  EXPECT_EQ(rank_values({1, 2, 2, 3}, Better::lower), (std::vector<int>{1, 2, 2, 4}));
  EXPECT_EQ(rank_values({3, 1, 3, 2}, Better::lower), (std::vector<int>{3, 1, 3, 2}));
}

TEST(ReportRanks, HigherIsBetter) {
  EXPECT_EQ(rank_values({1, 2, 2, 3}, Better::higher), (std::vector<int>{4, 2, 2, 1}));
}

TEST(ReportRanks, MissingValuesGetNoRankAndDoNotCount) {
  EXPECT_EQ(rank_values({NAN, 5, 4, INFINITY}, Better::lower), (std::vector<int>{0, 2, 1, 0}));
  EXPECT_EQ(rank_values({}, Better::lower), std::vector<int>{});
  EXPECT_EQ(rank_values({NAN}, Better::higher), std::vector<int>{0});
}

TEST(ReportRanks, FloatNoiseInAMeanIsATie) {
  // (0.60 + 0.68) / 2 is not exactly 0.64 in binary.
  EXPECT_EQ(rank_values({(0.60 + 0.68) / 2, 0.64, 0.5}, Better::higher), (std::vector<int>{1, 1, 3}));
}

TEST(ReportMetrics, DirectionTableMatchesThePaperAndTheRecordSummaries) {
  for (const char* n : {"perplexity", "val_loss", "amu_live_gb", "al_seconds", "aec_avg_power_w", "latency_ms",
                        "energy_j"}) {
    ASSERT_NE(find_report_metric(n), nullptr) << n;
    EXPECT_EQ(find_report_metric(n)->better, Better::lower) << n;
  }
  for (const char* n : {"mfu", "pcu", "tt_tokens_per_param_per_second", "st_samples_per_param_per_second",
                        "it_tokens_per_second", "tokens_per_second", "quality", "accuracy", "mcr",
                        "compression_ratio"}) {
    ASSERT_NE(find_report_metric(n), nullptr) << n;
    EXPECT_EQ(find_report_metric(n)->better, Better::higher) << n;
  }
  // Every summarised headline metric is shown, with the same direction and unit.
  for (const auto& h : headline_metrics()) {
    const ReportMetricSpec* m = find_report_metric(h.name);
    ASSERT_NE(m, nullptr) << h.name;
    EXPECT_EQ(m->better == Better::higher, h.higher_is_better) << h.name;
    EXPECT_EQ(m->unit, h.unit) << h.name;
  }
  EXPECT_EQ(find_report_metric("no_such_metric"), nullptr);
  for (const auto& p : pareto_plots()) {
    EXPECT_NE(find_report_metric(p.x), nullptr) << p.x;
    EXPECT_NE(find_report_metric(p.y), nullptr) << p.y;
  }
}

// ---- Pareto fronts ------------------------------------------------------------------

TEST(ReportPareto, BothLowerIsBetter) {
  // (3,4) is beaten by (2,3); (2,3) appears twice: equal points are both on the front.
  const std::vector<double> x = {1, 2, 3, 4, 2, NAN};
  const std::vector<double> y = {5, 3, 4, 1, 3, 0};
  EXPECT_EQ(pareto_front(x, y, Better::lower, Better::lower), (std::vector<size_t>{0, 1, 4, 3}));
}

TEST(ReportPareto, MixedDirections) {
  // x lower is better (memory), y higher is better (quality).
  const std::vector<double> x = {1, 2, 3, 2};
  const std::vector<double> y = {0.5, 0.7, 0.9, 0.6};
  EXPECT_EQ(pareto_front(x, y, Better::lower, Better::higher), (std::vector<size_t>{0, 1, 2}));
  // One point beating all: the front is that point.
  EXPECT_EQ(pareto_front({1, 2, 3}, {1, 2, 3}, Better::lower, Better::lower), (std::vector<size_t>{0}));
  EXPECT_TRUE(pareto_front({}, {}, Better::lower, Better::lower).empty());
}

// ---- the model: grouping, merging, missing metrics --------------------------------------

TEST(ReportModel, GroupsBySuiteAndAxisInFirstSeenOrder) {
  const Report r = build({record("quick", "pretrain", "a", {run(100, 50)}),
                          record("quick", "infer", "b", {run(100, 50)}),
                          record("other", "pretrain", "c", {run(100, 50)}),
                          record("quick", "pretrain", "d", {run(200, 40)})});
  ASSERT_EQ(r.groups.size(), 3u);
  EXPECT_EQ(r.groups[0].title(), "quick / pretrain");
  EXPECT_EQ(r.groups[1].title(), "quick / infer");
  EXPECT_EQ(r.groups[2].title(), "other / pretrain");
  ASSERT_EQ(r.groups[0].rows.size(), 2u);
  EXPECT_EQ(r.groups[0].rows[1].name, "d");
  EXPECT_EQ(r.experiment_count(), 4u);
  // Ranks are within a group: "d" is best there, "b" alone in its group.
  EXPECT_EQ(r.groups[0].rows[1].cell("tokens_per_second").rank, 1);
  EXPECT_EQ(r.groups[0].rows[0].cell("tokens_per_second").rank, 2);
  EXPECT_EQ(r.groups[1].rows[0].cell("tokens_per_second").rank, 1);
}

TEST(ReportModel, RepetitionRecordsOfOneExperimentAreMerged) {
  // Two one-run records with one config hash (written by two child processes).
  const Report r = build({record("quick", "pretrain", "a", {run(100, 50)}),
                          record("quick", "pretrain", "b", {run(300, 40)}),
                          record("quick", "pretrain", "a", {run(110, 50)})});
  ASSERT_EQ(r.groups.size(), 1u);
  ASSERT_EQ(r.groups[0].rows.size(), 2u);
  const ReportRow& a = r.groups[0].rows[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.repetitions, 2);
  EXPECT_EQ(a.sources, (std::vector<std::string>{"mem.jsonl:1", "mem.jsonl:3"}));
  const MetricCell& c = a.cell("tokens_per_second");
  EXPECT_EQ(c.n, 2u);
  EXPECT_DOUBLE_EQ(c.mean, 105);
  // t_{0.975,1} = 12.706205, stddev = 7.0711, half = 12.706205 * 5 = 63.53
  EXPECT_NEAR(c.ci_high - c.mean, 12.706205 * 5.0, 1e-6);
  EXPECT_NEAR(c.cv, 7.0710678 / 105, 1e-6);
  EXPECT_TRUE(c.noisy);
  EXPECT_EQ(format_metric_cell(c, *find_report_metric("tokens_per_second"), "+-"), "105.0 +- 63.5");
}

TEST(ReportModel, SameConfigOnAnotherBuildIsAnotherRowNamedByCommit) {
  const Report r = build({record("quick", "pretrain", "a", {run(100, 50)}, "aaaaaaaaaaaa"),
                          record("quick", "pretrain", "a", {run(120, 50)}, "bbbbbbbbbbbb")});
  ASSERT_EQ(r.groups[0].rows.size(), 2u);
  EXPECT_EQ(r.groups[0].rows[0].name, "a @aaaaaaaaaaaa");
  EXPECT_EQ(r.groups[0].rows[1].name, "a @bbbbbbbbbbbb");
  EXPECT_EQ(r.groups[0].rows[1].cell("tokens_per_second").rank, 1);
  const auto prov = group_provenance(r.groups[0]);
  ASSERT_EQ(prov.size(), 3u);
  EXPECT_EQ(prov[0].second, "aaaaaaaaaaaa (GNU-12.2.0 Release); bbbbbbbbbbbb (GNU-12.2.0 Release)");
  EXPECT_EQ(prov[1].second, "test CPU (2 cores); GPU: none");
}

TEST(ReportModel, AnIdenticalRecordReadTwiceIsCountedOnceWithAWarning) {
  const json a = record("quick", "pretrain", "a", {run(100, 50)});
  const Report r = build({a, a});
  ASSERT_EQ(r.groups[0].rows.size(), 1u);
  EXPECT_EQ(r.groups[0].rows[0].repetitions, 1);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_HAS(r.warnings[0], "mem.jsonl:2: the same record as mem.jsonl:1");
}

TEST(ReportModel, FailedAndNotSupportedRowsAreKeptWithoutMetricsOrRanks) {
  json unsupported = record("quick", "pretrain", "infer-int4", {});
  unsupported["status"] = "not_supported";
  unsupported["error"] = "not supported by this build: infer axis";
  json unsupported_again = unsupported;  // the same experiment, another suite run
  unsupported_again["run_id"] = "20261123-000000";
  const Report r = build({record("quick", "pretrain", "a", {run(100, 50)}),
                          record("quick", "pretrain", "crashed", {failed_run("killed by signal 9")}), unsupported,
                          unsupported_again});
  ASSERT_EQ(r.groups[0].rows.size(), 3u);
  const ReportRow* crashed = find_row(r.groups[0], "crashed");
  ASSERT_NE(crashed, nullptr);
  EXPECT_EQ(crashed->status, "failed");
  EXPECT_EQ(crashed->error, "killed by signal 9");
  EXPECT_TRUE(crashed->metrics.empty());
  EXPECT_EQ(crashed->cell("perplexity").rank, 0);
  const ReportRow* ns = find_row(r.groups[0], "infer-int4");
  ASSERT_NE(ns, nullptr);
  EXPECT_EQ(ns->status, "not_supported");  // merging two run-less records keeps the status
  EXPECT_EQ(ns->error, "not supported by this build: infer axis");
  // The only measured row ranks 1 everywhere it has a value.
  EXPECT_EQ(r.groups[0].rows[0].cell("perplexity").rank, 1);
  const std::string text = render_report_text(r);
  EXPECT_TRUE(std::regex_search(text, std::regex("\ncrashed +failed +- +-"))) << text;
  EXPECT_HAS(text, "infer-int4 (not_supported): not supported by this build: infer axis");
}

TEST(ReportModel, MetricMissingInSomeRowsIsADashWithoutRank) {
  json no_ppl = run(300, 0);
  no_ppl.erase("perplexity");
  const Report r = build({record("quick", "pretrain", "a", {run(100, 50)}),
                          record("quick", "pretrain", "probe", {no_ppl})});
  const auto& g = r.groups[0];
  EXPECT_EQ(g.metrics.front(), "perplexity");  // shown: one row has it
  EXPECT_EQ(g.rows[1].cell("perplexity").rank, 0);
  EXPECT_FALSE(g.rows[1].cell("perplexity").has_value());
  EXPECT_EQ(g.rows[1].cell("tokens_per_second").rank, 1);
  // PCU comes from the runs (not in the summary) and is shown as a percentage.
  EXPECT_DOUBLE_EQ(g.rows[0].cell("pcu").mean, 0.5);
  EXPECT_EQ(metric_column_title(*find_report_metric("pcu")), "PCU (%)");
  const std::string md = render_report_markdown(r);
  EXPECT_HAS(md, "| probe | ok | - |");
  // Metrics no record has are not columns.
  EXPECT_LACKS(md, "AEC");
}

TEST(ReportModel, EmptyInputIsAnError) {
  auto r = build_report(records_of({}), {"empty.jsonl"});
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "empty.jsonl: no result records");
}

// ---- files and errors ---------------------------------------------------------------

TEST(ReportFiles, DirectoriesExpandToTheirJsonlFilesOnce) {
  TempDir d;
  write_text(d.file("b.jsonl"), "");
  write_text(d.file("a.jsonl"), "");
  write_text(d.file("a.csv"), "x\n");
  std::filesystem::create_directories(d.file("cache"));
  auto files = collect_result_files({d.path(), d.file("a.jsonl")});
  ASSERT_TRUE(files.ok()) << files.error().message();
  EXPECT_EQ(files.value(), (std::vector<std::string>{d.file("a.jsonl"), d.file("b.jsonl")}));
}

TEST(ReportFiles, MissingPathAndEmptyDirectoryAreErrors) {
  TempDir d;
  auto missing = collect_result_files({d.file("nope.jsonl")});
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.error().message(), "nope.jsonl: no such file or directory");
  auto empty = collect_result_files({d.path()});
  ASSERT_FALSE(empty.ok());
  EXPECT_HAS(empty.error().message(), "no *.jsonl result files in the directory");
}

TEST(ReportFiles, MixedSchemaVersionsAreRefused) {
  auto r = load_report({kFixtures + "/a.jsonl", kFixtures + "/v1.jsonl"});
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "mixed result-schema versions");
  EXPECT_HAS(r.error().message(), "v1.jsonl has efficientllm.result.v1");
}

TEST(ReportFiles, AV1FileAloneIsUpgradedAndReported) {
  auto r = load_report({kFixtures + "/v1.jsonl"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value().experiment_count(), 1u);
  EXPECT_EQ(r.value().groups[0].rows[0].name, "tiny");
}

TEST(ReportFiles, TheMixedFixture) {
  auto rep = load_report({kFixtures + "/report_mixed.jsonl"});
  ASSERT_TRUE(rep.ok()) << rep.error().message();
  const Report& r = rep.value();
  EXPECT_EQ(r.experiment_count(), 6u);
  ASSERT_EQ(r.groups.size(), 2u);
  const ReportRow* gqa = find_row(r.groups[0], "GQA");
  ASSERT_NE(gqa, nullptr);
  EXPECT_EQ(gqa->repetitions, 2);                   // two records merged
  EXPECT_EQ(gqa->cell("mfu").rank, 1);              // ties MQA (0.64)
  EXPECT_EQ(find_row(r.groups[0], "MQA")->cell("mfu").rank, 1);
  EXPECT_EQ(find_row(r.groups[0], "MHA")->cell("mfu").rank, 3);
  EXPECT_EQ(r.groups[1].rows[0].status, "not_supported");
}

TEST(ReportFormat, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(parse_report_format("md").value(), ReportFormat::markdown);
  EXPECT_EQ(parse_report_format("markdown").value(), ReportFormat::markdown);
  EXPECT_EQ(parse_report_format("text").value(), ReportFormat::text);
  EXPECT_EQ(parse_report_format("html").value(), ReportFormat::html);
  auto bad = parse_report_format("pdf");
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error().message(), "--format: unknown report format 'pdf'");
  EXPECT_HAS(bad.error().hint, "text, md, csv, html or all");
}

// ---- escaping and quoting -------------------------------------------------------------

TEST(ReportEscaping, HtmlEscapesEveryMetaCharacter) {
  EXPECT_EQ(html_escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain µs ±"), "plain µs ±");
}

TEST(ReportEscaping, LabelsAndErrorsFromRecordsCannotInjectHtml) {
  const std::string evil = "<img src=x onerror=alert(1)>";
  const Report r = build({record("s<script>", "pretrain", evil, {run(100, 50)}),
                          record("s<script>", "pretrain", "b\"'", {failed_run("</td><script>alert(2)</script>")})});
  const std::string html = render_report_html(r);
  EXPECT_LACKS(html, "<img");
  EXPECT_LACKS(html, "<script>alert");
  EXPECT_LACKS(html, "s<script>");
  EXPECT_HAS(html, "&lt;img src=x onerror=alert(1)&gt;");
  EXPECT_HAS(html, "data-label=\"b&quot;&#39;\"");
  EXPECT_HAS(html, "&lt;/td&gt;&lt;script&gt;alert(2)");
  // Exactly one script element: ours.
  size_t scripts = 0;
  for (size_t p = html.find("<script"); p != std::string::npos; p = html.find("<script", p + 1)) ++scripts;
  EXPECT_EQ(scripts, 1u);
  // Markdown: no raw tag, pipes escaped.
  const Report r2 = build({record("quick", "pretrain", "a|b <i>", {run(100, 50)})});
  const std::string md = render_report_markdown(r2);
  EXPECT_HAS(md, "| a\\|b &lt;i&gt; |");
}

TEST(ReportCsv, QuotingRfc4180AndFormulaGuard) {
  EXPECT_EQ(csv_field("plain"), "plain");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv_text_field("=SUM(A1)"), "'=SUM(A1)");
  EXPECT_EQ(csv_text_field("-1+2"), "'-1+2");
  EXPECT_EQ(csv_text_field("@x,y"), "\"'@x,y\"");
  EXPECT_EQ(csv_text_field("MHA"), "MHA");
}

// Splits CSV text into records of fields (quotes honoured, CRLF not used).
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1, std::vector<std::string>(1));
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        rows.back().back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        rows.back().back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().emplace_back();
    } else if (c == '\n') {
      rows.emplace_back(1);
    } else {
      rows.back().back() += c;
    }
  }
  if (rows.back().size() == 1 && rows.back()[0].empty()) rows.pop_back();
  return rows;
}

TEST(ReportCsv, LongFormWithAFixedColumnCountAndFullPrecision) {
  const Report r = build({record("quick", "pretrain", "a, \"the\" first", {run(100, 50), run(110, 50)}),
                          record("quick", "pretrain", "b", {failed_run("line one\nline two, with comma")})});
  const auto rows = parse_csv(render_report_csv(r));
  ASSERT_GE(rows.size(), 2u);
  const size_t cols = rows[0].size();
  EXPECT_EQ(rows[0][0], "suite");
  for (const auto& row : rows) EXPECT_EQ(row.size(), cols);
  const auto col = [&](const std::string& name) {
    return static_cast<size_t>(std::find(rows[0].begin(), rows[0].end(), name) - rows[0].begin());
  };
  // a: one line per metric of the group; b: the same metrics, empty.
  const size_t metrics = r.groups[0].metrics.size();
  EXPECT_EQ(rows.size(), 1 + 2 * metrics);
  bool saw_tps = false;
  for (const auto& row : rows) {
    if (row[col("experiment")] == "a, \"the\" first" && row[col("metric")] == "tokens_per_second") {
      saw_tps = true;
      EXPECT_EQ(row[col("mean")], "105");
      EXPECT_EQ(row[col("rank")], "1");
      EXPECT_EQ(row[col("unit")], "tokens/s");
      EXPECT_EQ(row[col("better")], "higher");
      EXPECT_EQ(row[col("n")], "2");
    }
    if (row[col("experiment")] == "b") {
      EXPECT_EQ(row[col("status")], "failed");
      EXPECT_EQ(row[col("mean")], "");
      EXPECT_EQ(row[col("rank")], "");
      EXPECT_EQ(row[col("error")], "line one\nline two, with comma");
    }
  }
  EXPECT_TRUE(saw_tps);
}

// A mixture of experts' row: its active parameters beside the total (CSV,
// HTML) and TT per active parameter ranked with the dense rows'.
TEST(ReportModel, MixtureOfExpertsKeepsTotalAndActiveParameters) {
  json dense = run(100, 50), moe = run(100, 40);
  dense["active_parameters"] = 1000;
  dense["metrics"]["tt_tokens_per_active_param_per_second"] = 100.0 / 1000;
  moe["parameters"] = 3000;
  moe["active_parameters"] = 1200;
  moe["metrics"]["tt_tokens_per_active_param_per_second"] = 100.0 / 1200;
  const Report r = build({record("quick", "pretrain", "Dense", {dense}), record("quick", "pretrain", "MoE", {moe})});
  ASSERT_EQ(r.groups.size(), 1u);
  const ReportRow* d = find_row(r.groups[0], "Dense");
  const ReportRow* m = find_row(r.groups[0], "MoE");
  ASSERT_TRUE(d && m);
  EXPECT_EQ(m->parameters, 3000);
  EXPECT_EQ(m->active_parameters, 1200);
  EXPECT_EQ(d->active_parameters, 1000);
  EXPECT_EQ(d->cell("tt_tokens_per_active_param_per_second").rank, 1);
  EXPECT_EQ(m->cell("tt_tokens_per_active_param_per_second").rank, 2);
  EXPECT_HAS(render_report_csv(r), ",3000,1200,");
  EXPECT_HAS(render_report_text(r), "TT active");
  const std::string html = render_report_html(r);
  EXPECT_HAS(html, "3.0K (1.2K active)");
  EXPECT_LACKS(html, "1.0K (1.0K active)");
}

// ---- charts and the page ---------------------------------------------------------------

TEST(ReportSvg, NiceTicksCoverTheRangeInRoundSteps) {
  EXPECT_EQ(svg::nice_ticks(0, 7.3, 5), (std::vector<double>{0, 2, 4, 6, 8}));
  EXPECT_EQ(svg::nice_ticks(0, 100, 5), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  const auto t = svg::nice_ticks(0.055, 0.085, 5);
  EXPECT_LE(t.front(), 0.055);
  EXPECT_GE(t.back(), 0.085);
  EXPECT_LE(t.size(), 12u);
  // A single value still gets an axis.
  const auto one = svg::nice_ticks(5, 5, 5);
  EXPECT_LT(one.front(), 5);
  EXPECT_GT(one.back(), 5);
  EXPECT_EQ(svg::tick_label(0.5, 0.5), "0.5");
  EXPECT_EQ(svg::tick_label(1500, 500), "1500");
  EXPECT_EQ(svg::tick_label(0.065, 0.005), "0.065");
  EXPECT_EQ(svg::tick_label(0, 0.1), "0");
}

TEST(ReportSvg, BarChartHasABarPerValueAndMarksBestAndMissing) {
  const std::string s = svg::bar_chart("bar-0-x", "PPL <title>", "PPL, lower is better",
                                       {{"a", 10, 8, 12, true, false}, {"b<>", 20, NAN, NAN, false, true},
                                        {"c", NAN, NAN, NAN, false, false}});
  EXPECT_EQ(s.rfind("<svg id=\"bar-0-x\"", 0), 0u);
  EXPECT_HAS(s, "</svg>");
  EXPECT_HAS(s, "class=\"bar-item best\" data-label=\"a\"");
  EXPECT_HAS(s, "class=\"bar-item noisy\" data-label=\"b&lt;&gt;\"");
  EXPECT_HAS(s, "class=\"errbar\"");
  EXPECT_HAS(s, "not measured");
  EXPECT_HAS(s, "PPL &lt;title&gt;");
  size_t rects = 0;
  const std::string rect = "<rect class=\"bar\"";
  for (size_t p = s.find(rect); p != std::string::npos; p = s.find(rect, p + 1)) ++rects;
  EXPECT_EQ(rects, 2u);
}

TEST(ReportSvg, ScatterJoinsTheFrontPoints) {
  const std::string s = svg::scatter_chart("p", "PPL vs AMU", "AMU (GB)", "PPL",
                                           {{"a", 1, 5, true}, {"b", 2, 3, true}, {"c", 3, 4, false}}, {0, 1});
  EXPECT_HAS(s, "<polyline class=\"front-line\"");
  EXPECT_HAS(s, "class=\"point front\" data-label=\"a\"");
  EXPECT_HAS(s, "class=\"point\" data-label=\"c\"");
  EXPECT_HAS(s, ">AMU (GB)</text>");
}

TEST(ReportHtml, SelfContainedWithStableHooksPerGroup) {
  auto rep = load_report({kFixtures + "/report_mixed.jsonl"});
  ASSERT_TRUE(rep.ok()) << rep.error().message();
  const std::string html = render_report_html(rep.value());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_HAS(html, "data-experiments=\"6\" data-groups=\"2\"");
  EXPECT_HAS(html, "<table id=\"ranks-0\" class=\"ranks sortable filterable\">");
  EXPECT_HAS(html, "<table id=\"values-1\" class=\"values sortable filterable\">");
  for (const char* m : {"perplexity", "amu_live_gb", "pcu", "mfu", "al_seconds", "tokens_per_second"}) {
    EXPECT_HAS(html, fmt::format("<figure class=\"chart bar\" id=\"bar-0-{}\"", m));
    EXPECT_HAS(html, fmt::format("<svg id=\"bar-0-{}-svg\"", m));
  }
  // PPL vs AMU: MQA (least memory) and GQA (best PPL) are the front; MHA is beaten by GQA.
  EXPECT_HAS(html, "id=\"pareto-0-amu_live_gb-perplexity\" data-x=\"amu_live_gb\" data-y=\"perplexity\" "
                   "data-front=\"2\"");
  EXPECT_HAS(html, "Pareto front (2 of 3): MQA, GQA.");
  EXPECT_HAS(html, "id=\"pareto-0-al_seconds-perplexity\"");
  EXPECT_LACKS(html, "id=\"pareto-0-aec_avg_power_w");  // no AEC in the fixture
  // Provenance and sources.
  EXPECT_HAS(html, "<dt>build</dt><dd>0123456789ab (GNU-12.2.0 Release)</dd>");
  EXPECT_HAS(html, "<dt>machine</dt><dd>fixture CPU (2 cores); GPU: none</dd>");
  EXPECT_HAS(html, "report_mixed.jsonl</code>");
  // Offline: nothing fetched from anywhere.
  for (const char* ext : {" src=", "href=\"http", "url(", "@import", "<link"}) EXPECT_LACKS(html, ext);
  EXPECT_HAS(html, "data-report-ready");
  EXPECT_HAS(html, "window.onerror");
}

TEST(ReportText, TablesPerGroupWithRanksValuesAndLegend) {
  auto rep = load_report({kFixtures + "/report_mixed.jsonl"});
  ASSERT_TRUE(rep.ok());
  const std::string t = render_report_text(rep.value());
  EXPECT_HAS(t, "6 experiments in 2 groups, from 1 file");
  EXPECT_HAS(t, "== quick / pretrain: 4 experiments ==");
  EXPECT_HAS(t, "lower is better: PPL, AMU, AL; higher is better: PCU, MFU, tok/s");
  EXPECT_HAS(t, "GQA                               ok        1    2    -    1   1      1");
  EXPECT_HAS(t, "1350 +- 1906 (noisy)");
  EXPECT_HAS(t, "== paper-quant / infer: 2 experiments ==");
}

TEST(ReportUtf8, TruncationKeepsWholeCharacters) {
  EXPECT_EQ(truncate_utf8("abcdef", 3), "abc\xE2\x80\xA6");
  EXPECT_EQ(truncate_utf8("abc", 3), "abc");
  EXPECT_EQ(truncate_utf8("\xC2\xB1\xC2\xB1\xC2\xB1", 2), "\xC2\xB1\xC2\xB1\xE2\x80\xA6");
}

}  // namespace
}  // namespace el::bench
