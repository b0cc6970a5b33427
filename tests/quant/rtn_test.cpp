// RTN: error bounds, the packed layout, group parameters, error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/ops.h"
#include "quant/rtn.h"
#include "quant_test_util.h"

namespace el::quant {
namespace {

using test::random_tensor;

struct RtnCase {
  int bits;
  int64_t group;  // 0 = per channel
  bool symmetric;
};

class RtnRoundTrip : public ::testing::TestWithParam<RtnCase> {};

// |w - dq| <= s/2 for every element, with s the group's stored f16 scale.
TEST_P(RtnRoundTrip, ErrorAtMostHalfAStep) {
  const RtnCase c = GetParam();
  const int64_t n = 12, k = 256;
  const Tensor w = random_tensor({n, k}, 11 + c.bits + c.group, 0.05f);
  QuantSpec spec{c.bits, c.group, c.symmetric};
  auto q = quantize_rtn(w, spec, "w");
  ASSERT_TRUE(q.ok()) << q.error().message();
  const QuantizedWeight& qw = q.value();
  const int64_t g = c.group <= 0 ? k : c.group;
  EXPECT_EQ(qw.group_size, g);
  EXPECT_EQ(qw.qweight.dtype(), DType::u8);
  EXPECT_EQ(qw.qweight.shape(), (Shape{n, k * c.bits / 8}));
  EXPECT_EQ(qw.scales.dtype(), DType::f16);
  EXPECT_EQ(qw.scales.shape(), (Shape{n, k / g}));
  EXPECT_EQ(qw.zeros.defined(), !c.symmetric);
  const std::vector<float> wv = w.to_floats(), dq = dequantize(qw).to_floats(), s = qw.scales.to_floats();
  double err2 = 0, w2 = 0;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      const size_t at = static_cast<size_t>(r * k + i);
      const float step = s[static_cast<size_t>(r * (k / g) + i / g)];
      ASSERT_LE(std::abs(wv[at] - dq[at]), step / 2 * (1 + 1e-6f)) << "row " << r << " col " << i;
      err2 += (wv[at] - dq[at]) * (wv[at] - dq[at]);
      w2 += wv[at] * wv[at];
    }
  }
  // And the error is what the bits promise: int8 ~ 1%, int4 ~ 15% of the norm.
  EXPECT_LT(std::sqrt(err2 / w2), c.bits == 8 ? 0.012 : 0.2);
}

INSTANTIATE_TEST_SUITE_P(Specs, RtnRoundTrip,
                         ::testing::Values(RtnCase{4, 32, true}, RtnCase{4, 64, false}, RtnCase{4, 128, true},
                                           RtnCase{4, 0, false}, RtnCase{8, 32, false}, RtnCase{8, 64, true},
                                           RtnCase{8, 128, false}, RtnCase{8, 0, true}, RtnCase{4, -1, true}));

// The layout of ops/quant_layout.h: k = 2j in the low nibble of byte j.
TEST(Rtn, PackedNibbleOrderAndSymmetricRange) {
  // amax 8 on the negative side and 7 on the positive: s = 1 exactly, codes
  // -8..7 -> 0..15 (zero point 8), nothing clipped.
  const Tensor w = Tensor::from_floats({-8.f, 7.f, 0.f, 1.f, 3.f, -2.f}, {1, 6});
  auto q = quantize_rtn(w, QuantSpec{4, 0, true});
  ASSERT_TRUE(q.ok()) << q.error().message();
  const Tensor bytes = q.value().qweight;
  ASSERT_EQ(bytes.numel(), 3);
  EXPECT_EQ(bytes.data<uint8_t>()[0], 0xF0);  // k0 = code 0 (low), k1 = code 15 (high)
  EXPECT_EQ(bytes.data<uint8_t>()[1], 0x98);  // k2 = 8, k3 = 9
  EXPECT_EQ(bytes.data<uint8_t>()[2], 0x6B);  // k4 = 11, k5 = 6
  EXPECT_EQ(f16_to_f32(q.value().scales.data<uint16_t>()[0]), 1.f);
  EXPECT_EQ(dequantize(q.value()).to_floats(), w.to_floats());
  // 8 bits: one byte per code, zero point 128.
  const Tensor w8 = Tensor::from_floats({-128.f, 127.f, 0.f, 1.f}, {1, 4});
  auto q8 = quantize_rtn(w8, QuantSpec{8, 4, true});
  ASSERT_TRUE(q8.ok());
  const uint8_t* b = q8.value().qweight.data<uint8_t>();
  EXPECT_EQ((std::vector<int>{b[0], b[1], b[2], b[3]}), (std::vector<int>{0, 255, 128, 129}));
  EXPECT_EQ(dequantize(q8.value()).to_floats(), w8.to_floats());
}

