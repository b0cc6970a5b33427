#include "metrics/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "metrics/stats.h"
#include "metrics/timer.h"

namespace el::metrics {

namespace {
DeviceMonitor* g_monitors[2] = {nullptr, nullptr};
}  // namespace

void register_device_monitor(DeviceKind kind, DeviceMonitor* monitor) {
  g_monitors[static_cast<int>(kind)] = monitor;
}

DeviceMonitor* device_monitor(DeviceKind kind) { return g_monitors[static_cast<int>(kind)]; }

Sampler::Sampler(SamplerOptions options) : Sampler(options, EnergyMeter::open()) {}

Sampler::Sampler(SamplerOptions options, EnergyMeter meter)
    : options_(options), meter_(std::move(meter)) {
  // A GPU's own energy counter joins the meter (once, whoever opened it).
  if (!options_.device.is_cpu()) {
    monitor_ = device_monitor(options_.device.kind);
    if (monitor_) {
      if (auto src = monitor_->energy_source(options_.device.index)) {
        bool have = false;
        for (const auto& s : meter_.sources()) have = have || s->name() == src->name();
        if (!have) meter_.add_source(std::move(src));
      }
    }
  }
}

Sampler::~Sampler() { stop(); }

Status Sampler::start() {
  if (running_) return make_error("sampler is already running", "Sampler::start");
  if (options_.interval_ms < 1) {
    return make_error(fmt::format("interval_ms must be >= 1, got {}", options_.interval_ms),
                      "Sampler::start");
  }
  Result<Allocator*> alloc = allocator_for(options_.device);
  if (!alloc.ok()) return alloc.error();
  allocator_ = alloc.value();
  if (options_.reset_allocator_peak) allocator_->reset_peak();

  const PlatformInfo platform = collect_platform_info();
  usable_cpus_ = std::max(1, platform.usable_cpus);

  energy_.clear();
  for (const auto& s : meter_.sources()) {
    if (s->available()) energy_.push_back(s.get());
  }
  energy_base_.assign(energy_.size(), std::nullopt);

  {
    std::lock_guard<std::mutex> lock(mu_);
    samples_.clear();
    stop_requested_ = false;
  }
  prev_cpu_.reset();
  prev_sys_.reset();
  t0_ = now_seconds();
  take_sample(t0_);  // t = 0 exactly; also records the energy baseline
  running_ = true;
  thread_ = std::thread([this] { loop(); });
  return Status::Ok();
}

void Sampler::stop() {
  if (!running_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
  }
  cv_.notify_all();
  thread_.join();
  take_sample(now_seconds());  // the recording ends exactly at stop()
  running_ = false;
}

void Sampler::loop() {
  using clock = std::chrono::steady_clock;
  const auto interval = std::chrono::milliseconds(options_.interval_ms);
  auto next = clock::now() + interval;
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_until(lock, next, [this] { return stop_requested_; })) {
    lock.unlock();
    take_sample(now_seconds());
    lock.lock();
    // Keep to the grid; if a sample ran late (a loaded machine), restart the
    // grid from now instead of firing a burst to catch up: the timestamps,
    // not the count, carry the weighting.
    next += interval;
    if (next <= clock::now()) next = clock::now() + interval;
  }
}

void Sampler::take_sample(double wall) {
  Sample s;
  s.t_s = wall - t0_;
  const MemoryStats ms = allocator_->stats();
  s.live_bytes = ms.live_bytes;
  s.reserved_bytes = ms.reserved_bytes;
  s.peak_live_bytes = ms.peak_live_bytes;
  s.live_byte_seconds = ms.live_byte_seconds;
  if (Result<int64_t> rss = process_rss_bytes(); rss.ok()) s.rss_bytes = rss.value();

  s.energy_j.resize(energy_.size());
  for (size_t i = 0; i < energy_.size(); ++i) {
    const std::optional<double> j = energy_[i]->read_joules();
    if (!j) continue;
    if (!energy_base_[i]) energy_base_[i] = *j;  // the first successful read is zero
    s.energy_j[i] = *j - *energy_base_[i];
  }

  if (monitor_) {
    const DeviceReading r = monitor_->read(options_.device.index);
    s.device_util = r.util;
    s.device_memory_used_bytes = r.memory_used_bytes;
    s.sm_clock_mhz = r.sm_clock_mhz;
  } else if (options_.device.is_cpu()) {
    if (Result<double> cpu = process_cpu_seconds(); cpu.ok()) {
      const double dt = wall - prev_wall_;
      if (prev_cpu_ && dt > 0) {
        s.device_util = (cpu.value() - *prev_cpu_) / (dt * usable_cpus_);
      }
      prev_cpu_ = cpu.value();
    }
  }
  if (Result<SystemCpuTimes> sys = read_system_cpu_times(); sys.ok()) {
    if (prev_sys_) {
      const double f = system_cpu_busy_fraction(*prev_sys_, sys.value());
      if (std::isfinite(f)) s.system_cpu_busy = f;
    }
    prev_sys_ = sys.value();
  }
  prev_wall_ = wall;

  std::lock_guard<std::mutex> lock(mu_);
  samples_.push_back(std::move(s));
}

