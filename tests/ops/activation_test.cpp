// activation_test.cpp — swiglu and gelu: registry cases and checks.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

double gelu_ref(double x) {
  return 0.5 * x *
         (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
}

std::string shape_name(const Shape& s) {
  std::string name = "x";
  for (int64_t d : s) name += "_" + std::to_string(d);
  return name;
}

OpCase swiglu_case(Shape shape) {
  return {shape_name(shape), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng, 2.f), random_tensor(shape, rng)};
            inst.differentiable = {true, true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::swiglu(in[0], in[1]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              const std::vector<double> g = to_doubles(in[0]), u = to_doubles(in[1]);
              std::vector<double> y(g.size());
              for (size_t i = 0; i < g.size(); ++i) y[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
              return y;
            };
            return inst;
          }};
}

OpCase gelu_case(Shape shape, float scale) {
  return {shape_name(shape) + "_scale" + std::to_string(static_cast<int>(scale)), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng, scale)};
            inst.differentiable = {true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::gelu(in[0]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              for (double& v : x) v = gelu_ref(v);
              return x;
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(SwiGlu, OpCaseTest,
                         ::testing::Values(swiglu_case({1}), swiglu_case({3, 5}),
                                           swiglu_case({7, 17}), swiglu_case({2, 19, 64})),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(Gelu, OpCaseTest,
                         ::testing::Values(gelu_case({1}, 1.f), gelu_case({3, 5}, 1.f),
                                           gelu_case({7, 17}, 3.f), gelu_case({33, 64}, 1.f)),
                         op_case_name);

TEST(Activations, ExtremeInputsStayFinite) {
  const Tensor x = Tensor::from_floats({-1000.f, -90.f, -20.f, 0.f, 20.f, 90.f, 1000.f}, {7});
  const std::vector<float> g = ops::gelu(x).to_floats();
  const std::vector<float> s = ops::swiglu(x, Tensor::full({7}, 1.f)).to_floats();
  const std::vector<float> xv = x.to_floats();
  for (size_t i = 0; i < xv.size(); ++i) {
    EXPECT_TRUE(std::isfinite(g[i])) << xv[i];
    EXPECT_TRUE(std::isfinite(s[i])) << xv[i];
    const double want = xv[i] > 0 ? xv[i] : 0.0;  // both tend to relu far from 0
    if (std::abs(xv[i]) >= 20) {
      EXPECT_NEAR(g[i], want, 1e-4 * std::abs(want) + 1e-6);
      EXPECT_NEAR(s[i], want, 1e-4 * std::abs(want) + 1e-6);
    }
  }
}

TEST(Activations, SwiGluShapeMismatchIsReported) {
  try {
    (void)ops::swiglu(Tensor::zeros({2, 3}), Tensor::zeros({2, 4}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::swiglu: gate f32[2, 3] and up f32[2, 4]"), std::string::npos) << msg;
  }
}

}  // namespace el::test