TEST(Rtn, AsymmetricZeroPointAndZeroGroups) {
  // [1, 16]: range [0, 16] (0 included) over 15 steps, zero point 0.
  const Tensor w = Tensor::from_floats({1.f, 16.f, 4.f, 8.f, 0.f, 0.f, 0.f, 0.f}, {1, 8});
  auto q = quantize_rtn(w, QuantSpec{4, 4, false});
  ASSERT_TRUE(q.ok());
  const std::vector<float> z = q.value().zeros.to_floats(), s = q.value().scales.to_floats();
  EXPECT_EQ(z[0], 0.f);
  EXPECT_GE(s[0], 16.f / 15.f);  // rounded up to f16, never down
  EXPECT_LT(s[0], 16.f / 15.f * 1.001f);
  // An all-zero group dequantises to exactly zero.
  const std::vector<float> dq = dequantize(q.value()).to_floats();
  for (int i = 4; i < 8; ++i) EXPECT_EQ(dq[static_cast<size_t>(i)], 0.f);
  // Symmetric int8 of a positive-only group: s = max / 127.
  auto p = choose_group_params(std::vector<float>{0.5f, 1.27f}.data(), 2, 8, true);
  ASSERT_TRUE(p.ok());
  EXPECT_NEAR(p.value().scale, 0.01f, 1e-5f);
  EXPECT_EQ(p.value().zero, 128);
}

TEST(Rtn, QuantizesAnyFloatDtype) {
  const Tensor w32 = random_tensor({4, 64}, 3, 0.1f);
  Tensor wb = Tensor::empty({4, 64}, DType::bf16);
  wb.copy_from(w32);
  auto a = quantize_rtn(wb, QuantSpec{8, 32, true});
  ASSERT_TRUE(a.ok());
  const std::vector<float> wv = wb.to_floats(), dq = dequantize(a.value()).to_floats();
  EXPECT_LT(test::max_abs_diff(wv, dq), 0.01f);
}

TEST(Rtn, GroupSizeNotDividingKNamesTensorAndHint) {
  auto q = quantize_rtn(random_tensor({4, 48}, 1), QuantSpec{4, 32, true}, "model.layers.0.mlp.down_proj.weight");
  ASSERT_FALSE(q.ok());
  const Error& e = q.error();
  EXPECT_EQ(e.where, "model.layers.0.mlp.down_proj.weight");
  EXPECT_NE(e.what.find("K = 48"), std::string::npos) << e.what;
  EXPECT_NE(e.what.find("group size 32"), std::string::npos) << e.what;
  EXPECT_NE(e.hint.find("--group-size N dividing K, or 0 for per-channel"), std::string::npos) << e.hint;
}

TEST(Rtn, OddKForInt4AndBadSpecsAreErrors) {
  Status odd = check_quantizable("w.weight", 4, 45, QuantSpec{4, 0, true});
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.error().what.find("K = 45 of weight [4, 45] is odd"), std::string::npos) << odd.error().what;
  EXPECT_NE(odd.error().hint.find("--bits 8"), std::string::npos);
  EXPECT_TRUE(check_quantizable("w.weight", 4, 45, QuantSpec{8, 0, true}).ok());  // int8: any K
  Status bits = validate_quant_spec(QuantSpec{3, 128, true});
  ASSERT_FALSE(bits.ok());
  EXPECT_NE(bits.error().what.find("bits = 3"), std::string::npos);
  EXPECT_NE(bits.error().hint.find("4 or 8"), std::string::npos);
  EXPECT_FALSE(validate_quant_spec(QuantSpec{4, -2, true}).ok());
}

TEST(Rtn, NonFiniteWeightIsNamed) {
  std::vector<float> v(64, 0.1f);
  v[37] = std::nanf("");
  auto q = quantize_rtn(Tensor::from_floats(v, {2, 32}), QuantSpec{4, 16, true}, "lm_head.weight");
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().where, "lm_head.weight");
  EXPECT_NE(q.error().what.find("row 1, group 0"), std::string::npos) << q.error().what;
}

// The CPU kernel reads the layout as dequantize() does (one tile of 64 rows
// and several, a decode row and a batch).
TEST(Rtn, QuantLinearOpMatchesDequantizedLinear) {
  for (bool sym : {true, false}) {
    for (int bits : {4, 8}) {
      for (int64_t n : {24, 150}) {
        const Tensor w = random_tensor({n, 64}, 5 + bits, 0.1f);
        auto q = quantize_rtn(w, QuantSpec{bits, 16, sym});
        ASSERT_TRUE(q.ok());
        const Tensor bias = random_tensor({n}, 10);
        for (int64_t rows : {1, 15}) {
          const Tensor x = random_tensor({rows, 1, 64}, 9);
          const std::vector<float> got = ops::quant_linear(x, q.value(), bias).to_floats();
          const std::vector<float> want = ops::linear(x, dequantize(q.value()), bias).to_floats();
          EXPECT_LT(test::max_abs_diff(got, want), 1e-4f) << "bits " << bits << " sym " << sym << " n " << n;
        }
        // bf16 activations: y in bf16, same values up to bf16 rounding.
        const Tensor x = random_tensor({3, 5, 64}, 9);
        Tensor xb = Tensor::empty(x.shape(), DType::bf16);
        xb.copy_from(x);
        const Tensor yb = ops::quant_linear(xb, q.value());
        EXPECT_EQ(yb.dtype(), DType::bf16);
        EXPECT_LT(test::max_abs_diff(yb.to_floats(), ops::linear(xb, dequantize(q.value())).to_floats()), 0.05f);
      }
    }
  }
}

}  // namespace
}  // namespace el::quant
