// result_stats.h — statistics over the repetitions of one experiment.
//
// A result record (docs/RESULTS.md) carries, per headline metric, a summary of
// the per-repetition values: n, mean, median, stddev, min, max, p90/p99 (only
// when n is large enough for them to mean something), a 95% confidence
// interval of the mean (Student t, so 3 repetitions get an honest, wide
// interval rather than a normal one), the coefficient of variation and a
// `noisy` flag when CV > 5% (MLPerf quotes ±5% run-to-run variance for LLM
// workloads: beyond that a single number should not be trusted).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/stats.h"

namespace el::bench {

// CV above this marks a metric `noisy`.
inline constexpr double kNoisyCv = 0.05;
// p90 is reported from this many values on, p99 from kMinNForP99 on (below,
// they are just the max).
inline constexpr size_t kMinNForP90 = 10;
inline constexpr size_t kMinNForP99 = 100;

// Two-sided 95% Student t quantile t_{0.975, df}: a table for df 1..30, the
// normal 1.959964 beyond (the t value at df 30 is within 4.2% of it). df < 1
// → NaN (no interval from one value).
double student_t_975(int df);

struct MetricSummary {
  metrics::Summary s;            // n, mean, median, stddev (n-1), min, max, p90, p99
  double ci95_low = metrics::Summary::kNaN;   // mean ± t·stddev/√n; NaN when n < 2
  double ci95_high = metrics::Summary::kNaN;
  double cv = metrics::Summary::kNaN;         // stddev / |mean|; NaN when n < 2 or mean = 0
  bool noisy = false;                         // cv > kNoisyCv (false when cv is NaN)
  std::vector<double> values;                 // the per-repetition values, in run order
};

// Summarises one metric's per-repetition values (NaN values are dropped:
// a repetition that did not measure the metric). p90/p99 are NaN below
// kMinNForP90/kMinNForP99 values.
MetricSummary summarize_metric(const std::vector<double>& values);

// {"n","mean","median","stddev","min","max","p90","p99","ci95":[lo,hi],
//  "cv","noisy","values":[...]}; NaN → null, noisy null when cv is unknown.
nlohmann::json to_json(const MetricSummary& m);

// The headline metrics summarised in every record: name, where the value sits
// in one repetition's run object (JSON pointer), unit, and whether larger is
// better (for readers; compare prints B/A either way).
struct HeadlineMetric {
  const char* name;
  const char* pointer;
  const char* unit;
  bool higher_is_better;
};
const std::vector<HeadlineMetric>& headline_metrics();

// The "summary" block: for each headline metric present (a number) in at least
// one of `runs` whose "status" is "ok", its MetricSummary as JSON.
nlohmann::json summarize_runs(const std::vector<nlohmann::json>& runs);

}  // namespace el::bench
