// QuantLinear: forward, the stacked path, parameter names.
#include <gtest/gtest.h>

#include "ops/ops.h"
#include "quant/quant_linear.h"
#include "quant_test_util.h"

namespace el::quant {
namespace {

using test::random_tensor;

// Stacked q/k/v-like layers filled with RTN codes of random weights.
std::vector<std::unique_ptr<QuantLinear>> make_group(const std::vector<int64_t>& outs, int64_t in,
                                                     const QuantSpec& spec, bool bias) {
  auto layers = make_stacked_quant_linears(in, outs, spec, bias, DType::f32, Device::cpu());
  EXPECT_TRUE(layers.ok());
  for (size_t i = 0; i < outs.size(); ++i) {
    const Tensor w = random_tensor({outs[i], in}, 100 + i, 0.1f);
    auto q = quantize_rtn(w, spec);
    EXPECT_TRUE(q.ok());
    QuantizedWeight& dst = layers.value()[i]->weight();
    dst.qweight.copy_from(q.value().qweight);
    dst.scales.copy_from(q.value().scales);
    if (!spec.symmetric) dst.zeros.copy_from(q.value().zeros);
    if (bias) layers.value()[i]->bias().copy_from(random_tensor({outs[i]}, 200 + i));
  }
  return std::move(layers.value());
}

TEST(QuantLinear, ForwardEqualsLinearWithDequantizedWeight) {
  auto group = make_group({16}, 64, QuantSpec{4, 32, false}, true);
  const QuantLinear& l = *group[0];
  const Tensor x = random_tensor({2, 3, 64}, 1);
  const std::vector<float> got = l.forward(x).to_floats();
  const std::vector<float> want = ops::linear(x, dequantize(l.weight()), l.bias()).to_floats();
  EXPECT_LT(test::max_abs_diff(got, want), 1e-4f);
  EXPECT_EQ(l.in_features(), 64);
  EXPECT_EQ(l.out_features(), 16);
}

TEST(QuantLinear, ForwardStackedEqualsSeparateForwards) {
  for (bool sym : {true, false}) {
    for (bool bias : {false, true}) {
      auto g = make_group({32, 16, 16}, 64, QuantSpec{4, 16, sym}, bias);
      const Tensor x = random_tensor({2, 5, 64}, 2);
      const Tensor y = g[0]->forward_stacked(x, {g[1].get(), g[2].get()});
      ASSERT_TRUE(y.defined()) << "sym " << sym << " bias " << bias;
      ASSERT_EQ(y.shape(), (Shape{2, 5, 64}));
      const std::vector<float> yv = y.to_floats();
      std::vector<std::vector<float>> parts;
      for (auto& l : g) parts.push_back(l->forward(x).to_floats());
      for (int64_t r = 0; r < 10; ++r) {
        int64_t col = 0;
        for (size_t p = 0; p < parts.size(); ++p) {
          const int64_t w = g[p]->out_features();
          for (int64_t c = 0; c < w; ++c, ++col) {
            EXPECT_NEAR(yv[static_cast<size_t>(r * 64 + col)], parts[p][static_cast<size_t>(r * w + c)], 1e-5f);
          }
        }
      }
    }
  }
}

TEST(QuantLinear, ForwardStackedDeclinesWhatItCannotStack) {
  auto a = make_group({16, 16}, 64, QuantSpec{4, 16, true}, false);
  auto b = make_group({16}, 64, QuantSpec{4, 16, true}, false);
  const Tensor x = random_tensor({1, 2, 64}, 3);
  EXPECT_FALSE(a[0]->forward_stacked(x, {b[0].get()}).defined());  // another buffer
  EXPECT_FALSE(a[1]->forward_stacked(x, {a[0].get()}).defined());  // out of order
  auto c = make_group({16}, 64, QuantSpec{8, 16, true}, false);
  EXPECT_FALSE(a[0]->forward_stacked(x, {c[0].get()}).defined());  // other bits
  Linear dense(64, 16, false, Device::cpu());
  EXPECT_FALSE(a[0]->forward_stacked(x, {&dense}).defined());
  EXPECT_TRUE(a[0]->forward_stacked(x, {a[1].get()}).defined());
}

TEST(QuantLinear, ParameterNames) {
  auto sym = make_group({8}, 32, QuantSpec{8, 16, true}, false);
  ParameterList p;
  sym[0]->collect_parameters("model.layers.0.mlp.down_proj", p);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "model.layers.0.mlp.down_proj.qweight");
  EXPECT_EQ(p[1].name, "model.layers.0.mlp.down_proj.scales");
  auto asym = make_group({8}, 32, QuantSpec{4, 16, false}, true);
  p.clear();
  asym[0]->collect_parameters("q", p);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[2].name, "q.zeros");
  EXPECT_EQ(p[3].name, "q.bias");
  EXPECT_FALSE(p[0].tensor.requires_grad());
}

}  // namespace
}  // namespace el::quant
