// GPTQ on single matrices: the Hessian accumulator, GPTQ beating RTN on
// correlated inputs, dead inputs, error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/ops.h"
#include "quant/gptq.h"
#include "quant_test_util.h"

namespace el::quant {
namespace {

using test::random_values;

// X[n, k] = Z[n, r] A[r, k] + noise: inputs with strongly correlated
// features, where error feedback across columns pays off.
std::vector<float> correlated_inputs(int64_t n, int64_t k, int64_t r, uint64_t seed) {
  const std::vector<float> z = random_values(n * r, seed), a = random_values(r * k, seed + 1),
                           noise = random_values(n * k, seed + 2, 0.05f);
  std::vector<float> x(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      float s = noise[static_cast<size_t>(i * k + j)];
      for (int64_t t = 0; t < r; ++t) s += z[static_cast<size_t>(i * r + t)] * a[static_cast<size_t>(t * k + j)];
      x[static_cast<size_t>(i * k + j)] = s;
    }
  }
  return x;
}

// ||X W^T - X Q^T||_F with Q the dequantized weight.
double output_error(const Tensor& x, const Tensor& w, const std::vector<float>& dq) {
  const std::vector<float> a = ops::linear(x, w).to_floats();
  const std::vector<float> b = ops::linear(x, Tensor::from_floats(dq, w.shape())).to_floats();
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e += (a[i] - b[i]) * static_cast<double>(a[i] - b[i]);
  return std::sqrt(e);
}

TEST(Gptq, HessianAccumulatorIsTwoXtXOverRows) {
  const int64_t k = 8;
  HessianAccumulator acc(k, Device::cpu());
  const std::vector<float> x1 = random_values(3 * k, 1), x2 = random_values(5 * k, 2);
  acc.add(Tensor::from_floats(x1, {3, k}));
  acc.add(Tensor::from_floats(x2, {1, 5, k}));  // any leading shape
  EXPECT_EQ(acc.rows(), 8);
  std::vector<float> all = x1;
  all.insert(all.end(), x2.begin(), x2.end());
  const std::vector<double> h = acc.hessian();
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double want = 0;
      for (int64_t r = 0; r < 8; ++r) want += static_cast<double>(all[r * k + i]) * all[r * k + j];
      EXPECT_NEAR(h[static_cast<size_t>(i * k + j)], 2.0 * want / 8.0, 1e-4);
    }
  }
}

struct GptqCase {
  int bits;
  int64_t group;
  bool symmetric;
};
class GptqVsRtn : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqVsRtn, LowerOutputErrorOnCorrelatedInputs) {
  const GptqCase c = GetParam();
  const int64_t n = 32, k = 128, rows = 512;
  const std::vector<float> xv = correlated_inputs(rows, k, 12, 21);
  const Tensor x = Tensor::from_floats(xv, {rows, k});
  const Tensor w = test::random_tensor({n, k}, 33, 0.05f);
  const std::vector<float> wv = w.to_floats();
  HessianAccumulator acc(k, Device::cpu());
  acc.add(x);
  const QuantSpec spec{c.bits, c.group, c.symmetric};
  GptqOptions opt;
  opt.block_size = 32;  // several lazy-update blocks (and groups across them when group > 32)
  auto g = gptq_quantize_host(wv.data(), n, k, acc.hessian(), spec, opt, "w");
  ASSERT_TRUE(g.ok()) << g.error().message();
  auto r = quantize_rtn_host(wv.data(), n, k, spec, "w");
  ASSERT_TRUE(r.ok());
  const double eg = output_error(x, w, dequantize_host(g.value()));
  const double er = output_error(x, w, dequantize_host(r.value()));
  EXPECT_LT(eg, 0.8 * er) << "GPTQ " << eg << " RTN " << er;
  // output_errors computes the same ratio from X^T X.
  const RowErrors re = output_errors(wv, dequantize_host(g.value()), n, k, acc.xtx());
  double e = 0, b = 0;
  for (int64_t i = 0; i < n; ++i) {
    e += re.err[static_cast<size_t>(i)];
    b += re.energy[static_cast<size_t>(i)];
  }
  const std::vector<float> y = ops::linear(x, w).to_floats();
  double y2 = 0;
  for (float v : y) y2 += static_cast<double>(v) * v;
  EXPECT_NEAR(e / b, eg * eg / y2, 1e-3 * eg * eg / y2 + 1e-9);
}

INSTANTIATE_TEST_SUITE_P(Specs, GptqVsRtn,
                         ::testing::Values(GptqCase{4, 32, true}, GptqCase{4, 64, false}, GptqCase{4, 0, true},
                                           GptqCase{8, 32, true}, GptqCase{8, 128, false}));

TEST(Gptq, DeadInputsAreZeroedAndTheRestQuantized) {
  const int64_t n = 8, k = 32, rows = 64;
  std::vector<float> xv = random_values(rows * k, 4);
  for (int64_t r = 0; r < rows; ++r) xv[static_cast<size_t>(r * k + 5)] = 0.f;  // input 5 never fires
  HessianAccumulator acc(k, Device::cpu());
  acc.add(Tensor::from_floats(xv, {rows, k}));
  const std::vector<float> w = random_values(n * k, 5, 0.1f);
  auto q = gptq_quantize_host(w.data(), n, k, acc.hessian(), QuantSpec{4, 16, true}, {}, "w");
  ASSERT_TRUE(q.ok()) << q.error().message();
  const std::vector<float> dq = dequantize_host(q.value());
  for (int64_t r = 0; r < n; ++r) EXPECT_EQ(dq[static_cast<size_t>(r * k + 5)], 0.f);
  for (float v : dq) EXPECT_TRUE(std::isfinite(v));
}

TEST(Gptq, ErrorsNameTheTensor) {
  const std::vector<float> w(8 * 48, 0.1f);
  auto bad_group = gptq_quantize_host(w.data(), 8, 48, std::vector<double>(48 * 48, 0.0), QuantSpec{4, 32, true},
                                      {}, "model.layers.1.mlp.down_proj.weight");
  ASSERT_FALSE(bad_group.ok());
  EXPECT_EQ(bad_group.error().where, "model.layers.1.mlp.down_proj.weight");
  EXPECT_NE(bad_group.error().what.find("not divisible by the group size 32"), std::string::npos);
  auto bad_h = gptq_quantize_host(w.data(), 8, 48, std::vector<double>(10, 0.0), QuantSpec{4, 16, true}, {}, "w");
  ASSERT_FALSE(bad_h.ok());
  EXPECT_NE(bad_h.error().what.find("Hessian has 10 entries"), std::string::npos);
  // Not positive definite even after damping: a negative diagonal.
  std::vector<double> h(48 * 48, 0.0);
  for (int i = 0; i < 48; ++i) h[static_cast<size_t>(i * 48 + i)] = i == 3 ? -100.0 : 1.0;
  GptqOptions o;
  o.damp = 0.0;
  auto npd = gptq_quantize_host(w.data(), 8, 48, h, QuantSpec{4, 16, true}, o, "w");
  ASSERT_FALSE(npd.ok());
  EXPECT_NE(npd.error().what.find("not positive definite"), std::string::npos);
  EXPECT_NE(npd.error().hint.find("--damp"), std::string::npos);
}

}  // namespace
}  // namespace el::quant
