// Tests for metrics/sampler.h: the live thread on this machine, and the
// summary math on synthetic recordings with hand-computed answers.
#include "metrics/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/tensor.h"
#include "metrics/stats.h"
#include "metrics/timer.h"
#include "ops/backend.h"

namespace el::metrics {
namespace {

using std::chrono::milliseconds;

// Energy that grows at a fixed power with wall time, like a real counter.
class LinearEnergySource final : public EnergySource {
 public:
  explicit LinearEnergySource(double watts) : watts_(watts), t0_(now_seconds()) {}
  std::string name() const override { return "fake_linear"; }
  std::string description() const override { return "fake counter"; }
  bool available() const override { return true; }
  const std::string& unavailable_reason() const override { return empty_; }
  std::optional<double> read_joules() override { return watts_ * (now_seconds() - t0_); }
  const std::string& last_error() const override { return empty_; }

 private:
  double watts_;
  double t0_;
  std::string empty_;
};

EnergyMeter no_energy() { return EnergyMeter(); }

TEST(Sampler, SamplesAtRoughlyTheInterval) {
  Sampler s({.device = Device::cpu(), .interval_ms = 20}, no_energy());
  ASSERT_TRUE(s.start().ok());
  EXPECT_TRUE(s.running());
  std::this_thread::sleep_for(milliseconds(300));
  s.stop();
  EXPECT_FALSE(s.running());
  const std::vector<Sample> v = s.samples();
  // start + ~15 ticks + stop; lenient for a loaded 2-core machine.
  ASSERT_GE(v.size(), 6u);
  EXPECT_LE(v.size(), 20u);
  EXPECT_DOUBLE_EQ(v.front().t_s, 0.0);
  EXPECT_GE(v.back().t_s, 0.29);
  std::vector<double> dts;
  for (size_t i = 1; i + 1 < v.size(); ++i) dts.push_back(v[i].t_s - v[i - 1].t_s);
  const Summary d = summarize(dts);
  EXPECT_GT(d.median, 0.015);
  EXPECT_LT(d.median, 0.080);
  EXPECT_FALSE(v.front().device_util.has_value());  // no previous interval
  EXPECT_TRUE(v.back().device_util.has_value());
  EXPECT_GE(*v.back().device_util, 0.0);
  for (const Sample& x : v) EXPECT_TRUE(x.rss_bytes.has_value());
  s.stop();  // idempotent
}

TEST(Sampler, SeesAnAllocationMadeWhileSampling) {
  Sampler s({.device = Device::cpu(), .interval_ms = 10}, no_energy());
  ASSERT_TRUE(s.start().ok());
  std::this_thread::sleep_for(milliseconds(40));
  constexpr int64_t kBytes = 64'000'000;
  {
    Tensor t = Tensor::empty({kBytes / 4}, DType::f32);  // 64 MB
    backend_for(Device::cpu()).fill(t, 1.0f);           // touch the pages: RSS too
    std::this_thread::sleep_for(milliseconds(120));
  }
  std::this_thread::sleep_for(milliseconds(40));
  s.stop();
  const SampleSet rec = s.recording();
  ASSERT_GE(rec.samples.size(), 3u);
  const int64_t base = rec.samples.front().live_bytes;
  int64_t max_live = 0;
  for (const Sample& x : rec.samples) max_live = std::max(max_live, x.live_bytes);
  EXPECT_GE(max_live, base + kBytes);
  EXPECT_LT(rec.samples.back().live_bytes, base + kBytes);  // freed again

  const MemoryEnergySummary sum = summarize_samples(rec);
  ASSERT_TRUE(sum.peak_live_bytes.has_value());
  EXPECT_GE(*sum.peak_live_bytes, base + kBytes);
  ASSERT_TRUE(sum.amu_live_gb.has_value());
  // Held for ~120 of ~200 ms: the time-weighted mean is well above the base.
  EXPECT_GT(*sum.amu_live_gb, (base + 0.2 * kBytes) / 1e9);
  EXPECT_LT(*sum.amu_live_gb, (base + kBytes + 1e6) / 1e9);
  ASSERT_TRUE(sum.peak_rss_bytes.has_value());
  EXPECT_GT(*sum.peak_rss_bytes, kBytes);
  EXPECT_EQ(sum.device, "cpu");
}

TEST(Sampler, EnergyFromACounterGivesAveragePower) {
  EnergyMeter m;
  m.add_source(std::make_unique<LinearEnergySource>(50.0));
  Sampler s({.interval_ms = 10}, std::move(m));
  ASSERT_TRUE(s.start().ok());
  std::this_thread::sleep_for(milliseconds(100));
  s.stop();
  const SampleSet rec = s.recording();
  ASSERT_EQ(rec.energy_sources, std::vector<std::string>{"fake_linear"});
  EXPECT_DOUBLE_EQ(*rec.samples.front().energy_j[0], 0.0);  // relative to start
  const MemoryEnergySummary sum = summarize_samples(rec);
  ASSERT_TRUE(sum.avg_power_w.has_value());
  EXPECT_NEAR(*sum.avg_power_w, 50.0, 1.0);
  EXPECT_NEAR(*sum.energy_j, 50.0 * sum.duration_s, 0.5);
  EXPECT_EQ(sum.energy_source, "fake counter");
  ASSERT_EQ(sum.energy_sources.size(), 1u);
  EXPECT_NEAR(*sum.energy_sources[0].avg_power_w, 50.0, 1.0);
  const nlohmann::json j = to_json(sum);
  EXPECT_FALSE(j.contains("avg_power_w_unavailable_reason"));
  EXPECT_EQ(to_json(rec)["energy_j"]["fake_linear"].size(), rec.samples.size());
}

TEST(Sampler, StartErrors) {
  Sampler bad_interval({.interval_ms = 0}, no_energy());
  Status st = bad_interval.start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("interval_ms must be >= 1, got 0"), std::string::npos);

