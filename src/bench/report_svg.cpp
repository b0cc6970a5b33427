// report_svg.cpp — the inline SVG charts of the HTML report (bench/report_svg.h).
#include "bench/report_svg.h"

#include <algorithm>

#include <fmt/format.h>

#include "bench/report.h"

namespace el::bench::svg {
namespace {

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// Coordinates with one decimal: enough for a screen, and stable text.
std::string px(double v) { return fmt::format("{:.1f}", v); }

struct Scale {
  double d0, d1, r0, r1;  // domain [d0, d1] → range [r0, r1]
  double operator()(double v) const { return d1 == d0 ? r0 : r0 + (v - d0) / (d1 - d0) * (r1 - r0); }
};

// A padded data range [lo, hi] with a non-zero width.
void widen(double& lo, double& hi) {
  if (hi > lo) return;
  const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
  lo -= pad;
  hi += pad;
}

std::string svg_open(const std::string& id, const char* cls, double w, double h, const std::string& title) {
  return fmt::format(
      "<svg id=\"{}\" class=\"chart-svg {}\" viewBox=\"0 0 {} {}\" "
      "width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"{}\"><title>{}</title>"
      "<text class=\"chart-title\" x=\"{}\" y=\"18\" text-anchor=\"middle\">{}</text>",
      html_escape(id), cls, px(w), px(h), px(w), px(h), html_escape(title), html_escape(title), px(w / 2),
      html_escape(title));
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  widen(lo, hi);
  target = std::max(target, 1);
  const double rough = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(rough)));
  const double norm = rough / mag;
  // d3's thresholds: the step whose interval count is closest to `target` (in log scale).
  const double step = (norm >= 7.0710678 ? 10 : norm >= 3.1622777 ? 5 : norm >= 1.4142136 ? 2 : 1) * mag;
  const double start = std::floor(lo / step + 1e-9) * step;
  std::vector<double> ticks;
  for (int i = 0; i < 100; ++i) {
    double t = start + i * step;
    if (std::fabs(t) < step * 1e-9) t = 0;  // no "-0" or 1e-17
    ticks.push_back(t);
    if (t >= hi - step * 1e-9) break;
  }
  return ticks;
}

std::string tick_label(double v, double step) {
  if (v == 0) return "0";
  const double a = std::max(std::fabs(v), std::fabs(step));
  if (a >= 1e6 || std::fabs(step) < 1e-4) return fmt::format("{:.3g}", v);
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(std::fabs(step)) - 1e-9)));
  return fmt::format("{:.{}f}", v, decimals);
}

std::string bar_chart(const std::string& id, const std::string& title, const std::string& axis_title,
                      const std::vector<Bar>& bars) {
  constexpr double kWidth = 560, kRightPad = 96, kTop = 32, kRowH = 24, kBottom = 44, kCharW = 7.2;
  constexpr size_t kMaxLabelChars = 28;
  // The label column fits the longest (truncated) label: <= 7.2 px a character at 12 px.
  size_t longest = 4;
  for (const auto& b : bars) longest = std::max(longest, std::min(utf8_length(b.label), kMaxLabelChars + 1));
  const double label_w = std::min(250.0, 14 + kCharW * static_cast<double>(longest));
  const double height = kTop + kRowH * static_cast<double>(std::max<size_t>(bars.size(), 1)) + kBottom;
  // The axis covers 0, the values and the upper CI ends; a lower CI end below
  // the axis (n = 2 gives wide intervals) is clipped rather than stretching
  // the axis into negative values a positive metric cannot take.
  double lo = 0, hi = 0;
  for (const auto& b : bars) {
    if (std::isfinite(b.value)) {
      lo = std::min(lo, b.value);
      hi = std::max(hi, b.value);
    }
    if (std::isfinite(b.hi)) hi = std::max(hi, b.hi);
  }
  const std::vector<double> ticks = nice_ticks(lo, hi, 5);
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  const Scale x{ticks.front(), ticks.back(), label_w, kWidth - kRightPad};
  const double axis_y = kTop + kRowH * static_cast<double>(std::max<size_t>(bars.size(), 1));
  std::string s = svg_open(id, "bar-chart", kWidth, height, title);
  // grid + ticks
  s += "<g class=\"axis x-axis\">";
  for (double t : ticks) {
    s += fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/>", px(x(t)), px(kTop - 4),
                     px(axis_y));
    s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(x(t)),
                     px(axis_y + 14), html_escape(tick_label(t, step)));
  }
  s += fmt::format("<line class=\"axis-line\" x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>", px(label_w),
                   px(kWidth - kRightPad), px(axis_y));
  s += fmt::format("<text class=\"axis-title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                   px((label_w + kWidth - kRightPad) / 2), px(axis_y + 34), html_escape(axis_title));
  // bars
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double y = kTop + kRowH * static_cast<double>(i);
    const std::string value_text = format_metric_value(b.value);
    s += fmt::format("<g class=\"bar-item{}{}\" data-label=\"{}\" data-value=\"{}\"><title>{}: {}</title>",
                     b.best ? " best" : "", b.noisy ? " noisy" : "", html_escape(b.label),
                     std::isfinite(b.value) ? fmt::format("{}", b.value) : "", html_escape(b.label),
                     html_escape(value_text));
    s += fmt::format("<text class=\"bar-label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", px(label_w - 6),
                     px(y + kRowH * 0.65), html_escape(truncate_utf8(b.label, kMaxLabelChars)));
    if (std::isfinite(b.value)) {
      const double x0 = std::min(x(0), x(b.value)), x1 = std::max(x(0), x(b.value));
      s += fmt::format("<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>", px(x0),
                       px(y + 4), px(std::max(x1 - x0, 0.5)), px(kRowH - 8));
      double text_x = x1;
      if (std::isfinite(b.lo) && std::isfinite(b.hi)) {
        const double cy = y + kRowH / 2;
        const double elo = std::max(b.lo, ticks.front()), ehi = std::min(b.hi, ticks.back());
        s += fmt::format("<path class=\"errbar\" d=\"M{0} {2}H{1}M{1} {3}V{4}{5}\"/>", px(x(elo)), px(x(ehi)),
                         px(cy), px(cy - 5), px(cy + 5),
                         elo == b.lo ? fmt::format("M{} {}V{}", px(x(elo)), px(cy - 5), px(cy + 5)) : "");
        text_x = std::max(text_x, x(b.hi));
      }
      s += fmt::format("<text class=\"bar-value\" x=\"{}\" y=\"{}\">{}{}</text>", px(text_x + 5),
                       px(y + kRowH * 0.65), html_escape(value_text), b.noisy ? " (noisy)" : "");
    } else {
      s += fmt::format("<text class=\"bar-missing\" x=\"{}\" y=\"{}\">not measured</text>", px(label_w + 4),
                       px(y + kRowH * 0.65));
    }
    s += "</g>";
  }
  return s + "</svg>";
}