std::vector<Sample> Sampler::samples() const {
  std::lock_guard<std::mutex> lock(mu_);
  return samples_;
}

SampleSet Sampler::recording() const {
  SampleSet set;
  set.device = options_.device;
  set.interval_ms = options_.interval_ms;
  set.peak_counter_reset = options_.reset_allocator_peak;
  // Before start() the source list is not resolved yet; use the meter's view.
  for (const auto& s : meter_.sources()) {
    if (s->available()) {
      set.energy_sources.push_back(s->name());
      set.energy_descriptions.push_back(s->description());
    }
  }
  set.energy_unavailable_reason = meter_.unavailable_reason();
  if (!options_.device.is_cpu()) {
    set.util_unavailable_reason =
        monitor_ ? monitor_->unavailable_reason(options_.device.index)
                 : "no device monitor is registered for " + options_.device.str() +
                       " (GPU utilization needs the CUDA backend's NVML reader)";
  }
  set.samples = samples();
  return set;
}

// ---- summary -------------------------------------------------------------------

std::optional<double> time_weighted_mean(const std::vector<double>& t, const std::vector<double>& v) {
  const size_t n = std::min(t.size(), v.size());
  if (n == 0) return std::nullopt;
  const double span = t[n - 1] - t[0];
  if (n == 1 || !(span > 0)) {
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) sum += v[i];
    return sum / static_cast<double>(n);
  }
  double area = 0.0;
  for (size_t i = 1; i < n; ++i) area += 0.5 * (v[i] + v[i - 1]) * (t[i] - t[i - 1]);
  return area / span;
}

namespace {

// (t, value) pairs of the samples where get() has a value.
template <class Get>
void collect(const std::vector<Sample>& samples, Get get, std::vector<double>& t,
             std::vector<double>& v) {
  t.clear();
  v.clear();
  for (const Sample& s : samples) {
    const std::optional<double> x = get(s);
    if (x) {
      t.push_back(s.t_s);
      v.push_back(*x);
    }
  }
}

// Energy over the span between the first and last samples where `get` has a
// reading: {joules, seconds}; nullopt if fewer than two such samples.
template <class Get>
std::optional<std::pair<double, double>> energy_span(const std::vector<Sample>& samples, Get get) {
  const Sample* first = nullptr;
  const Sample* last = nullptr;
  for (const Sample& s : samples) {
    if (!get(s)) continue;
    if (!first) first = &s;
    last = &s;
  }
  if (!first || first == last || !(last->t_s > first->t_s)) return std::nullopt;
  return std::make_pair(*get(*last) - *get(*first), last->t_s - first->t_s);
}

}  // namespace

