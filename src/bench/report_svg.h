// report_svg.h — inline SVG charts for the HTML report (bench/report.h).
//
// Hand-written SVG rather than a JavaScript charting library: the page must
// open offline as one file, and a static SVG needs no script to be readable
// (the report's inline script only sorts and filters tables). Every string a
// caller passes (labels from user YAML, titles) is escaped here; `id`s must be
// made by the caller from indices, not from labels.
#pragma once

#include <cmath>
#include <string>
#include <vector>

namespace el::bench::svg {

// Evenly spaced "nice" tick values (steps of 1, 2 or 5 × 10^k) whose first is
// <= lo and last >= hi, about `target` intervals. hi <= lo is widened around lo.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
// A tick's text: as many decimals as the step needs ("0.5", "1200", "2e-05").
std::string tick_label(double v, double step);

struct Bar {
  std::string label;
  double value = NAN;            // NaN: drawn as "not measured", no bar
  double lo = NAN, hi = NAN;     // 95% CI, drawn as an error bar when both are finite
  bool best = false;             // rank 1: highlighted
  bool noisy = false;            // CV > 5%: marked
};

// A horizontal bar chart, one bar per item (in the given order), the value
// axis starting at 0 with ticks and `axis_title` (e.g. "AMU (GB) — lower is
// better"). Returns "<svg id=... class="chart-svg bar-chart" ...>...</svg>".
std::string bar_chart(const std::string& id, const std::string& title, const std::string& axis_title,
                      const std::vector<Bar>& bars);

struct Point {
  std::string label;
  double x = NAN, y = NAN;  // points with a NaN coordinate are skipped
  bool front = false;       // on the Pareto front: highlighted
};

// A scatter plot with ticks and axis titles on both axes; the points listed in
// `front_order` (indices into `points`, already sorted along x) are joined by
// a line: the Pareto front.
std::string scatter_chart(const std::string& id, const std::string& title, const std::string& x_title,
                          const std::string& y_title, const std::vector<Point>& points,
                          const std::vector<size_t>& front_order);

}  // namespace el::bench::svg