  Sampler gpu({.device = Device::cuda(0)}, no_energy());
  st = gpu.start();
  ASSERT_FALSE(st.ok());  // this test program has no CUDA allocator
  EXPECT_NE(st.error().message().find("no allocator for device cuda:0"), std::string::npos);

  Sampler twice({.interval_ms = 50}, no_energy());
  ASSERT_TRUE(twice.start().ok());
  st = twice.start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("already running"), std::string::npos);
  // the destructor stops it
}

// Hand-computed: t = 0, 1, 3; live 0, 2, 2 GB -> area 1 + 4 = 5 GB*s over
// 3 s = 5/3 GB (the arithmetic mean 4/3 would over-weight the short interval).
SampleSet synthetic() {
  SampleSet set;
  set.interval_ms = 1000;
  set.peak_counter_reset = true;
  set.energy_sources = {"a", "b"};
  set.energy_descriptions = {"source a", "source b"};
  auto sample = [](double t, double gb, double ea, double eb, std::optional<double> util) {
    Sample s;
    s.t_s = t;
    s.live_bytes = static_cast<int64_t>(gb * 1e9);
    s.reserved_bytes = s.live_bytes + 1'000'000'000;
    s.peak_live_bytes = static_cast<int64_t>(gb * 1e9) + (t > 0 ? 500'000'000 : 0);
    s.rss_bytes = s.live_bytes * 2;
    s.energy_j = {ea, eb};
    s.device_util = util;
    s.system_cpu_busy = util ? std::optional<double>(1.0) : std::nullopt;
    return s;
  };
  set.samples = {sample(0, 0, 0, 0, std::nullopt), sample(1, 2, 10, 20, 0.5),
                 sample(3, 2, 40, 50, 0.2)};
  return set;
}

// With the allocator's integral present, AMU is its difference over the span:
// the live bytes between the samples count, not only the sampled instants
// (here the snapshots all read 0, as a sampler in phase with a step would).
TEST(Summary, AmuFromTheAllocatorIntegralNotTheSnapshots) {
  SampleSet set = synthetic();
  for (Sample& s : set.samples) s.live_bytes = 0;
  set.samples[0].live_byte_seconds = 100e9;
  set.samples[1].live_byte_seconds = 104e9;
  set.samples[2].live_byte_seconds = 109e9;  // 9 GB s over 3 s
  const MemoryEnergySummary s = summarize_samples(set);
  ASSERT_TRUE(s.amu_live_gb.has_value());
  EXPECT_NEAR(*s.amu_live_gb, 3.0, 1e-12);
}

TEST(MemoryCounters, IntegralOfLiveBytesOverTime) {
  MemoryCounters c;
  c.on_reserve(1000);
  c.on_alloc(1000, false);
  const double i0 = c.snapshot().live_byte_seconds;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  c.on_free(1000);
  const double i1 = c.snapshot().live_byte_seconds;
  EXPECT_GE(i1 - i0, 1000 * 0.045);
  EXPECT_LT(i1 - i0, 1000 * 1.0);  // generous: a loaded CI machine may oversleep
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_DOUBLE_EQ(c.snapshot().live_byte_seconds, c.raw().live_byte_seconds);  // nothing live
  EXPECT_EQ(c.raw().peak_live_bytes, 1000);
  EXPECT_EQ(c.raw().num_allocs, 1);
}

