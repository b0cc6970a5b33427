// table.h — terminal output for the benchmark: aligned tables and a progress
// bar. Tables go to stdout (the result a reader keeps), progress to stderr
// (redrawn in place on a terminal, one line per update otherwise).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace el::bench {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns padded to their widest cell; numbers right-aligned.
  std::string render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

class ProgressBar {
 public:
  explicit ProgressBar(std::FILE* out = stderr);
  // label: what runs now; done/total: units finished; eta_seconds < 0 hides the ETA.
  void update(const std::string& label, int64_t done, int64_t total, const std::string& detail,
              double eta_seconds);
  void finish();  // ends the line

 private:
  std::FILE* out_;
  bool tty_;
  int64_t last_percent_ = -1;
  std::string last_label_;
};

// "1.23e-04", "12.3", "n/a" (NaN) — compact numbers for tables.
std::string format_number(double v, int significant = 3);
std::string format_seconds(double s);  // "42s", "3m05s"

}  // namespace el::bench
