// Tests for the GPU side of the measurement layer: NVML readings through the
// registered DeviceMonitor, the NVML energy source, the sampler on a cuda
// device, the bf16 cuBLASLt GEMM calibration and CUDA event timing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cuda/nvml.h"
#include "cuda_test_util.h"
#include "metrics/calibrate.h"
#include "metrics/sampler.h"

namespace el::test {
namespace {

// Keeps the GPU busy for about `ms` milliseconds of GEMMs.
void busy_gpu(double ms) {
  Tensor a = Tensor::full({2048, 2048}, 0.01f, DType::bf16, gpu());
  Tensor c = Tensor::empty({2048, 2048}, DType::bf16, gpu());
  gpu_backend().gemm(a, false, a, false, c, 1.f, 0.f);  // plan and heuristic outside the timing
  el::cuda::EventTimer timer;
  timer.start();
  gpu_backend().gemm(a, false, a, false, c, 1.f, 0.f);
  timer.stop();
  const double one = std::max(0.01, static_cast<double>(timer.elapsed_ms()));
  const int reps = static_cast<int>(ms / one) + 1;
  for (int i = 0; i < reps; ++i) gpu_backend().gemm(a, false, a, false, c, 1.f, 0.f);
  gpu_backend().synchronize();
}

TEST(CudaNvml, UnavailableReasonWithoutNvml) {
  if (el::cuda::nvml_available()) GTEST_SKIP() << "NVML is present here";
  EXPECT_NE(el::cuda::nvml_unavailable_reason().find("libnvidia-ml.so.1"), std::string::npos)
      << el::cuda::nvml_unavailable_reason();
  auto src = el::cuda::open_nvml_energy_source(0);
  EXPECT_FALSE(src->available());
  EXPECT_EQ(src->name(), "gpu0_nvml");
  EXPECT_FALSE(src->read_joules().has_value());
}

TEST(CudaNvml, MonitorAndEnergyCounter) {
  EL_REQUIRE_GPU();
  if (!el::cuda::nvml_available()) {
    GTEST_SKIP() << "NVML unavailable: " << el::cuda::nvml_unavailable_reason();
  }
  metrics::DeviceMonitor* mon = metrics::device_monitor(DeviceKind::cuda);
  ASSERT_NE(mon, nullptr);
  EXPECT_EQ(mon->unavailable_reason(0), "");
  auto energy = mon->energy_source(0);
  ASSERT_TRUE(energy->available()) << energy->unavailable_reason();
  const std::optional<double> j0 = energy->read_joules();
  ASSERT_TRUE(j0.has_value()) << energy->last_error();
  busy_gpu(500);  // NVML's counter advances in steps; give it several
  const metrics::DeviceReading r = mon->read(0);
  const std::optional<double> j1 = energy->read_joules();
  ASSERT_TRUE(j1.has_value()) << energy->last_error();
  ASSERT_TRUE(r.util && r.memory_used_bytes && r.sm_clock_mhz);
  EXPECT_GE(*r.util, 0.0);
  EXPECT_LE(*r.util, 1.0);
  EXPECT_GT(*r.memory_used_bytes, 0);
  EXPECT_GT(*r.sm_clock_mhz, 0.0);
  EXPECT_GT(*j1, *j0);
  std::cout << "[ nvml ] " << energy->description() << ": " << (*j1 - *j0) << " J, util " << *r.util
            << ", used " << *r.memory_used_bytes << " B, SM " << *r.sm_clock_mhz << " MHz, name "
            << mon->device_name(0) << "\n";
}

TEST(CudaSampler, RecordsGpuUtilMemoryClockAndEnergy) {
  EL_REQUIRE_GPU();
  if (!el::cuda::nvml_available()) {
    GTEST_SKIP() << "NVML unavailable: " << el::cuda::nvml_unavailable_reason();
  }
  metrics::SamplerOptions opt;
  opt.device = gpu();
  opt.interval_ms = 50;
  metrics::Sampler sampler(opt);
  ASSERT_TRUE(sampler.start().ok());
  busy_gpu(400);
  sampler.stop();
  const metrics::SampleSet set = sampler.recording();
  ASSERT_GE(set.samples.size(), 3u);
  EXPECT_TRUE(set.samples.back().device_util.has_value());
  EXPECT_TRUE(set.samples.back().sm_clock_mhz.has_value());
  EXPECT_TRUE(set.samples.back().device_memory_used_bytes.has_value());
  bool has_gpu_energy = false;
  for (const std::string& name : set.energy_sources) has_gpu_energy |= name == "gpu0_nvml";
  EXPECT_TRUE(has_gpu_energy);
  const metrics::MemoryEnergySummary sum = metrics::summarize_samples(set);
  ASSERT_TRUE(sum.mean_device_util.has_value());
  EXPECT_GT(*sum.mean_device_util, 0.0);
  EXPECT_TRUE(sum.peak_device_memory_used_bytes.has_value());
  EXPECT_TRUE(sum.avg_power_w.has_value());
  const nlohmann::json j = metrics::to_json(sum);
  EXPECT_TRUE(j.contains("mean_sm_clock_mhz"));
  std::cout << "[ sampler ] " << j.dump() << "\n";
}

TEST(CudaCalibrate, Bf16GemmPeak) {
  EL_REQUIRE_GPU();
  const Result<metrics::PeakCalibration> r = metrics::try_calibrate_peak_gemm(gpu(), 0.3, 4096);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const metrics::PeakCalibration& c = r.value();
  EXPECT_EQ(c.dtype, "bf16");
  EXPECT_EQ(c.device, "cuda:0");
  EXPECT_GT(c.gflops, 0.0);
  EXPECT_FALSE(c.device_name.empty());
  std::cout << "[ calibrate ] cuBLASLt bf16 4096^3: " << c.gflops / 1e3 << " TFLOP/s (best batch), "
            << c.mean_gflops / 1e3 << " mean; datasheet "
            << (c.datasheet_gflops ? std::to_string(*c.datasheet_gflops / 1e3) : "unknown")
            << " TFLOP/s for " << c.device_name << "\n";
  const Result<metrics::PeakCalibration> f =
      metrics::try_calibrate_peak_gemm(gpu(), 0.1, 1024, DType::f32);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f.value().dtype, "f32");
}

TEST(CudaTimer, EventsMeasureGpuTime) {
  EL_REQUIRE_GPU();
  Tensor a = Tensor::full({1024, 1024}, 1.f, DType::f32, gpu());
  Tensor c = Tensor::empty({1024, 1024}, DType::f32, gpu());
  el::cuda::EventTimer t;
  t.start();
  for (int i = 0; i < 5; ++i) gpu_backend().gemm(a, false, a, false, c, 1.f, 0.f);
  t.stop();
  EXPECT_GT(t.elapsed_ms(), 0.f);
  EXPECT_FLOAT_EQ(c.to_floats()[12345], 1024.f);
}

}  // namespace
}  // namespace el::test
