#include "bench/table.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace el::bench {
namespace {
bool looks_numeric(const std::string& s) {
  if (s.empty()) return false;
  const char c = s[0];
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.';
}
}  // namespace

std::string TextTable::render() const {
  std::vector<size_t> width(header_.size(), 0);
  for (size_t i = 0; i < header_.size(); ++i) width[i] = header_[i].size();
  for (const auto& r : rows_) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& r, bool header) {
    std::string s;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < r.size() ? r[i] : "";
      const bool right = !header && i > 0 && looks_numeric(cell);
      s += i ? "  " : "";
      s += right ? fmt::format("{:>{}}", cell, width[i]) : fmt::format("{:<{}}", cell, width[i]);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(header_, true);
  size_t total = 0;
  for (size_t w : width) total += w;
  out += std::string(total + 2 * (width.size() - 1), '-') + "\n";
  for (const auto& r : rows_) out += line(r, false);
  return out;
}

ProgressBar::ProgressBar(std::FILE* out) : out_(out), tty_(isatty(fileno(out)) != 0) {}

void ProgressBar::update(const std::string& label, int64_t done, int64_t total,
                         const std::string& detail, double eta_seconds) {
  const int64_t pct = total > 0 ? done * 100 / total : 0;
  const std::string eta = eta_seconds >= 0 ? " eta " + format_seconds(eta_seconds) : "";
  if (tty_) {
    constexpr int kWidth = 24;
    const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar += std::string(static_cast<size_t>(kWidth - filled), '.');
    std::fprintf(out_, "\r\033[K%s [%s] %3lld%% %s%s", label.c_str(), bar.c_str(),
                 static_cast<long long>(pct), detail.c_str(), eta.c_str());
    std::fflush(out_);
  } else if (label != last_label_ || pct / 10 != last_percent_ / 10 || done == total) {
    // Not a terminal (CI logs): one line per 10%.
    std::fprintf(out_, "%s %3lld%% %s%s\n", label.c_str(), static_cast<long long>(pct),
                 detail.c_str(), eta.c_str());
  }
  last_percent_ = pct;
  last_label_ = label;
}

void ProgressBar::finish() {
  if (tty_) std::fprintf(out_, "\n");
  std::fflush(out_);
  last_percent_ = -1;
  last_label_.clear();
}

std::string format_number(double v, int significant) {
  if (std::isnan(v)) return "n/a";
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-2) return fmt::format("{:.{}e}", v, significant - 1);
  const int int_digits = a >= 1 ? static_cast<int>(std::floor(std::log10(a))) + 1 : 1;
  return fmt::format("{:.{}f}", v, std::max(0, significant - int_digits));
}

std::string format_seconds(double s) {
  if (s < 0 || std::isnan(s)) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(s));
  if (t < 60) return fmt::format("{}s", t);
  return fmt::format("{}m{:02d}s", t / 60, static_cast<int>(t % 60));
}

}  // namespace el::bench