TEST(Summary, TimeWeightedOnSyntheticSamples) {
  const MemoryEnergySummary s = summarize_samples(synthetic());
  EXPECT_EQ(s.num_samples, 3u);
  EXPECT_DOUBLE_EQ(s.duration_s, 3.0);
  EXPECT_NEAR(*s.amu_live_gb, 5.0 / 3.0, 1e-12);
  EXPECT_NEAR(*s.amu_reserved_gb, 5.0 / 3.0 + 1.0, 1e-12);
  EXPECT_NEAR(*s.amu_rss_gb, 10.0 / 3.0, 1e-12);
  EXPECT_EQ(*s.peak_live_bytes, 2'500'000'000);  // the allocator counter, not the samples
  EXPECT_EQ(*s.peak_rss_bytes, 4'000'000'000);
  EXPECT_NEAR(*s.energy_j, 90.0, 1e-12);          // (40 + 50) - 0
  EXPECT_NEAR(*s.avg_power_w, 30.0, 1e-12);       // 90 J / 3 s
  EXPECT_NEAR(*s.energy_sources[0].avg_power_w, 40.0 / 3.0, 1e-12);
  EXPECT_NEAR(*s.energy_sources[1].energy_j, 50.0, 1e-12);
  EXPECT_NEAR(*s.mean_device_util, (0.5 * 1 + 0.2 * 2) / 3.0, 1e-12);
  EXPECT_NEAR(*s.mean_system_cpu_busy, 1.0, 1e-12);
  EXPECT_EQ(s.energy_source, "source a + source b");
  EXPECT_TRUE(s.unavailable_reasons.empty());

  const nlohmann::json j = to_json(s);
  EXPECT_NEAR(j["amu_live_gb"].get<double>(), 5.0 / 3.0, 1e-12);
  EXPECT_EQ(j["energy_sources"].size(), 2u);
}

TEST(Summary, PeakWithoutCounterResetIsTheSampledMax) {
  SampleSet set = synthetic();
  set.peak_counter_reset = false;  // the counter may predate the window
  EXPECT_EQ(*summarize_samples(set).peak_live_bytes, 2'000'000'000);
}

TEST(Summary, NoEnergySourceIsNullWithTheReason) {
  SampleSet set = synthetic();
  set.energy_sources.clear();
  set.energy_descriptions.clear();
  for (Sample& s : set.samples) s.energy_j.clear();
  set.energy_unavailable_reason = "cpu_rapl: no RAPL powercap domains under /x (virtual machine?)";
  const MemoryEnergySummary s = summarize_samples(set);
  EXPECT_FALSE(s.energy_j.has_value());
  EXPECT_FALSE(s.avg_power_w.has_value());
  EXPECT_EQ(s.energy_source, "none");
  const nlohmann::json j = to_json(s);
  EXPECT_TRUE(j["avg_power_w"].is_null());
  EXPECT_TRUE(j["energy_j"].is_null());
  EXPECT_EQ(j["avg_power_w_unavailable_reason"], set.energy_unavailable_reason);
  EXPECT_EQ(j["energy_j_unavailable_reason"], set.energy_unavailable_reason);
  EXPECT_NEAR(j["amu_live_gb"].get<double>(), 5.0 / 3.0, 1e-12);  // the rest still there

  const nlohmann::json raw = to_json(set);
  EXPECT_EQ(raw["t_s"].size(), 3u);
  EXPECT_TRUE(raw["device_util"][0].is_null());
  EXPECT_EQ(raw["energy_j_unavailable_reason"], set.energy_unavailable_reason);
}

TEST(Summary, FailedEnergyReadsLeaveTooFewPoints) {
  SampleSet set = synthetic();
  set.samples[1].energy_j[1].reset();
  set.samples[2].energy_j[1].reset();
  const MemoryEnergySummary s = summarize_samples(set);
  EXPECT_FALSE(s.avg_power_w.has_value());  // total needs every source at both ends
  EXPECT_NE(s.unavailable_reasons.at("avg_power_w").find("fewer than two samples"),
            std::string::npos);
  EXPECT_NEAR(*s.energy_sources[0].avg_power_w, 40.0 / 3.0, 1e-12);
  EXPECT_FALSE(s.energy_sources[1].avg_power_w.has_value());
}

TEST(Summary, EmptyRecording) {
  SampleSet set;
  set.energy_unavailable_reason = "why not";
  const MemoryEnergySummary s = summarize_samples(set);
  EXPECT_EQ(s.num_samples, 0u);
  const nlohmann::json j = to_json(s);
  for (const char* k : {"amu_live_gb", "amu_rss_gb", "peak_live_bytes", "avg_power_w",
                        "mean_device_util"}) {
    EXPECT_TRUE(j[k].is_null()) << k;
    EXPECT_TRUE(j.contains(std::string(k) + "_unavailable_reason")) << k;
  }
  EXPECT_NE(j["amu_live_gb_unavailable_reason"].get<std::string>().find("no samples"),
            std::string::npos);
}

TEST(Summary, GpuUtilReason) {
  SampleSet set = synthetic();
  set.device = Device::cuda(0);
  set.util_unavailable_reason = "GPU utilization needs NVML";
  for (Sample& s : set.samples) s.device_util.reset();
  const nlohmann::json j = to_json(summarize_samples(set));
  EXPECT_TRUE(j["mean_device_util"].is_null());
  EXPECT_EQ(j["mean_device_util_unavailable_reason"], "GPU utilization needs NVML");
  EXPECT_EQ(j["device"], "cuda:0");
}

TEST(TimeWeightedMean, EdgeCases) {
  EXPECT_FALSE(time_weighted_mean({}, {}).has_value());
  EXPECT_DOUBLE_EQ(*time_weighted_mean({2.0}, {7.0}), 7.0);
  EXPECT_DOUBLE_EQ(*time_weighted_mean({1.0, 1.0}, {2.0, 4.0}), 3.0);  // zero span
  EXPECT_DOUBLE_EQ(*time_weighted_mean({0, 1, 2}, {0, 10, 0}), 5.0);   // triangle
}

}  // namespace
}  // namespace el::metrics
