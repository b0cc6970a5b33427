#include "metrics/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

namespace el::metrics {

double quantile_sorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::numeric_limits<double>::quiet_NaN();
  p = std::clamp(p, 0.0, 1.0);
  const double pos = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

Summary summarize(std::vector<double> values) {
  // NaN breaks std::sort's strict weak ordering, so drop it first.
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }),
               values.end());
  Summary s;  // every statistic starts as NaN
  s.n = values.size();
  if (values.empty()) return s;

  std::sort(values.begin(), values.end());
  double sum = 0.0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(s.n);
  if (s.n >= 2) {
    // Two-pass: sum of squared deviations from the mean, stable for step
    // times that are large and nearly equal.
    double ss = 0.0;
    for (double v : values) ss += (v - s.mean) * (v - s.mean);
    s.stddev = std::sqrt(ss / static_cast<double>(s.n - 1));
  }
  s.min = values.front();
  s.max = values.back();
  s.median = quantile_sorted(values, 0.5);
  s.p90 = quantile_sorted(values, 0.9);
  s.p99 = quantile_sorted(values, 0.99);
  return s;
}

nlohmann::json json_number_or_null(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}

nlohmann::json to_json(const Summary& s) {
  return nlohmann::json{{"n", s.n},
                        {"mean", json_number_or_null(s.mean)},
                        {"median", json_number_or_null(s.median)},
                        {"stddev", json_number_or_null(s.stddev)},
                        {"min", json_number_or_null(s.min)},
                        {"max", json_number_or_null(s.max)},
                        {"p90", json_number_or_null(s.p90)},
                        {"p99", json_number_or_null(s.p99)}};
}

}  // namespace el::metrics
