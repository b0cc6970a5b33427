// progress.h — the suite runner's progress on stderr: which experiment of how
// many runs now ([i/N] and its label), the time elapsed since the suite
// started, and an ETA for the rest of the suite.
//
// The ETA starts from the dry-run estimates (suite_yaml.h: estimate_seconds)
// and is corrected by measured speed as experiments finish: every estimate
// is scaled by (measured wall time / estimate) over the finished experiments
// that had one, and the running experiment's own progress (the fraction of
// its steps done) replaces its estimate once it is known. On a terminal one
// line is redrawn in place with a bar; otherwise (CI logs, pipes) plain lines
// are printed: when an experiment starts, at every 25% of it, and when it ends.
#pragma once

#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace el::bench {

// "45s", "3m05s", "2h07m", "3d04h"; "?" for NaN or a negative value.
std::string format_duration(double seconds);

// Seconds left in a suite: a model of the experiments that will run, in order.
class EtaModel {
 public:
  // estimates[i]: the dry-run estimate of experiment i in seconds (all of
  // its repetitions); NaN or <= 0 when there is none.
  explicit EtaModel(std::vector<double> estimates);

  size_t size() const { return est_.size(); }
  // Experiment i finished (or failed) after wall_s seconds.
  void finish(size_t i, double wall_s);
  // Measured over estimated time, summed over the finished experiments that
  // had an estimate; 1 before any of them finished.
  double speed_factor() const;
  // Seconds left: the rest of experiment `current` (running for `elapsed_s`,
  // `fraction` of it done in [0, 1], or < 0 when unknown) plus every later
  // experiment. current >= size() means all done (0). NaN when an experiment
  // has no estimate and none has finished yet (nothing to go by).
  double remaining(size_t current, double elapsed_s, double fraction) const;

 private:
  double expected(size_t i) const;  // estimate x speed factor, or the mean finished wall time; NaN
  std::vector<double> est_;
  std::vector<double> wall_;  // NaN until finished
};

// One progress line's content.
struct ProgressView {
  size_t index = 0;  // 1-based row of the suite
  size_t total = 0;  // rows in the suite (cached and not-supported ones included)
  std::string label;
  std::string detail;      // e.g. "rep 2/3" (may be empty)
  double elapsed_s = 0;    // since the suite started
  double eta_s = std::numeric_limits<double>::quiet_NaN();  // seconds left; NaN = unknown
};

// "[2/5] GQA rep 2/3  elapsed 1m05s  eta 2m10s". With bar_width > 0 a bar
// of the suite's time fraction elapsed / (elapsed + eta) follows the [i/N]:
// "[2/5] [#####...............]  25% GQA ...". An unknown ETA prints "eta ?"
// and an empty bar.
std::string format_progress_line(const ProgressView& v, int bar_width);

// Draws the progress of one suite run on `out` (stderr).
class SuiteProgress {
 public:
  // total: rows of the suite; eta: the experiments that will run, in order.
  SuiteProgress(std::FILE* out, size_t total, EtaModel eta);
  // Forces the terminal / plain-line mode (tests); detected from `out` otherwise.
  void set_tty(bool tty) { tty_ = tty; }

  // A permanent line, e.g. "[3/5] MQA: cached (results/quick-...jsonl:3)".
  void line(const std::string& text);
  // Row `index` (0-based) starts; eta_slot: its index in the EtaModel.
  void begin(size_t index, const std::string& label, size_t eta_slot);
  // Progress within the running row: fraction in [0, 1] (< 0 unknown) and a
  // short detail. Redraws at most 5 times a second on a terminal.
  void update(double fraction, const std::string& detail);
  // The running row ended: records its wall time in the ETA model and prints
  // "[i/N] label: <outcome> in 41s (elapsed ..., eta ...)".
  void end(const std::string& outcome);
  double elapsed() const;  // seconds since construction

 private:
  void draw(bool force);
  std::FILE* out_;
  bool tty_;
  size_t total_;
  EtaModel eta_;
  std::chrono::steady_clock::time_point t0_, row_t0_, last_draw_;
  size_t index_ = 0, slot_ = 0;
  std::string label_, detail_;
  double fraction_ = -1;
  int last_quarter_ = 0;
  bool drawn_ = false;  // a redrawn line is on screen (TTY)
};

}  // namespace el::bench