std::string scatter_chart(const std::string& id, const std::string& title, const std::string& x_title,
                          const std::string& y_title, const std::vector<Point>& points,
                          const std::vector<size_t>& front_order) {
  constexpr double kWidth = 560, kHeight = 400, kLeft = 78, kRight = 24, kTop = 34, kBottom = 56;
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (const auto& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    xlo = std::min(xlo, p.x);
    xhi = std::max(xhi, p.x);
    ylo = std::min(ylo, p.y);
    yhi = std::max(yhi, p.y);
  }
  if (!std::isfinite(xlo)) xlo = xhi = ylo = yhi = 0;
  widen(xlo, xhi);
  widen(ylo, yhi);
  // 6% margin so no point sits on an axis
  const double xpad = (xhi - xlo) * 0.06, ypad = (yhi - ylo) * 0.06;
  const std::vector<double> xt = nice_ticks(xlo - xpad, xhi + xpad, 5);
  const std::vector<double> yt = nice_ticks(ylo - ypad, yhi + ypad, 5);
  const Scale x{xt.front(), xt.back(), kLeft, kWidth - kRight};
  const Scale y{yt.front(), yt.back(), kHeight - kBottom, kTop};
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  std::string s = svg_open(id, "scatter-chart", kWidth, kHeight, title);
  s += "<g class=\"axis x-axis\">";
  for (double t : xt) {
    s += fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/>", px(x(t)), px(kTop),
                     px(kHeight - kBottom));
    s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(x(t)),
                     px(kHeight - kBottom + 15), html_escape(tick_label(t, xstep)));
  }
  s += fmt::format("<text class=\"axis-title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                   px((kLeft + kWidth - kRight) / 2), px(kHeight - 14), html_escape(x_title));
  s += "<g class=\"axis y-axis\">";
  for (double t : yt) {
    s += fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>", px(kLeft),
                     px(kWidth - kRight), px(y(t)));
    s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", px(kLeft - 6),
                     px(y(t) + 4), html_escape(tick_label(t, ystep)));
  }
  s += fmt::format(
      "<text class=\"axis-title\" transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text></g>",
      px((kTop + kHeight - kBottom) / 2), html_escape(y_title));
  s += fmt::format("<rect class=\"plot-frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>", px(kLeft), px(kTop),
                   px(kWidth - kLeft - kRight), px(kHeight - kTop - kBottom));
  if (front_order.size() > 1) {
    std::string pts;
    for (size_t i : front_order) {
      if (i >= points.size()) continue;
      pts += fmt::format("{}{},{}", pts.empty() ? "" : " ", px(x(points[i].x)), px(y(points[i].y)));
    }
    s += fmt::format("<polyline class=\"front-line\" points=\"{}\"/>", pts);
  }
  for (const auto& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    const double cx = x(p.x), cy = y(p.y);
    const bool right_half = cx > (kLeft + kWidth - kRight) / 2;
    s += fmt::format(
        "<g class=\"point{}\" data-label=\"{}\"><title>{}: ({}, {}){}</title>"
        "<circle cx=\"{}\" cy=\"{}\" r=\"{}\"/><text class=\"point-label\" x=\"{}\" y=\"{}\" text-anchor=\"{}\">{}"
        "</text></g>",
        p.front ? " front" : "", html_escape(p.label), html_escape(p.label), html_escape(format_metric_value(p.x)),
        html_escape(format_metric_value(p.y)), p.front ? " — on the Pareto front" : "", px(cx), px(cy),
        p.front ? 5.5 : 4, px(right_half ? cx - 8 : cx + 8), px(cy - 7), right_half ? "end" : "start",
        html_escape(truncate_utf8(p.label, 24)));
  }
  return s + "</svg>";
}

}  // namespace el::bench::svg
