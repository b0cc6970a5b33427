// Result records v2 (bench/results.h, result_stats.h, result_compare.h):
// summary statistics checked against hand-computed values, the append/read
// round trip, torn and malformed lines, schema versions, and compare's
// matching rule and noise verdicts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bench/result_compare.h"
#include "bench/result_stats.h"
#include "bench/results.h"

namespace el::bench {
namespace {

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

// A fresh directory per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("el_results_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
  static inline int counter_ = 0;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}
std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// One repetition's run object with the given throughput and perplexity.
nlohmann::json run(double tok_s, double ppl = 50.0) {
  return {{"status", "ok"},
          {"card", "tiny"},
          {"parameters", 1000},
          {"perplexity", ppl},
          {"metrics", {{"tokens_per_second", tok_s}, {"mfu", 0.1}, {"al_seconds", {{"mean", 1000.0 / tok_s}}}}}};
}

nlohmann::json record(const std::string& label, const std::vector<double>& tok_s, int config_seed = 1) {
  ExperimentInfo info{"quick", label, "pretrain", "20261122-000000",
                      {{"model", label}, {"seed", config_seed}, {"axis", "pretrain"}}, nullptr};
  std::vector<nlohmann::json> runs;
  for (double v : tok_s) runs.push_back(run(v));
  return make_result_record(info, runs, build_info_json(), machine_info_json(metrics::collect_platform_info()));
}

TEST(ResultStats, StudentTTable) {
  EXPECT_NEAR(student_t_975(1), 12.706, 1e-3);
  EXPECT_NEAR(student_t_975(4), 2.776, 1e-3);
  EXPECT_NEAR(student_t_975(10), 2.228, 1e-3);
  EXPECT_NEAR(student_t_975(30), 2.042, 1e-3);
  EXPECT_NEAR(student_t_975(31), 1.960, 1e-3);
  EXPECT_NEAR(student_t_975(1000), 1.960, 1e-3);
  EXPECT_TRUE(std::isnan(student_t_975(0)));
  for (int df = 2; df <= 31; ++df) EXPECT_LT(student_t_975(df), student_t_975(df - 1)) << df;
}

TEST(ResultStats, HandComputedSmallSample) {
  // {1,2,3,4}: mean 2.5, s = sqrt(5/3) = 1.2909944, t(3) = 3.182446,
  // half width = 3.182446 * 1.2909944 / 2 = 2.0542601, CV = 0.5163978.
  const MetricSummary m = summarize_metric({1, 2, 3, 4});
  EXPECT_EQ(m.s.n, 4u);
  EXPECT_DOUBLE_EQ(m.s.mean, 2.5);
  EXPECT_NEAR(m.s.stddev, 1.2909944, 1e-7);
  EXPECT_NEAR(m.ci95_low, 0.4457399, 1e-6);
  EXPECT_NEAR(m.ci95_high, 4.5542601, 1e-6);
  EXPECT_NEAR(m.cv, 0.5163978, 1e-7);
  EXPECT_TRUE(m.noisy);
  EXPECT_TRUE(std::isnan(m.s.p90));  // n < 10: not meaningful
  const nlohmann::json j = to_json(m);
  EXPECT_TRUE(j["p90"].is_null());
  EXPECT_TRUE(j["p99"].is_null());
  EXPECT_EQ(j["values"], nlohmann::json::array({1.0, 2.0, 3.0, 4.0}));
  EXPECT_EQ(j["noisy"], true);
}

TEST(ResultStats, CvFlagAndQuietMetric) {
  // {100, 101, 99}: s = 1, CV = 1% -> not noisy; {90, 100, 110}: CV = 10%.
  const MetricSummary quiet = summarize_metric({100, 101, 99});
  EXPECT_NEAR(quiet.cv, 0.01, 1e-12);
  EXPECT_FALSE(quiet.noisy);
  EXPECT_EQ(to_json(quiet)["noisy"], false);
  const MetricSummary loud = summarize_metric({90, 100, 110});
  EXPECT_NEAR(loud.cv, 0.1, 1e-12);
  EXPECT_TRUE(loud.noisy);
  // {99, 101}: s = 1.4142, CV = 1.4% -> quiet; {95, 105}: CV = 7.1% -> noisy.
  EXPECT_FALSE(summarize_metric({99, 101}).noisy);
  EXPECT_TRUE(summarize_metric({95, 105}).noisy);
}

TEST(ResultStats, SingleValueHasNoInterval) {
  const MetricSummary m = summarize_metric({42, NAN});
  EXPECT_EQ(m.s.n, 1u);
  const nlohmann::json j = to_json(m);
  EXPECT_EQ(j["mean"], 42.0);
  EXPECT_TRUE(j["stddev"].is_null());
  EXPECT_TRUE(j["ci95"].is_null());
  EXPECT_TRUE(j["cv"].is_null());
  EXPECT_TRUE(j["noisy"].is_null());
}

TEST(ResultStats, PercentilesFromTenValues) {
  const MetricSummary m = summarize_metric({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  EXPECT_NEAR(m.s.p90, 9.1, 1e-12);  // position 0.9 * 9 = 8.1
  EXPECT_TRUE(std::isnan(m.s.p99));  // needs 100 values
}

TEST(ResultRecord, BuildsV2WithHashAndSummary) {
  const nlohmann::json r = record("tiny", {100, 110, 90});
  EXPECT_EQ(r["schema"], "efficientllm.result.v2");
  EXPECT_EQ(r["status"], "ok");
  EXPECT_EQ(r["repetitions"], 3);
  EXPECT_EQ(r["label"], "tiny");
  EXPECT_EQ(r["card"], "tiny");
  EXPECT_EQ(r["config_hash"], config_hash(r["config"]));
  EXPECT_EQ(r["config_hash"].get<std::string>().size(), 64u);
  EXPECT_TRUE(r["build"].contains("git_commit"));
  EXPECT_TRUE(r["build"]["flags"].contains("ndebug"));
  EXPECT_TRUE(r["machine"].contains("cpu_model"));
  EXPECT_TRUE(r["machine"].contains("gpu"));
  const auto& s = r["summary"]["tokens_per_second"];
  EXPECT_EQ(s["n"], 3);
  EXPECT_DOUBLE_EQ(s["mean"].get<double>(), 100.0);
  EXPECT_NEAR(s["stddev"].get<double>(), 10.0, 1e-12);
  EXPECT_EQ(s["unit"], "tokens/s");
  EXPECT_EQ(s["noisy"], true);
  EXPECT_EQ(r["summary"]["perplexity"]["n"], 3);
  EXPECT_FALSE(r["summary"].contains("aec_avg_power_w"));  // no run measured it
}

TEST(ResultRecord, ConfigHashIsCanonical) {
  // sha256("{}")
  EXPECT_EQ(config_hash(nlohmann::json::object()),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  nlohmann::json a, b;
  a["z"] = 1;
  a["a"] = "x";
  b["a"] = "x";
  b["z"] = 1;
  EXPECT_EQ(config_hash(a), config_hash(b));
  b["z"] = 2;
  EXPECT_NE(config_hash(a), config_hash(b));
}

TEST(ResultRecord, FailedRunsAreLeftOutOfTheSummary) {
  ExperimentInfo info{"quick", "x", "pretrain", "id", {{"k", 1}}, nullptr};
  nlohmann::json failed = {{"status", "failed"}, {"error", "out of memory"}};
  const nlohmann::json r = make_result_record(info, {run(100), failed}, nullptr, nullptr);
  EXPECT_EQ(r["status"], "partial");
  EXPECT_EQ(r["error"], "out of memory");
  EXPECT_EQ(r["summary"]["tokens_per_second"]["n"], 1);
  const nlohmann::json f = make_result_record(info, {failed}, nullptr, nullptr);
  EXPECT_EQ(f["status"], "failed");
  EXPECT_TRUE(f["summary"].empty());
}

TEST(ResultRecord, MergesRepetitions) {
  auto merged = merge_repetition_records({record("tiny", {100}), record("tiny", {120})});
  ASSERT_TRUE(merged.ok()) << merged.error().message();
  EXPECT_EQ(merged.value()["repetitions"], 2);
  EXPECT_EQ(merged.value()["runs"].size(), 2u);
  EXPECT_DOUBLE_EQ(merged.value()["summary"]["tokens_per_second"]["mean"].get<double>(), 110.0);
  auto bad = merge_repetition_records({record("tiny", {100}), record("tiny", {100}, 2)});
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error().message(), "record 1 has config hash");
  EXPECT_HAS(bad.error().message(), "different experiments");
  EXPECT_FALSE(merge_repetition_records({}).ok());
}

TEST(ResultFiles, AppendAndReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("r.jsonl");
  std::vector<nlohmann::json> recs = {record("a", {1}), record("b", {2, 3}), record("c", {4})};
  for (const auto& r : recs) {
    std::string warning;
    ASSERT_TRUE(append_jsonl_record(path, r, &warning).ok());
    EXPECT_TRUE(warning.empty());
  }
  auto read = read_jsonl_records(path);
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->schema, "efficientllm.result.v2");
  ASSERT_EQ(read->records.size(), 3u);
  EXPECT_EQ(read->records[1], recs[1]);
  EXPECT_EQ(read->sources[2], path + ":3");
  EXPECT_TRUE(read->warnings.empty());
  const std::string text = read_text(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
}

TEST(ResultFiles, TornLastLineIsSkippedWithAWarning) {
  TempDir dir;
  const std::string path = dir.file("torn.jsonl");
  const std::string full = record("a", {1}).dump() + "\n" + record("b", {2}).dump() + "\n";
  const std::string third = record("c", {3}).dump();
  write_text(path, full + third.substr(0, third.size() / 2));  // killed mid-write
  auto read = read_jsonl_records(path);
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->records.size(), 2u);
  ASSERT_EQ(read->warnings.size(), 1u);
  EXPECT_HAS(read->warnings[0], path + ":3");
  EXPECT_HAS(read->warnings[0], "torn last line");

  // The next append cuts the torn tail off instead of gluing onto it.
  std::string warning;
  ASSERT_TRUE(append_jsonl_record(path, record("d", {4}), &warning).ok());
  EXPECT_HAS(warning, "removed a torn last line");
  read = read_jsonl_records(path);
  ASSERT_TRUE(read.ok()) << read.error().message();
  ASSERT_EQ(read->records.size(), 3u);
  EXPECT_EQ(read->records[2]["label"], "d");
  EXPECT_TRUE(read->warnings.empty());
}

TEST(ResultFiles, MalformedMiddleLineIsAnError) {
  TempDir dir;
  const std::string path = dir.file("bad.jsonl");
  write_text(path, record("a", {1}).dump() + "\n{\"schema\": oops}\n" + record("b", {2}).dump() + "\n");
  auto read = read_jsonl_records(path);
  ASSERT_FALSE(read.ok());
  EXPECT_HAS(read.error().message(), path + ":2");
  EXPECT_HAS(read.error().message(), "not a JSON record");
  // A complete line (newline-terminated) that is cut short is malformed too.
  write_text(path, record("a", {1}).dump() + "\n" + "{\"schema\":\n");
  read = read_jsonl_records(path);
  ASSERT_FALSE(read.ok());
  EXPECT_HAS(read.error().message(), path + ":2");
  write_text(path, "[1, 2]\n");
  read = read_jsonl_records(path);
  ASSERT_FALSE(read.ok());
  EXPECT_HAS(read.error().message(), path + ":1");
  EXPECT_HAS(read.error().message(), "no \"schema\"");
  write_text(path, "{\"schema\": \"efficientllm.result.v9\"}\n");
  read = read_jsonl_records(path);
  ASSERT_FALSE(read.ok());
  EXPECT_HAS(read.error().message(), "unknown result schema 'efficientllm.result.v9'");
  EXPECT_FALSE(read_jsonl_records(dir.file("missing.jsonl")).ok());
  EXPECT_HAS(read_jsonl_records(dir.file("missing.jsonl")).error().message(), "missing.jsonl");
}

nlohmann::json v1_record() {
  return {{"schema", "efficientllm.result.v1"}, {"suite", "quick"}, {"run_id", "r"}, {"axis", "pretrain"},
          {"variant", "tiny"}, {"config", {{"model", "tiny"}}}, {"platform", {{"cpu_model", "X"}, {"git_commit", "abc"}}},
          {"status", "ok"}, {"card", "tiny"}, {"perplexity", 40.0}, {"metrics", {{"tokens_per_second", 500.0}}}};
}

TEST(ResultFiles, SchemaVersions) {
  TempDir dir;
  const std::string v1 = dir.file("old.jsonl"), v2 = dir.file("new.jsonl"), mixed = dir.file("mixed.jsonl");
  write_text(v1, v1_record().dump() + "\n");
  write_text(v2, record("tiny", {1}).dump() + "\n");
  write_text(mixed, record("tiny", {1}).dump() + "\n" + v1_record().dump() + "\n");
  // v1 alone is read and upgraded.
  auto old = read_jsonl_records(v1);
  ASSERT_TRUE(old.ok()) << old.error().message();
  EXPECT_EQ(old->schema, "efficientllm.result.v1");
  const auto& up = old->records[0];
  EXPECT_EQ(up["schema"], "efficientllm.result.v2");
  EXPECT_EQ(up["upgraded_from"], "efficientllm.result.v1");
  EXPECT_EQ(up["label"], "tiny");
  EXPECT_EQ(up["build"]["git_commit"], "abc");
  EXPECT_EQ(up["machine"]["cpu_model"], "X");
  EXPECT_DOUBLE_EQ(up["summary"]["tokens_per_second"]["mean"].get<double>(), 500.0);
  // Mixed in one file, or across files: an error naming both versions.
  auto m = read_jsonl_records(mixed);
  ASSERT_FALSE(m.ok());
  EXPECT_HAS(m.error().message(), mixed + ":2");
  EXPECT_HAS(m.error().message(), "efficientllm.result.v1");
  EXPECT_HAS(m.error().message(), "efficientllm.result.v2");
  auto across = read_jsonl_records(std::vector<std::string>{v2, v1});
  ASSERT_FALSE(across.ok());
  EXPECT_HAS(across.error().message(), "mixed result-schema versions");
  EXPECT_HAS(across.error().message(), v1 + " has efficientllm.result.v1");
  EXPECT_HAS(across.error().message(), v2 + " has efficientllm.result.v2");
  auto same = read_jsonl_records(std::vector<std::string>{v2, v2});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->file_index, (std::vector<size_t>{0, 1}));
}

TEST(ResultFiles, CsvReadsV2Records) {
  TempDir dir;
  const std::string path = dir.file("r.csv");
  ASSERT_TRUE(write_csv(path, {record("tiny", {100, 110, 90})}).ok());
  std::istringstream in(read_text(path));
  std::string header, row;
  std::getline(in, header);
  std::getline(in, row);
  EXPECT_HAS(header, "tokens_per_second");
  EXPECT_HAS(header, "parameters,active_parameters,perplexity");
  EXPECT_HAS(row, "20261122-000000,quick,tiny,tiny,ok,1000,,50.0,");  // no active_parameters recorded
  EXPECT_HAS(row, ",100.0,");
}

TEST(Compare, NoiseVerdicts) {
  const nlohmann::json a = to_json(summarize_metric({100, 101, 99}));
  const nlohmann::json b_far = to_json(summarize_metric({120, 121, 119}));
  const nlohmann::json b_near = to_json(summarize_metric({100.5, 101.5, 99.5}));
  const nlohmann::json one = to_json(summarize_metric({130}));
  MetricComparison c = compare_metric("tokens_per_second", a, b_far);
  EXPECT_NEAR(c.ratio, 1.2, 1e-12);
  EXPECT_TRUE(c.beyond_noise);
  EXPECT_EQ(c.verdict, "beyond noise");
  c = compare_metric("tokens_per_second", a, b_near);
  EXPECT_FALSE(c.beyond_noise);
  EXPECT_EQ(c.verdict, "within noise");
  c = compare_metric("tokens_per_second", a, one);
  EXPECT_EQ(c.verdict, "n=1, noise unknown");
  EXPECT_FALSE(c.beyond_noise);
}

TEST(Compare, MatchesByHashThenBySuiteAndLabel) {
  // a/b same config; c's config changed between the builds (matched by label);
  // d only in A, e only in B.
  std::vector<nlohmann::json> A = {record("a", {100, 101, 99}), record("c", {50}, 1), record("d", {1})};
  std::vector<nlohmann::json> B = {record("c", {60}, 2), record("a", {120, 121, 119}), record("e", {1})};
  auto cmp = compare_results(A, B, "A.jsonl", "B.jsonl");
  ASSERT_TRUE(cmp.ok()) << cmp.error().message();
  ASSERT_EQ(cmp->experiments.size(), 2u);
  EXPECT_EQ(cmp->experiments[0].name, "quick/a");
  EXPECT_EQ(cmp->experiments[0].matched_by, "config_hash");
  EXPECT_EQ(cmp->experiments[0].metrics[0].metric, "tokens_per_second");
  EXPECT_EQ(cmp->experiments[0].metrics[0].verdict, "beyond noise");
  EXPECT_EQ(cmp->experiments[1].name, "quick/c");
  EXPECT_EQ(cmp->experiments[1].matched_by, "suite+label");
  EXPECT_EQ(cmp->experiments[1].metrics[0].verdict, "n=1, noise unknown");
  EXPECT_EQ(cmp->only_a, (std::vector<std::string>{"quick/d"}));
  EXPECT_EQ(cmp->only_b, (std::vector<std::string>{"quick/e"}));

  const std::string md = render_comparison(cmp.value(), CompareFormat::markdown);
  EXPECT_HAS(md, "| experiment | matched by | metric |");
  EXPECT_HAS(md, "| quick/a | config_hash | tokens_per_second | tokens/s | 100 | 120 | 1.200 |");
  const std::string csv = render_comparison(cmp.value(), CompareFormat::csv);
  EXPECT_HAS(csv, "experiment,matched_by,metric,unit,a_mean,b_mean,ratio_b_over_a,n_a,n_b,verdict\n");
  EXPECT_HAS(csv, "quick/a,config_hash,tokens_per_second,tokens/s,100,120,1.2,3,3,beyond noise\n");
  EXPECT_HAS(render_comparison(cmp.value(), CompareFormat::text), "beyond noise");
}

TEST(Compare, RepeatedRecordsOfOneHashAreMerged) {
  auto cmp = compare_results({record("a", {100}), record("a", {101}), record("a", {99})}, {record("a", {100})},
                             "A", "B");
  ASSERT_TRUE(cmp.ok()) << cmp.error().message();
  EXPECT_EQ(cmp->experiments[0].metrics[0].n_a, 3u);
}

TEST(Compare, NoCommonExperimentIsAnError) {
  auto cmp = compare_results({record("a", {1})}, {record("b", {1})}, "A.jsonl", "B.jsonl");
  ASSERT_FALSE(cmp.ok());
  EXPECT_HAS(cmp.error().message(), "no common experiments");
  EXPECT_HAS(cmp.error().message(), "A.jsonl");
  EXPECT_HAS(cmp.error().message(), "B.jsonl");
}

}  // namespace
}  // namespace el::bench
