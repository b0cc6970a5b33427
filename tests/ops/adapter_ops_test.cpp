// adapter_ops_test.cpp — mul, mul_lastdim, dropout and linear's alpha: the
// ops LoRA/DoRA add (registry cases: reference, finite differences, bf16/f16).
#include <gtest/gtest.h>

#include <cmath>

#include "common/ops_harness.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

std::string shape_name(const std::string& prefix, const Shape& s) {
  std::string name = prefix;
  for (int64_t d : s) name += "_" + std::to_string(d);
  return name;
}

OpCase mul_case(Shape shape) {
  return {shape_name("x", shape), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng), random_tensor(shape, rng)};
            inst.differentiable = {true, true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> a = to_doubles(in[0]);
              const std::vector<double> b = to_doubles(in[1]);
              for (size_t i = 0; i < a.size(); ++i) a[i] *= b[i];
              return a;
            };
            return inst;
          }};
}

OpCase mul_lastdim_case(Shape shape) {
  return {shape_name("x", shape), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng), random_tensor({shape.back()}, rng)};
            inst.differentiable = {true, true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::mul_lastdim(in[0], in[1]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              const std::vector<double> v = to_doubles(in[1]);
              for (size_t i = 0; i < x.size(); ++i) x[i] *= v[i % v.size()];
              return x;
            };
            return inst;
          }};
}

OpCase mul_lastdim_bias_case(Shape shape) {
  return {shape_name("bias_x", shape), [=](Rng& rng) {
            OpInstance inst;
            const int64_t c = shape.back();
            inst.inputs = {random_tensor(shape, rng), random_tensor({c}, rng), random_tensor({c}, rng)};
            inst.differentiable = {true, true, true};
            inst.run = [](const std::vector<Tensor>& in) {
              return ops::mul_lastdim(in[0], in[1], in[2]);
            };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              const std::vector<double> v = to_doubles(in[1]), b = to_doubles(in[2]);
              for (size_t i = 0; i < x.size(); ++i) x[i] = x[i] * v[i % v.size()] + b[i % b.size()];
              return x;
            };
            return inst;
          }};
}

OpCase dropout_case(Shape shape, float p, uint64_t seed) {
  return {shape_name("x", shape) + "_p" + std::to_string(static_cast<int>(p * 100)),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng)};
            inst.differentiable = {true};
            inst.run = [=](const std::vector<Tensor>& in) { return ops::dropout(in[0], p, seed); };
            inst.reference = [=](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              for (size_t i = 0; i < x.size(); ++i) {
                x[i] = dropout_keep(seed, i, p) ? x[i] / (1.0 - p) : 0.0;
              }
              return x;
            };
            return inst;
          }};
}

OpCase scaled_linear_case(Shape x_shape, int64_t out, float alpha) {
  return {shape_name("x", x_shape) + "_out" + std::to_string(out), [=](Rng& rng) {
            OpInstance inst;
            const int64_t in = x_shape.back();
            inst.inputs = {random_tensor(x_shape, rng), random_tensor({out, in}, rng, 0.5f),
                           random_tensor({out}, rng)};
            inst.differentiable = {true, true, true};
            inst.run = [=](const std::vector<Tensor>& t) {
              return ops::linear(t[0], t[1], t[2], alpha);
            };
            inst.reference = [=](const std::vector<Tensor>& t) {
              const std::vector<double> x = to_doubles(t[0]), w = to_doubles(t[1]),
                                        b = to_doubles(t[2]);
              const int64_t n = t[0].numel() / in;
              std::vector<double> y(static_cast<size_t>(n * out));
              for (int64_t r = 0; r < n; ++r)
                for (int64_t o = 0; o < out; ++o) {
                  double s = 0;
                  for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
                  y[r * out + o] = alpha * s + b[o];
                }
              return y;
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Mul, OpCaseTest,
                         ::testing::Values(mul_case({1}), mul_case({3, 5}), mul_case({2, 7, 17})),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(MulLastdim, OpCaseTest,
                         ::testing::Values(mul_lastdim_case({1}), mul_lastdim_case({3, 5}),
                                           mul_lastdim_case({2, 7, 17}),
                                           mul_lastdim_case({33, 64}),
                                           mul_lastdim_bias_case({3, 5}),
                                           mul_lastdim_bias_case({2, 7, 17})),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(Dropout, OpCaseTest,
                         ::testing::Values(dropout_case({7}, 0.1f, 3), dropout_case({5, 13}, 0.5f, 9),
                                           dropout_case({2, 3, 64}, 0.25f, 1234)),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(ScaledLinear, OpCaseTest,
                         ::testing::Values(scaled_linear_case({3, 5}, 4, 2.0f),
                                           scaled_linear_case({2, 7, 16}, 9, 0.125f)),
                         op_case_name);

TEST(Dropout, KeepsAboutOneMinusPAndZeroIsIdentity) {
  const Tensor x = Tensor::full({100000}, 1.f);
  const std::vector<float> y = ops::dropout(x, 0.3f, 42).to_floats();
  int64_t kept = 0;
  for (float v : y) kept += v != 0.f;
  EXPECT_NEAR(static_cast<double>(kept) / 100000.0, 0.7, 0.01);
  EXPECT_TRUE(ops::dropout(x, 0.f, 42).same(x));
  // Another seed, another mask.
  const std::vector<float> z = ops::dropout(x, 0.3f, 43).to_floats();
  int64_t differ = 0;
  for (size_t i = 0; i < y.size(); ++i) differ += (y[i] != 0.f) != (z[i] != 0.f);
  EXPECT_GT(differ, 1000);
}

TEST(InvRowNorms, MatchesTheDefinition) {
  const Tensor x = Tensor::from_floats({3.f, 4.f, 0.f, 1.f, 1.f, 1.f}, {2, 3});
  Tensor out = Tensor::empty({2});
  backend_for(Device::cpu()).inv_row_norms(x, out);
  const std::vector<float> v = out.to_floats();
  EXPECT_FLOAT_EQ(v[0], 0.2f);
  EXPECT_NEAR(v[1], 1.0 / std::sqrt(3.0), 1e-7);
}

TEST(Dropout, BadProbabilityIsReported) {
  try {
    (void)ops::dropout(Tensor::zeros({3}), 1.0f, 1);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::dropout: p 1 outside [0, 1)"), std::string::npos)
        << e.what();
  }
}

}  // namespace el::test
