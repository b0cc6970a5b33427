// Whole training runs on the GPU through run_training (the trainer, the
// optimizer and the metrics, not single kernels): the first step's loss
// matches the CPU run of the same seed and precision, the GPU's memory is
// measured, and a diverging run stops with the step number (after the
// configured number of skipped steps).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/train_env.h"
#include "cuda_test_util.h"
#include "train/trainer.h"

namespace el::test {
namespace {

TrainConfig gpu_config(Precision precision) {
  TrainConfig c = base_train_config();
  c.device = gpu();
  c.precision = precision;
  c.calibration_seconds = 0.05;
  return c;
}

TEST(TrainOnGpu, FirstStepLossMatchesTheCpuAndMemoryIsMeasured) {
  EL_REQUIRE_GPU();
  for (Precision p : {Precision::f32, Precision::bf16}) {
    TrainConfig g = gpu_config(p);
    TrainConfig c = g;
    c.device = Device::cpu();
    auto gr = run_training(g);
    auto cr = run_training(c);
    ASSERT_TRUE(gr.ok()) << gr.error().message();
    ASSERT_TRUE(cr.ok()) << cr.error().message();
    const double gl = gr.value().steps.front().loss, cl = cr.value().steps.front().loss;
    // Same weights and batch: the step-1 loss differs only by summation order
    // and the activations' rounding.
    const double rel = p == Precision::f32 ? 1e-4 : 2e-2;
    EXPECT_NEAR(gl, cl, rel * std::abs(cl)) << precision_name(p);
    EXPECT_LT(gr.value().steps.back().loss, gl) << precision_name(p);
    const auto& me = gr.value().metrics["memory_energy"];
    ASSERT_TRUE(me.contains("peak_live_bytes")) << me.dump();
    EXPECT_GT(me["peak_live_bytes"].get<double>(), 0);
  }
}

// "... at step N" from the trainer's stop message.
int64_t stop_step(const Error& e) {
  const std::string key = "at step ";
  const size_t at = e.what.rfind(key);
  return at == std::string::npos ? -1 : std::stoll(e.what.substr(at + key.size()));
}

TEST(TrainOnGpu, NonFiniteLossStopsWithTheStepAfterTheAllowedSkips) {
  EL_REQUIRE_GPU();
  TrainConfig c = gpu_config(Precision::bf16);
  c.lr = c.min_lr = 1e30f;  // the first update sends the weights to inf
  c.warmup_steps = 0;
  c.grad_clip = 0;
  auto stopped = run_training(c);
  ASSERT_FALSE(stopped.ok());
  EXPECT_NE(stopped.error().what.find("non-finite"), std::string::npos)
      << stopped.error().message();
  const int64_t first = stop_step(stopped.error());
  EXPECT_GE(first, 1) << stopped.error().message();
  c.max_nonfinite_skips = 2;
  auto skipped = run_training(c);
  ASSERT_FALSE(skipped.ok());
  EXPECT_EQ(stop_step(skipped.error()), first + 2) << skipped.error().message();
}

}  // namespace
}  // namespace el::test
