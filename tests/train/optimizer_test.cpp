// Tests of the optimizer layer: cosine schedule, clipping, AdamW bookkeeping.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "ops/ops.h"
#include "train/optimizer.h"

namespace el {
namespace {

TEST(CosineSchedule, WarmupThenCosineToMin) {
  CosineSchedule s{1.0f, 0.1f, 10, 110};
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f);   // (0 + 1) / 10
  EXPECT_FLOAT_EQ(s.lr_at(9), 1.0f);   // end of warm-up
  EXPECT_FLOAT_EQ(s.lr_at(10), 1.0f);  // cosine starts at the peak
  EXPECT_NEAR(s.lr_at(60), 0.55f, 1e-6);  // half-way: (max + min) / 2
  EXPECT_NEAR(s.lr_at(110), 0.1f, 1e-6);
  EXPECT_NEAR(s.lr_at(500), 0.1f, 1e-6);  // held at min after the schedule
  for (int64_t i = 10; i < 110; ++i) EXPECT_LE(s.lr_at(i + 1), s.lr_at(i) + 1e-7f);
}

TEST(CosineSchedule, NoWarmup) {
  CosineSchedule s{2.0f, 0.0f, 0, 4};
  EXPECT_FLOAT_EQ(s.lr_at(0), 2.0f);
  EXPECT_NEAR(s.lr_at(2), 1.0f, 1e-6);
}

TEST(Clip, ScaleBringsNormToMax) {
  EXPECT_FLOAT_EQ(clip_scale(0.5, 1.0f), 1.0f);
  EXPECT_NEAR(clip_scale(4.0, 1.0f), 0.25f, 1e-6);
  EXPECT_FLOAT_EQ(clip_scale(4.0, 0.0f), 1.0f);  // disabled
  EXPECT_FLOAT_EQ(clip_scale(NAN, 1.0f), 1.0f);  // a NaN is reported by the trainer, not clipped
}

TEST(AdamW, GlobalNormAndDecayOnlyOnMatrices) {
  Tensor w = Tensor::from_floats({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_floats({1, 1}, {2});
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  ParameterList params = {{"w", w}, {"b", b}};
  w.set_grad(Tensor::from_floats({3, 0, 0, 0}, {2, 2}));
  b.set_grad(Tensor::from_floats({0, 4}, {2}));
  EXPECT_NEAR(global_grad_norm(params), 5.0, 1e-9);

  // Zero gradients: only decoupled weight decay moves the matrix, never the vector.
  w.set_grad(Tensor::zeros({2, 2}));
  b.set_grad(Tensor::zeros({2}));
  AdamW opt(params, AdamWConfig{0.1f, 0.9f, 0.95f, 1e-8f, 0.5f});
  opt.step(0.1f);
  const auto wv = w.to_floats();
  EXPECT_NEAR(wv[0], 1.0f * (1 - 0.1f * 0.5f), 1e-6);
  EXPECT_EQ(b.to_floats(), (std::vector<float>{1, 1}));
  EXPECT_EQ(opt.steps_taken(), 1);
  opt.zero_grad();
  EXPECT_FALSE(w.has_grad());
}

TEST(AdamW, MinimisesAQuadratic) {
  Tensor x = Tensor::from_floats({3.0f, -2.0f, 0.5f}, {3});
  x.set_requires_grad(true);
  ParameterList params = {{"x", x}};
  AdamW opt(params, AdamWConfig{0.1f, 0.9f, 0.999f, 1e-8f, 0.0f});
  Tensor target = Tensor::zeros({1, 3});
  for (int i = 0; i < 300; ++i) {
    // loss = cross-entropy is not quadratic; use sum(x^2) via linear(x, x).
    Tensor xx = ops::linear(ops::reshape(x, {1, 3}), ops::reshape(x, {1, 3}));
    tape().backward(xx);
    opt.step(0.05f);
    opt.zero_grad();
  }
  for (float v : x.to_floats()) EXPECT_NEAR(v, 0.0f, 0.05f);
}

}  // namespace
}  // namespace el
