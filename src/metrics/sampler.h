// sampler.h — background sampling of memory, energy and utilisation (AMU, AEC, PCU).
//
// A Sampler runs one thread that, every `interval_ms` (default 100 ms, the
// authors' inference monitor's rate; their training collectors used 1 s),
// records one Sample:
//   t_s             steady-clock seconds since start()
//   live_bytes      allocator bytes held by tensors on the device (the
//                   analogue of torch.cuda.memory_allocated), plus the
//                   allocator's reserved bytes, peak counter and the exact
//                   time integral of live bytes (live_byte_seconds)
//   rss_bytes       process resident set size (everything: caches, BLAS, ...)
//   energy_j[i]     joules since start() from each AVAILABLE EnergySource
//   device_util     utilisation over the interval ending at this sample: on CPU
//                   the process CPU time / (wall time × usable CPUs); on a GPU
//                   NVML's utilization.gpu through the registered DeviceMonitor
//                   (plus device memory used and SM clock)
//   system_cpu_busy whole-machine busy fraction over the same interval
// start() takes the first sample synchronously and stop() the last, so the
// samples always cover exactly [start, stop].
//
// summarize_samples() turns a recording into the reported numbers. Averages
// are TIME-weighted over the real timestamps (trapezoid rule), so a late or
// missed tick does not bias them, and there is no cap on the number of
// samples (the authors' code averaged only the last 1000). Average power is
// the energy counter's delta over the time span, never a mean of
// instantaneous power readings. Anything that cannot be measured is null in
// the JSON with "<field>_unavailable_reason" beside it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "metrics/energy.h"
#include "metrics/proc.h"

namespace el::metrics {

// ---- device readings that /proc cannot give (a GPU, through NVML) -------------------
// The CUDA backend registers a DeviceMonitor for DeviceKind::cuda when it
// starts (src/cuda/nvml.cpp); the Sampler and the GEMM calibration ask it for
// a GPU's utilisation, memory in use, SM clock, energy counter, name and
// datasheet peak. Without one, those fields are null with a reason.
struct DeviceReading {
  std::optional<double> util;                // busy fraction [0, 1] (NVML utilization.gpu)
  std::optional<int64_t> memory_used_bytes;  // device memory in use, all processes
  std::optional<double> sm_clock_mhz;
};

class DeviceMonitor {
 public:
  virtual ~DeviceMonitor() = default;
  virtual DeviceReading read(int device_index) = 0;  // thread-safe
  // Why read() has no values for this device (empty when it has).
  virtual std::string unavailable_reason(int device_index) = 0;
  // The device's energy counter (or nullptr); a new source per call.
  virtual std::unique_ptr<EnergySource> energy_source(int device_index) = 0;
  virtual std::string device_name(int device_index) = 0;
  // Dense datasheet peak in GFLOP/s for GEMM inputs of `dtype` (f32, bf16),
  // when the device is in the table of known GPUs.
  virtual std::optional<double> datasheet_peak_gflops(int device_index, DType dtype) = 0;
  // Datasheet memory bandwidth in GB/s, when known (the decode roofline).
  virtual std::optional<double> datasheet_memory_gbps(int device_index) {
    (void)device_index;
    return std::nullopt;
  }
};

void register_device_monitor(DeviceKind kind, DeviceMonitor* monitor);
DeviceMonitor* device_monitor(DeviceKind kind);  // nullptr when none is registered

struct SamplerOptions {
  Device device = Device::cpu();  // whose allocator and utilisation to sample
  int interval_ms = 100;          // >= 1
  // start() resets the allocator's peak counters (like
  // torch.cuda.reset_peak_memory_stats) so peak_live_bytes is the exact peak
  // of the sampled window, transients between ticks included.
  bool reset_allocator_peak = true;
};

struct Sample {
  double t_s = 0.0;                 // seconds since start()
  int64_t live_bytes = 0;           // allocator live bytes
  int64_t reserved_bytes = 0;       // allocator live + cached bytes
  int64_t peak_live_bytes = 0;      // allocator peak counter at this moment
  double live_byte_seconds = 0;     // allocator's integral of live bytes over time
  std::optional<int64_t> rss_bytes; // nullopt if /proc could not be read
  std::vector<std::optional<double>> energy_j;  // one per SampleSet::energy_sources
  std::optional<double> device_util;      // nullopt on the first sample / unmeasurable
  std::optional<int64_t> device_memory_used_bytes;  // GPU only (DeviceMonitor)
  std::optional<double> sm_clock_mhz;               // GPU only (DeviceMonitor)
  std::optional<double> system_cpu_busy;  // nullopt on the first sample
};

// A recording: the samples plus what is needed to interpret them.
struct SampleSet {
  Device device = Device::cpu();
  int interval_ms = 0;
  bool peak_counter_reset = false;              // SamplerOptions::reset_allocator_peak
  std::vector<std::string> energy_sources;      // names of the energy_j columns
  std::vector<std::string> energy_descriptions; // what each column counts
  std::string energy_unavailable_reason;        // why there are no columns
  std::string util_unavailable_reason;          // why device_util is always null
  std::vector<Sample> samples;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions options = {});
  // With explicit energy sources (tests inject fakes; the bench passes the
  // meter it opened once).
  Sampler(SamplerOptions options, EnergyMeter meter);
  ~Sampler();  // stop()s if running
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Clears previous samples, takes the first sample and starts the thread.
  // Errors: already running, interval_ms < 1, no allocator for the device.
  Status start();
  // Takes the final sample and joins the thread. No-op when not running.
  void stop();
  bool running() const { return running_; }

