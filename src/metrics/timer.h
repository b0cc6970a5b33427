// timer.h — wall-clock helpers for the measurement layer.
//
// Everything here uses std::chrono::steady_clock: it never jumps when the
// system clock is adjusted (NTP, suspend), which is what a duration needs.
// Timing device work: call el::backend_for(device).synchronize() BEFORE
// reading the clock, or a GPU step is timed as its launch only.
#pragma once

#include <chrono>

namespace el::metrics {

// Seconds on the steady clock since an arbitrary fixed epoch (boot, usually).
// Only differences between two calls mean anything.
inline double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Stopwatch sw;  ...work...;  double s = sw.seconds();
// Starts running on construction.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}

  // Restarts from zero.
  void reset() { start_ = std::chrono::steady_clock::now(); }

  // Seconds since construction or the last reset()/lap().
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  // Returns seconds() and restarts: one call per loop iteration times
  // consecutive intervals without a gap between them.
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - start_).count();
    start_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace el::metrics
