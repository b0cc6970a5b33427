// Tests of the precision policy names, the fp16 LossScaler and AdamW's f32
// master weights (unit level; the end-to-end runs are in precision_test.cpp).
#include "train/loss_scaler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "train/optimizer.h"
#include "train/precision.h"

namespace el {
namespace {

TEST(Precision, NamesRoundTripAndUnknownIsReported) {
  for (Precision p : {Precision::f32, Precision::bf16, Precision::f16}) {
    auto r = parse_precision(precision_name(p));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value(), p);
  }
  EXPECT_EQ(precision_dtype(Precision::f32), DType::f32);
  EXPECT_EQ(precision_dtype(Precision::bf16), DType::bf16);
  EXPECT_EQ(precision_dtype(Precision::f16), DType::f16);
  EXPECT_TRUE(precision_uses_loss_scaling(Precision::f16));
  EXPECT_FALSE(precision_uses_loss_scaling(Precision::bf16));
  auto bad = parse_precision("fp8", "--precision");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().what.find("unknown precision 'fp8'"), std::string::npos);
  EXPECT_EQ(bad.error().where, "--precision");
  EXPECT_NE(bad.error().hint.find("f32, bf16, f16"), std::string::npos);
}

TEST(LossScaler, GrowsAfterIntervalOfFiniteSteps) {
  LossScaler s(LossScalerConfig{8.f, 3});
  EXPECT_EQ(s.scale(), 8.f);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 8.f);
  EXPECT_EQ(s.good_steps(), 2);
  EXPECT_TRUE(s.update(true));  // third consecutive finite step
  EXPECT_EQ(s.scale(), 16.f);
  EXPECT_EQ(s.good_steps(), 0);
  // An overflow restarts the count.
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 8.f);
  EXPECT_EQ(s.good_steps(), 0);
  // Defaults: 2^16, doubling after 2000 finite steps.
  LossScaler d;
  EXPECT_EQ(d.scale(), 65536.f);
  for (int i = 0; i < 1999; ++i) d.update(true);
  EXPECT_EQ(d.scale(), 65536.f);
  d.update(true);
  EXPECT_EQ(d.scale(), 131072.f);
}

TEST(LossScaler, BacksOffOnOverflowDownToTheMinimum) {
  LossScaler s(LossScalerConfig{4.f, 2000});
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 2.f);
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 1.f);
  EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 1.f);  // minimum 1
  // Never grows into inf.
  LossScaler big(LossScalerConfig{std::numeric_limits<float>::max(), 1});
  big.update(true);
  EXPECT_TRUE(std::isfinite(big.scale()));
}

TEST(LossScaler, SetStateRestoresAndValidates) {
  LossScaler s;
  ASSERT_TRUE(s.set_state(1024.f, 17).ok());
  EXPECT_EQ(s.scale(), 1024.f);
  EXPECT_EQ(s.good_steps(), 17);
  for (float bad : {0.f, -1.f, std::numeric_limits<float>::infinity(), NAN}) {
    Status st = s.set_state(bad, 0);
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.error().what.find("invalid loss scaler state"), std::string::npos);
  }
  EXPECT_FALSE(s.set_state(2.f, -1).ok());
  EXPECT_EQ(s.scale(), 1024.f);  // unchanged by the rejected states
}

TEST(LossScaler, GradsAllFiniteChecksEveryGradient) {
  Tensor a = Tensor::zeros({3}, DType::f16), b = Tensor::zeros({2, 2}, DType::bf16);
  Tensor c = Tensor::zeros({2});  // no gradient: skipped
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  c.set_requires_grad(true);
  ParameterList params = {{"a", a}, {"b", b}, {"c", c}};
  a.set_grad(Tensor::full({3}, 1.f, DType::f16));
  b.set_grad(Tensor::full({2, 2}, 2.f, DType::bf16));
  EXPECT_TRUE(grads_all_finite(params));
  Tensor g = Tensor::from_floats({1.f, 2.f, 1e6f}, {3});  // 1e6 overflows f16
  Tensor g16 = Tensor::empty({3}, DType::f16);
  g16.copy_from(g);
  a.set_grad(g16);
  EXPECT_FALSE(grads_all_finite(params));
}

// The reason for master weights: an update below half a bf16 ulp is lost
// when the bf16 parameter is updated in place, and kept by the f32 master.
TEST(AdamWMaster, SmallUpdatesAccumulateInTheMaster) {
  auto make = [](Tensor& p) {
    p = Tensor::full({4}, 1.0f, DType::bf16);
    p.set_requires_grad(true);
  };
  Tensor with_master, without;
  make(with_master);
  make(without);
  ParameterList params = {{"p", with_master}};
  AdamW opt(params, AdamWConfig{1e-4f, 0.9f, 0.95f, 1e-8f, 0.0f});
  ASSERT_EQ(opt.slots().size(), 1u);
  const Tensor& master = opt.slots()[0].master;
  ASSERT_TRUE(master.defined());
  EXPECT_EQ(master.dtype(), DType::f32);
  EXPECT_EQ(master.to_floats(), std::vector<float>(4, 1.0f));
  Tensor m = Tensor::zeros({4}), v = Tensor::zeros({4});
  for (int step = 1; step <= 30; ++step) {
    with_master.set_grad(Tensor::full({4}, 1.f, DType::bf16));
    opt.step(1e-4f);
    AdamWStep st;
    st.lr = 1e-4f;
    st.step = step;
    backend_for(Device::cpu()).adamw_update(without, Tensor::full({4}, 1.f, DType::bf16), m, v, st);
  }
  // Each update is ~lr = 1e-4, far below half a bf16 ulp at 1.0 (2^-9).
  EXPECT_EQ(without.to_floats(), std::vector<float>(4, 1.0f));
  for (float x : master.to_floats()) EXPECT_NEAR(x, 1.0f - 30e-4f, 2e-4f);
  // The parameter is the master rounded to nearest even: 0.99609375 = 1 - 2^-8.
  EXPECT_EQ(with_master.to_floats(), std::vector<float>(4, 0.99609375f));
  // f32 parameters get no master.
  Tensor f = Tensor::zeros({2});
  f.set_requires_grad(true);
  AdamW opt32(ParameterList{{"f", f}}, AdamWConfig{});
  EXPECT_FALSE(opt32.slots()[0].master.defined());
}

}  // namespace
}  // namespace el