  std::vector<Sample> samples() const;  // a copy; safe while running
  SampleSet recording() const;          // samples + column names and reasons
  const SamplerOptions& options() const { return options_; }

 private:
  void loop();
  void take_sample(double wall);  // wall = now_seconds() at the call

  SamplerOptions options_;
  EnergyMeter meter_;
  std::vector<EnergySource*> energy_;  // the meter's available sources
  std::vector<std::optional<double>> energy_base_;  // their first readings
  Allocator* allocator_ = nullptr;
  DeviceMonitor* monitor_ = nullptr;  // non-CPU devices only
  int usable_cpus_ = 1;

  double t0_ = 0.0;         // now_seconds() at start()
  double prev_wall_ = 0.0;  // previous sample's wall time, cpu time, /proc/stat
  std::optional<double> prev_cpu_;
  std::optional<SystemCpuTimes> prev_sys_;

  mutable std::mutex mu_;  // guards samples_ and stop_requested_
  std::condition_variable cv_;
  bool stop_requested_ = false;
  bool running_ = false;    // touched only by the owning thread
  std::vector<Sample> samples_;
  std::thread thread_;
};

// ---- summary -------------------------------------------------------------------

// Time-weighted mean of v over timestamps t (trapezoid rule): the integral of
// the piecewise-linear signal divided by the span t.back() - t.front().
// nullopt for empty input; the single value for one point or a zero span.
// t must be non-decreasing and the same length as v.
std::optional<double> time_weighted_mean(const std::vector<double>& t, const std::vector<double>& v);

struct EnergySourceSummary {
  std::string name;         // "cpu_rapl"
  std::string description;  // "RAPL package-0 (intel-rapl:0)"
  std::optional<double> energy_j;
  std::optional<double> avg_power_w;
};

struct MemoryEnergySummary {
  size_t num_samples = 0;
  double duration_s = 0.0;  // last - first timestamp
  int interval_ms = 0;      // requested sampling interval
  std::string device;       // "cpu", "cuda:0"
  // AMU, time-weighted, in GB (1e9 bytes).
  // Allocator live bytes (the paper's/authors' AMU analogue): exact, the
  // allocator's integral of live bytes over the span divided by the span
  // (every allocation and free counted, not only the sampled instants, which
  // alias with a periodic training step). Snapshot average as a fallback.
  std::optional<double> amu_live_gb;
  std::optional<double> amu_reserved_gb;  // allocator reserved bytes
  std::optional<double> amu_rss_gb;       // process RSS
  std::optional<int64_t> peak_live_bytes;  // allocator peak counter (exact) or max sampled
  std::optional<int64_t> peak_rss_bytes;   // max sampled RSS
  // AEC: average power over the span from the counters, and total energy.
  std::optional<double> energy_j;
  std::optional<double> avg_power_w;
  std::string energy_source;  // descriptions joined by " + ", or "none"
  std::vector<EnergySourceSummary> energy_sources;
  // PCU as device utilisation (time-weighted mean over the intervals).
  std::optional<double> mean_device_util;
  // GPU only (DeviceMonitor); omitted from the JSON when absent.
  std::optional<int64_t> peak_device_memory_used_bytes;
  std::optional<double> mean_sm_clock_mhz;
  std::optional<double> mean_system_cpu_busy;
  // field name → why it is null ("avg_power_w" → "cpu_rapl: permission ...").
  std::map<std::string, std::string> unavailable_reasons;
};

MemoryEnergySummary summarize_samples(const SampleSet& set);

// Raw arrays: {"device", "interval_ms", "t_s": [...], "live_bytes": [...],
// "reserved_bytes", "peak_live_bytes", "rss_bytes", "device_util",
// "system_cpu_busy", "energy_j": {"<source>": [...]}} with null for missing
// values, plus "energy_j_unavailable_reason" / "device_util_unavailable_reason";
// for a GPU also "device_memory_used_bytes" and "sm_clock_mhz".
nlohmann::json to_json(const SampleSet& set);
// Every summary field; null fields get "<field>_unavailable_reason".
nlohmann::json to_json(const MemoryEnergySummary& s);

}  // namespace el::metrics
