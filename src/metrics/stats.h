// stats.h — summary statistics of repeated measurements (step times, latencies).
//
// summarize() is what every reported distribution goes through, so that AL,
// per-request latency and kernel timings all use one definition:
//   mean, median, sample standard deviation (divides by n-1), min, max and the
//   90th / 99th percentiles with linear interpolation between order statistics
//   (numpy's default "linear" method: position p*(n-1) in the sorted values).
// Values that do not exist (everything for n = 0, stddev for n = 1) are NaN in
// the struct and JSON null in to_json(), never 0, so a reader cannot mistake
// "not measured" for "measured zero".
#pragma once

#include <cstddef>
#include <limits>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace el::metrics {

struct Summary {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  size_t n = 0;          // number of values summarised (NaN inputs are not counted)
  double mean = kNaN;    // arithmetic mean
  double median = kNaN;  // = percentile 50
  double stddev = kNaN;  // sample standard deviation (n-1); NaN when n < 2
  double min = kNaN;
  double max = kNaN;
  double p90 = kNaN;     // linear interpolation, see file comment
  double p99 = kNaN;
};

// Summarises `values` (taken by value: it is sorted in place). NaN entries are
// dropped before anything is computed; n counts the rest. Empty → n = 0 and
// every statistic NaN.
Summary summarize(std::vector<double> values);

// The p-th quantile (p in [0, 1]) of already SORTED finite values by linear
// interpolation; NaN for an empty vector. p outside [0, 1] is clamped.
double quantile_sorted(const std::vector<double>& sorted, double p);

// {"n", "mean", "median", "stddev", "min", "max", "p90", "p99"}; NaN → null.
nlohmann::json to_json(const Summary& s);

// A double as JSON: the number, or null when it is NaN/inf.
nlohmann::json json_number_or_null(double v);

}  // namespace el::metrics
