// result_compare.h — the same experiments from two result files, side by side.
//
// Behind `efficientllm compare A.jsonl B.jsonl` (regression checks between
// builds or machines). Matching rule (docs/RESULTS.md, "Comparing"):
//   1. records with the same config_hash are the same experiment (several
//      records with one hash in a file are repetitions: merged first);
//   2. the records left over are matched by suite + label when that pair is
//      unique on both sides (the config changed between the builds, e.g. a
//      new default or another data path); such rows say "suite+label".
// Per metric: mean A, mean B, ratio B/A and a noise verdict: with at least two
// repetitions on each side, "beyond noise" when the two 95% confidence
// intervals of the mean do not overlap, else "within noise"; otherwise
// "n=1, noise unknown".
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/results.h"
#include "core/error.h"

namespace el::bench {

struct MetricComparison {
  std::string metric;  // headline metric name, e.g. "tokens_per_second"
  std::string unit;
  double a = 0, b = 0;  // means over repetitions
  double ratio = 0;     // b / a (NaN when a is 0)
  size_t n_a = 0, n_b = 0;
  bool beyond_noise = false;
  std::string verdict;  // "beyond noise", "within noise", "n=1, noise unknown"
};

struct ExperimentComparison {
  std::string name;        // "suite/label"
  std::string matched_by;  // "config_hash" or "suite+label"
  std::vector<MetricComparison> metrics;
};

struct Comparison {
  std::vector<ExperimentComparison> experiments;
  std::vector<std::string> only_a, only_b;  // "suite/label" of unmatched records
};

// The metrics compare shows, in order (the paper's: tokens/s, AL, MFU, AMU,
// AEC, PPL), where both records have them.
const std::vector<std::string>& compared_metrics();

// The verdict for two metric summaries (JSON, as in a record's "summary").
MetricComparison compare_metric(const std::string& name, const nlohmann::json& a, const nlohmann::json& b);

// Matches the experiments of `a` and `b` (v2 records). An Error when they
// have no experiment in common (naming `name_a` and `name_b`).
Result<Comparison> compare_results(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b,
                                   const std::string& name_a, const std::string& name_b);

enum class CompareFormat { text, markdown, csv };
std::string render_comparison(const Comparison& c, CompareFormat format);

}  // namespace el::bench
