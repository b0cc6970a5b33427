// Tests for metrics/calibrate.h: the GEMM peak is a positive finite number.
#include "metrics/calibrate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "ops/backend.h"

namespace el::metrics {
namespace {

TEST(Calibrate, CpuGemmPeakIsPositive) {
  // Small budget and size keep the test fast; the bench uses the defaults.
  const Result<PeakCalibration> r = try_calibrate_peak_gemm(Device::cpu(), 0.05, 256);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const PeakCalibration& c = r.value();
  EXPECT_TRUE(std::isfinite(c.gflops));
  EXPECT_GT(c.gflops, 0.0);
  EXPECT_EQ(c.m, 256);
  EXPECT_EQ(c.n, 256);
  EXPECT_EQ(c.k, 256);
  EXPECT_GE(c.reps, 3);
  EXPECT_GE(c.seconds, 0.05);
  // The mean is over all repetitions; the peak is the best timed batch.
  EXPECT_NEAR(c.mean_gflops, 2.0 * 256 * 256 * 256 * c.reps / c.seconds / 1e9,
              1e-9 * c.mean_gflops);
  ASSERT_FALSE(c.batch_gflops.empty());
  EXPECT_EQ(c.gflops, *std::max_element(c.batch_gflops.begin(), c.batch_gflops.end()));
  EXPECT_GE(c.gflops, c.mean_gflops);
  EXPECT_EQ(c.device, "cpu");
  const nlohmann::json j = to_json(c);
  EXPECT_DOUBLE_EQ(j["gflops"].get<double>(), c.gflops);
  std::cout << "[ calibrate ] " << j.dump() << "\n";
}

TEST(Calibrate, AutoSizeFitsBudget) {
  const Result<PeakCalibration> r = try_calibrate_peak_gemm(Device::cpu(), 0.1);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_GE(r.value().n, 256);
  EXPECT_LE(r.value().n, 1024);
  EXPECT_GT(r.value().gflops, 0.0);
}

TEST(Calibrate, BadArgumentsAreErrors) {
  Result<PeakCalibration> r = try_calibrate_peak_gemm(Device::cpu(), 0.0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("min_seconds must be > 0"), std::string::npos);
  r = try_calibrate_peak_gemm(Device::cpu(), 0.1, -4);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("size must be >= 0"), std::string::npos);
}

TEST(Calibrate, MissingDeviceIsAnError) {
  if (try_backend_for(Device::cuda(7)).ok()) GTEST_SKIP() << "a CUDA backend is registered";
  const Result<PeakCalibration> r = try_calibrate_peak_gemm(Device::cuda(7), 0.1);
  ASSERT_FALSE(r.ok());  // this CPU-only test build has no CUDA backend
  EXPECT_NE(r.error().message().find("no backend for device cuda:7"), std::string::npos);
}

TEST(Calibrate, ThrowingFormThrowsTheError) {
  EXPECT_GT(calibrate_peak_gemm(Device::cpu(), 0.02, 64).gflops, 0.0);
  try {
    (void)calibrate_peak_gemm(Device::cpu(), -1.0);
    FAIL() << "expected el::Exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("min_seconds must be > 0, got -1"), std::string::npos);
  }
}

TEST(Mfu, Ratio) {
  EXPECT_DOUBLE_EQ(mfu(25e9, 100e9), 0.25);
  EXPECT_TRUE(std::isnan(mfu(1e9, 0.0)));
  EXPECT_TRUE(std::isnan(mfu(1e9, -1.0)));
}

}  // namespace
}  // namespace el::metrics
