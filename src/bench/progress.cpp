#include "bench/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace el::bench {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool known(double v) { return std::isfinite(v) && v > 0; }

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

std::string format_duration(double s) {
  if (std::isnan(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(s));
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, static_cast<int>(t % 60));
  if (t < 86400) return fmt::format("{}h{:02d}m", t / 3600, static_cast<int>(t % 3600 / 60));
  return fmt::format("{}d{:02d}h", t / 86400, static_cast<int>(t % 86400 / 3600));
}

EtaModel::EtaModel(std::vector<double> estimates) : est_(std::move(estimates)), wall_(est_.size(), kNaN) {}

void EtaModel::finish(size_t i, double wall_s) {
  if (i < wall_.size()) wall_[i] = std::max(0.0, wall_s);
}

double EtaModel::speed_factor() const {
  double measured = 0, estimated = 0;
  for (size_t i = 0; i < est_.size(); ++i) {
    if (std::isnan(wall_[i]) || !known(est_[i])) continue;
    measured += wall_[i];
    estimated += est_[i];
  }
  return estimated > 0 ? measured / estimated : 1.0;
}

double EtaModel::expected(size_t i) const {
  if (known(est_[i])) return est_[i] * speed_factor();
  // No estimate: the mean wall time of the finished experiments, if any.
  double sum = 0;
  int n = 0;
  for (double w : wall_) {
    if (std::isnan(w)) continue;
    sum += w;
    ++n;
  }
  return n > 0 ? sum / n : kNaN;
}

double EtaModel::remaining(size_t current, double elapsed_s, double fraction) const {
  if (current >= est_.size()) return 0;
  double left;
  // The running experiment's own speed, once a little of it is done (the
  // first percent is mostly start-up and says little).
  if (fraction >= 0.01 && elapsed_s > 0) {
    left = elapsed_s * (1.0 - std::min(fraction, 1.0)) / std::min(fraction, 1.0);
  } else {
    const double e = expected(current);
    if (std::isnan(e)) return kNaN;
    left = std::max(0.0, e - elapsed_s);
  }
  for (size_t i = current + 1; i < est_.size(); ++i) {
    const double e = expected(i);
    if (std::isnan(e)) return kNaN;
    left += e;
  }
  return left;
}

std::string format_progress_line(const ProgressView& v, int bar_width) {
  std::string out = fmt::format("[{}/{}]", v.index, v.total);
  if (bar_width > 0) {
    const bool has_eta = !std::isnan(v.eta_s) && v.eta_s >= 0;
    const double total = v.elapsed_s + (has_eta ? v.eta_s : 0);
    const double frac = has_eta && total > 0 ? std::clamp(v.elapsed_s / total, 0.0, 1.0) : 0.0;
    const int filled = static_cast<int>(std::floor(frac * bar_width));
    out += " [" + std::string(static_cast<size_t>(filled), '#') +
           std::string(static_cast<size_t>(bar_width - filled), '.') + "]";
    out += has_eta ? fmt::format(" {:3d}%", static_cast<int>(std::floor(frac * 100))) : "    ";
  }
  out += " " + v.label;
  if (!v.detail.empty()) out += " " + v.detail;
  out += fmt::format("  elapsed {}  eta {}", format_duration(v.elapsed_s), format_duration(v.eta_s));
  return out;
}

SuiteProgress::SuiteProgress(std::FILE* out, size_t total, EtaModel eta)
    : out_(out),
      tty_(out != nullptr && isatty(fileno(out)) != 0),
      total_(total),
      eta_(std::move(eta)),
      t0_(std::chrono::steady_clock::now()),
      row_t0_(t0_),
      last_draw_(t0_) {}

double SuiteProgress::elapsed() const { return seconds_between(t0_, std::chrono::steady_clock::now()); }

void SuiteProgress::line(const std::string& text) {
  if (!out_) return;
  if (tty_ && drawn_) std::fputs("\r\033[K", out_);
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
  drawn_ = false;
}

void SuiteProgress::begin(size_t index, const std::string& label, size_t eta_slot) {
  index_ = index;
  slot_ = eta_slot;
  label_ = label;
  detail_.clear();
  fraction_ = -1;
  last_quarter_ = 0;
  row_t0_ = std::chrono::steady_clock::now();
  if (!out_) return;
  if (tty_) {
    draw(true);
  } else {
    ProgressView v{index_ + 1, total_, label_, "started", elapsed(), eta_.remaining(slot_, 0, -1)};
    line(format_progress_line(v, 0));
  }
}

void SuiteProgress::update(double fraction, const std::string& detail) {
  fraction_ = fraction;
  detail_ = detail;
  if (!out_) return;
  if (tty_) {
    draw(false);
    return;
  }
  const int quarter = fraction >= 0 ? static_cast<int>(std::floor(std::min(fraction, 1.0) * 4)) : 0;
  if (quarter > last_quarter_ && quarter < 4) {
    last_quarter_ = quarter;
    const double row_elapsed = seconds_between(row_t0_, std::chrono::steady_clock::now());
    const std::string what = fmt::format("{}%", quarter * 25) + (detail_.empty() ? "" : " " + detail_);
    ProgressView v{index_ + 1, total_, label_, what, elapsed(), eta_.remaining(slot_, row_elapsed, fraction_)};
    line(format_progress_line(v, 0));
  }
}

void SuiteProgress::end(const std::string& outcome) {
  const double row_elapsed = seconds_between(row_t0_, std::chrono::steady_clock::now());
  eta_.finish(slot_, row_elapsed);
  ProgressView v{index_ + 1, total_, label_ + ":", fmt::format("{} in {}", outcome, format_duration(row_elapsed)),
                 elapsed(), eta_.remaining(slot_ + 1, 0, -1)};
  line(format_progress_line(v, 0));
}

void SuiteProgress::draw(bool force) {
  const auto now = std::chrono::steady_clock::now();
  if (!force && seconds_between(last_draw_, now) < 0.2) return;
  last_draw_ = now;
  const double row_elapsed = seconds_between(row_t0_, now);
  ProgressView v{index_ + 1, total_, label_, detail_, elapsed(), eta_.remaining(slot_, row_elapsed, fraction_)};
  std::fprintf(out_, "\r\033[K%s", format_progress_line(v, 24).c_str());
  std::fflush(out_);
  drawn_ = true;
}

}  // namespace el::bench