MemoryEnergySummary summarize_samples(const SampleSet& set) {
  MemoryEnergySummary r;
  const std::vector<Sample>& ss = set.samples;
  r.num_samples = ss.size();
  r.interval_ms = set.interval_ms;
  r.device = set.device.str();
  if (!ss.empty()) r.duration_s = ss.back().t_s - ss.front().t_s;
  auto& why = r.unavailable_reasons;

  std::vector<double> t, v;
  const std::string no_samples = "no samples were recorded (the sampler never started)";
  collect(ss, [](const Sample& s) { return std::optional<double>(double(s.live_bytes)); }, t, v);
  if (ss.size() >= 2 && ss.back().t_s > ss.front().t_s &&
      ss.back().live_byte_seconds > ss.front().live_byte_seconds) {
    r.amu_live_gb = (ss.back().live_byte_seconds - ss.front().live_byte_seconds) /
                    (ss.back().t_s - ss.front().t_s) / 1e9;
  } else if (auto m = time_weighted_mean(t, v)) {
    r.amu_live_gb = *m / 1e9;
  }
  collect(ss, [](const Sample& s) { return std::optional<double>(double(s.reserved_bytes)); }, t, v);
  if (auto m = time_weighted_mean(t, v)) r.amu_reserved_gb = *m / 1e9;
  collect(ss, [](const Sample& s) {
    return s.rss_bytes ? std::optional<double>(double(*s.rss_bytes)) : std::nullopt;
  }, t, v);
  if (auto m = time_weighted_mean(t, v)) r.amu_rss_gb = *m / 1e9;
  if (ss.empty()) {
    why["amu_live_gb"] = why["amu_reserved_gb"] = why["peak_live_bytes"] = no_samples;
  } else {
    int64_t peak = 0;
    for (const Sample& s : ss) {
      peak = std::max(peak, set.peak_counter_reset ? s.peak_live_bytes : s.live_bytes);
    }
    r.peak_live_bytes = peak;
  }
  for (const Sample& s : ss) {
    if (s.rss_bytes) r.peak_rss_bytes = std::max(r.peak_rss_bytes.value_or(0), *s.rss_bytes);
  }
  if (!r.amu_rss_gb) {
    why["amu_rss_gb"] = why["peak_rss_bytes"] =
        ss.empty() ? no_samples : "/proc/self/statm could not be read";
  }

  // Energy: per source, then the total over the samples where every source
  // has a reading (so the sum never mixes spans).
  const size_t ns = set.energy_sources.size();
  std::vector<std::string> desc;
  for (size_t i = 0; i < ns; ++i) {
    EnergySourceSummary es;
    es.name = set.energy_sources[i];
    es.description = i < set.energy_descriptions.size() ? set.energy_descriptions[i] : es.name;
    auto get = [i](const Sample& s) {
      return i < s.energy_j.size() ? s.energy_j[i] : std::nullopt;
    };
    if (auto e = energy_span(ss, get)) {
      es.energy_j = e->first;
      es.avg_power_w = e->first / e->second;
    }
    desc.push_back(es.description);
    r.energy_sources.push_back(std::move(es));
  }
  r.energy_source = desc.empty() ? "none" : fmt::format("{}", fmt::join(desc, " + "));
  if (ns == 0) {
    const std::string reason = set.energy_unavailable_reason.empty()
                                   ? "no energy source is available"
                                   : set.energy_unavailable_reason;
    why["energy_j"] = why["avg_power_w"] = reason;
  } else {
    auto total = [ns](const Sample& s) -> std::optional<double> {
      if (s.energy_j.size() < ns) return std::nullopt;
      double sum = 0.0;
      for (const auto& e : s.energy_j) {
        if (!e) return std::nullopt;
        sum += *e;
      }
      return sum;
    };
    if (auto e = energy_span(ss, total)) {
      r.energy_j = e->first;
      r.avg_power_w = e->first / e->second;
    } else {
      why["energy_j"] = why["avg_power_w"] =
          "fewer than two samples with a reading from every energy source (run too short, or "
          "the counters failed to read)";
    }
  }

  // Utilisation: each value covers (previous sample, this sample], so weight
  // it by that interval; the result equals total CPU time / (span × CPUs).
  auto interval_mean = [&ss](auto get) -> std::optional<double> {
    double num = 0.0, den = 0.0;
    for (size_t i = 1; i < ss.size(); ++i) {
      const std::optional<double> x = get(ss[i]);
      const double dt = ss[i].t_s - ss[i - 1].t_s;
      if (x && dt > 0) {
        num += *x * dt;
        den += dt;
      }
    }
    if (!(den > 0)) return std::nullopt;
    return num / den;
  };
  r.mean_device_util = interval_mean([](const Sample& s) { return s.device_util; });
  r.mean_system_cpu_busy = interval_mean([](const Sample& s) { return s.system_cpu_busy; });
  collect(ss, [](const Sample& s) { return s.sm_clock_mhz; }, t, v);
  r.mean_sm_clock_mhz = time_weighted_mean(t, v);
  for (const Sample& s : ss) {
    if (s.device_memory_used_bytes) {
      r.peak_device_memory_used_bytes =
          std::max(r.peak_device_memory_used_bytes.value_or(0), *s.device_memory_used_bytes);
    }
  }
  const std::string short_run = "fewer than two samples (run shorter than one interval?)";
  if (!r.mean_device_util) {
    why["mean_device_util"] =
        !set.util_unavailable_reason.empty() ? set.util_unavailable_reason : short_run;
  }
  if (!r.mean_system_cpu_busy) why["mean_system_cpu_busy"] = short_run;
  return r;
}

namespace {

template <class T>
nlohmann::json opt_json(const std::optional<T>& v) {
  if (!v) return nullptr;
  if constexpr (std::is_floating_point_v<T>) return json_number_or_null(*v);
  return *v;
}

}  // namespace

nlohmann::json to_json(const SampleSet& set) {
  using nlohmann::json;
  json t = json::array(), live = json::array(), reserved = json::array(), peak = json::array(),
       live_integral = json::array(), rss = json::array(), util = json::array(),
       busy = json::array();
  json energy = json::object();
  std::vector<json> columns(set.energy_sources.size(), json::array());
  for (const Sample& s : set.samples) {
    t.push_back(s.t_s);
    live.push_back(s.live_bytes);
    reserved.push_back(s.reserved_bytes);
    peak.push_back(s.peak_live_bytes);
    live_integral.push_back(s.live_byte_seconds);
    rss.push_back(opt_json(s.rss_bytes));
    util.push_back(opt_json(s.device_util));
    busy.push_back(opt_json(s.system_cpu_busy));
    for (size_t i = 0; i < columns.size(); ++i) {
      columns[i].push_back(i < s.energy_j.size() ? opt_json(s.energy_j[i]) : json(nullptr));
    }
  }
  for (size_t i = 0; i < columns.size(); ++i) energy[set.energy_sources[i]] = std::move(columns[i]);
  json j{{"device", set.device.str()},
         {"interval_ms", set.interval_ms},
         {"t_s", std::move(t)},
         {"live_bytes", std::move(live)},
         {"reserved_bytes", std::move(reserved)},
         {"peak_live_bytes", std::move(peak)},
         {"live_byte_seconds", std::move(live_integral)},
         {"rss_bytes", std::move(rss)},
         {"device_util", std::move(util)},
         {"system_cpu_busy", std::move(busy)},
         {"energy_j", std::move(energy)}};
  if (set.energy_sources.empty()) {
    j["energy_j_unavailable_reason"] = set.energy_unavailable_reason.empty()
                                           ? "no energy source is available"
                                           : set.energy_unavailable_reason;
  }
  if (!set.util_unavailable_reason.empty()) {
    j["device_util_unavailable_reason"] = set.util_unavailable_reason;
  }
  if (!set.device.is_cpu()) {
    json mem = json::array(), clock = json::array();
    for (const Sample& s : set.samples) {
      mem.push_back(opt_json(s.device_memory_used_bytes));
      clock.push_back(opt_json(s.sm_clock_mhz));
    }
    j["device_memory_used_bytes"] = std::move(mem);
    j["sm_clock_mhz"] = std::move(clock);
  }
  return j;
}

nlohmann::json to_json(const MemoryEnergySummary& s) {
  using nlohmann::json;
  json j{{"num_samples", s.num_samples},
         {"duration_s", s.duration_s},
         {"interval_ms", s.interval_ms},
         {"device", s.device},
         {"amu_live_gb", opt_json(s.amu_live_gb)},
         {"amu_reserved_gb", opt_json(s.amu_reserved_gb)},
         {"amu_rss_gb", opt_json(s.amu_rss_gb)},
         {"peak_live_bytes", opt_json(s.peak_live_bytes)},
         {"peak_rss_bytes", opt_json(s.peak_rss_bytes)},
         {"energy_j", opt_json(s.energy_j)},
         {"avg_power_w", opt_json(s.avg_power_w)},
         {"energy_source", s.energy_source},
         {"mean_device_util", opt_json(s.mean_device_util)},
         {"mean_system_cpu_busy", opt_json(s.mean_system_cpu_busy)}};
  json sources = json::array();
  for (const EnergySourceSummary& e : s.energy_sources) {
    sources.push_back(json{{"name", e.name},
                           {"description", e.description},
                           {"energy_j", opt_json(e.energy_j)},
                           {"avg_power_w", opt_json(e.avg_power_w)}});
  }
  j["energy_sources"] = std::move(sources);
  if (s.peak_device_memory_used_bytes) {
    j["peak_device_memory_used_bytes"] = *s.peak_device_memory_used_bytes;
  }
  if (s.mean_sm_clock_mhz) j["mean_sm_clock_mhz"] = opt_json(s.mean_sm_clock_mhz);
  for (const auto& [field, reason] : s.unavailable_reasons) {
    j[field + "_unavailable_reason"] = reason;
  }
  return j;
}

}  // namespace el::metrics
