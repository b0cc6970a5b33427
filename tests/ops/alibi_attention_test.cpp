// alibi_attention_test.cpp — ALiBi inside ops::attention / attention_cached:
//  * registry cases (forward vs a naive f64 reference with the T x S bias
//    materialised, finite-difference gradients of q, k, v, bf16/f16) on
//    MHA, GQA, MQA, odd T, S > T offsets and a non-power-of-2 head count;
//  * the backend kernels' lse and backward at a threaded GQA shape;
//  * attention_cached with slopes at per-row positions vs the same reference;
//  * the slopes for H = 8 and H = 6 against hand-computed values;
//  * bad slope tensors are reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/ops_harness.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

struct AlibiShape {
  int64_t b, t, s, h, hkv, d;
  bool causal;
};

struct Ref {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive f64 attention with the bias slope[h] * (s - (t + S - T)) added to the
// scaled scores (the matrix the kernels never build); with dout, gradients.
// qpos_of(b, t) overrides the query position (cached attention).
Ref alibi_ref(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<float>& slopes,
              bool causal, const Tensor* dout = nullptr,
              const std::vector<int32_t>* row_pos = nullptr) {
  const std::vector<double> qv = to_doubles(q), kv = to_doubles(k), vv = to_doubles(v);
  std::vector<double> gv;
  if (dout) gv = to_doubles(*dout);
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), S = k.dim(1),
                Hkv = k.dim(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Ref r;
  r.out.assign(qv.size(), 0.0);
  r.lse.assign(static_cast<size_t>(B * H * T), -INFINITY);
  r.dq.assign(qv.size(), 0.0);
  r.dk.assign(kv.size(), 0.0);
  r.dv.assign(vv.size(), 0.0);
  auto qi = [&](int64_t b, int64_t t, int64_t h) { return ((b * T + t) * H + h) * D; };
  auto ki = [&](int64_t b, int64_t s, int64_t h) { return ((b * S + s) * Hkv + h) * D; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / (H / Hkv);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = row_pos ? (*row_pos)[static_cast<size_t>(b)] + t : t + S - T;
        const int64_t lim = causal ? std::clamp<int64_t>(i + 1, 0, S) : S;
        if (lim == 0) continue;
        std::vector<double> p(static_cast<size_t>(lim));
        double mx = -INFINITY;
        for (int64_t s = 0; s < lim; ++s) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qv[qi(b, t, h) + d] * kv[ki(b, s, hk) + d];
          p[s] = dot * scale + static_cast<double>(slopes[h]) * static_cast<double>(s - i);
          mx = std::max(mx, p[s]);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (double& x : p) x /= sum;
        r.lse[(b * H + h) * T + t] = mx + std::log(sum);
        for (int64_t s = 0; s < lim; ++s)
          for (int64_t d = 0; d < D; ++d) r.out[qi(b, t, h) + d] += p[s] * vv[ki(b, s, hk) + d];
        if (!dout) continue;
        double di = 0;
        for (int64_t d = 0; d < D; ++d) di += gv[qi(b, t, h) + d] * r.out[qi(b, t, h) + d];
        for (int64_t s = 0; s < lim; ++s) {
          double dp = 0;
          for (int64_t d = 0; d < D; ++d) dp += gv[qi(b, t, h) + d] * vv[ki(b, s, hk) + d];
          const double ds = p[s] * (dp - di);
          for (int64_t d = 0; d < D; ++d) {
            r.dv[ki(b, s, hk) + d] += p[s] * gv[qi(b, t, h) + d];
            r.dq[qi(b, t, h) + d] += scale * ds * kv[ki(b, s, hk) + d];
            r.dk[ki(b, s, hk) + d] += scale * ds * qv[qi(b, t, h) + d];
          }
        }
      }
    }
  return r;
}

// Steeper than the real slopes for small H, so the bias visibly moves the
// softmax in a short sequence; `real` takes ops::alibi_slope_values.
std::vector<float> test_slopes(int64_t h, bool real) {
  if (real) return ops::alibi_slope_values(h);
  std::vector<float> s(static_cast<size_t>(h));
  for (int64_t i = 0; i < h; ++i) s[static_cast<size_t>(i)] = 0.9f / static_cast<float>(i + 1);
  return s;
}

OpCase alibi_case(AlibiShape a, bool real_slopes = false) {
  const std::string name = "B" + std::to_string(a.b) + "_T" + std::to_string(a.t) + "_S" +
                           std::to_string(a.s) + "_H" + std::to_string(a.h) + "_Hkv" +
                           std::to_string(a.hkv) + "_D" + std::to_string(a.d) +
                           (a.causal ? "_causal" : "_full") + (real_slopes ? "_paper" : "");
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({a.b, a.t, a.h, a.d}, rng),
                           random_tensor({a.b, a.s, a.hkv, a.d}, rng),
                           random_tensor({a.b, a.s, a.hkv, a.d}, rng)};
            inst.differentiable = {true, true, true};
            const std::vector<float> sl = test_slopes(a.h, real_slopes);
            inst.run = [a, sl](const std::vector<Tensor>& in) {
              const Tensor slopes = Tensor::from_floats(sl, {a.h}).to(in[0].device());
              return ops::attention(in[0], in[1], in[2], a.causal, 0.0f, slopes);
            };
            inst.reference = [a, sl](const std::vector<Tensor>& in) {
              return alibi_ref(in[0], in[1], in[2], sl, a.causal).out;
            };
            inst.max_fd_elements = 24;
            return inst;
          }};
}

std::vector<OpCase> alibi_cases() {
  return {
      alibi_case({1, 1, 1, 4, 4, 8, true}),           // single token: the bias is 0
      alibi_case({2, 5, 5, 4, 4, 8, true}),           // MHA, odd T
      alibi_case({1, 19, 19, 4, 2, 16, true}),        // GQA
      alibi_case({1, 7, 7, 4, 1, 8, true}),           // MQA
      alibi_case({2, 9, 9, 6, 3, 8, true}),           // H = 6 (not a power of 2), GQA
      alibi_case({2, 9, 9, 6, 2, 8, true}, true),     // the paper's slopes for H = 6
      alibi_case({1, 5, 12, 4, 2, 8, true}),          // causal offset S - T = 7
      alibi_case({1, 1, 19, 4, 1, 8, true}),          // decode-like T = 1 against 19 keys
      alibi_case({1, 3, 11, 4, 2, 16, false}),        // non-causal: the same linear bias
      alibi_case({2, 17, 17, 8, 8, 8, true}, true),   // H = 8, the paper's slopes
  };
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(AlibiAttention, OpCaseTest, ::testing::ValuesIn(alibi_cases()),
                         op_case_name);

TEST(AlibiSlopes, PowerOfTwoHeadsAreGeometric) {
  // H = 8: 2^(-8 h / 8) = 2^-h, h = 1..8.
  const std::vector<float> s = ops::alibi_slope_values(8);
  const std::vector<float> want = {0.5f,     0.25f,     0.125f,     0.0625f,
                                   0.03125f, 0.015625f, 0.0078125f, 0.00390625f};
  EXPECT_EQ(s, want);
  // H = 16: ratio 2^-0.5, from 2^-0.5 down to 2^-8.
  const std::vector<float> s16 = ops::alibi_slope_values(16);
  ASSERT_EQ(s16.size(), 16u);
  EXPECT_FLOAT_EQ(s16[0], static_cast<float>(std::pow(2.0, -0.5)));
  EXPECT_FLOAT_EQ(s16[15], 1.0f / 256.0f);
}

TEST(AlibiSlopes, OtherHeadCountsInterleave) {
  // H = 6: the 4 slopes of H = 4 (2^-2, 2^-4, 2^-6, 2^-8), then slopes 1 and
  // 3 (1-based) of H = 8: 2^-1, 2^-3.
  const std::vector<float> s = ops::alibi_slope_values(6);
  const std::vector<float> want = {0.25f, 0.0625f, 0.015625f, 0.00390625f, 0.5f, 0.125f};
  EXPECT_EQ(s, want);
  // H = 12: 2^-1..2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  const std::vector<float> s12 = ops::alibi_slope_values(12);
  ASSERT_EQ(s12.size(), 12u);
  EXPECT_FLOAT_EQ(s12[7], 1.0f / 256.0f);
  EXPECT_FLOAT_EQ(s12[8], static_cast<float>(std::pow(2.0, -0.5)));
  EXPECT_FLOAT_EQ(s12[11], static_cast<float>(std::pow(2.0, -3.5)));
  EXPECT_EQ(ops::alibi_slope_values(1), std::vector<float>{1.0f / 256.0f});
  const Tensor t = ops::alibi_slopes(6, Device::cpu());
  EXPECT_EQ(t.shape(), (Shape{6}));
  EXPECT_EQ(t.to_floats(), want);
}

// The backend kernels themselves at a threaded shape: out, lse (with the
// bias) and all three gradients against the materialised-bias reference.
TEST(AlibiAttentionKernel, LargeGqaForwardBackwardAndLse) {
  for (bool causal : {true, false}) {
    Rng rng(23);
    const int64_t B = 2, T = 37, S = 45, H = 6, Hkv = 2, D = 24;
    const Tensor q = random_tensor({B, T, H, D}, rng);
    const Tensor k = random_tensor({B, S, Hkv, D}, rng);
    const Tensor v = random_tensor({B, S, Hkv, D}, rng);
    const Tensor dout = random_tensor({B, T, H, D}, rng);
    const std::vector<float> sl = test_slopes(H, false);
    const Tensor slopes = Tensor::from_floats(sl, {H});
    const Ref ref = alibi_ref(q, k, v, sl, causal, &dout);
    Backend& be = backend_for(Device::cpu());
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, H, T});
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    be.attention_forward(q, k, v, scale, causal, out, lse, slopes);
    const Tolerance tol = tolerance_for(DType::f32);
    EXPECT_TRUE(all_close(out.to_floats(), ref.out, tol, "out"));
    EXPECT_TRUE(all_close(lse.to_floats(), ref.lse, tol, "lse"));
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
           dv = Tensor::empty(v.shape());
    be.attention_backward(dout, q, k, v, out, lse, scale, causal, dq, dk, dv, slopes);
    const Tolerance gtol{1e-4, 1e-3};
    EXPECT_TRUE(all_close(dq.to_floats(), ref.dq, gtol, "dq"));
    EXPECT_TRUE(all_close(dk.to_floats(), ref.dk, gtol, "dk"));
    EXPECT_TRUE(all_close(dv.to_floats(), ref.dv, gtol, "dv"));
  }
}

// Cached attention: rows of one batch at different positions, T = 1 (decode)
// and T = 3 (a chunk after cached tokens), GQA and an odd head count.
TEST(AlibiAttentionCached, MatchesReferenceAtRowPositions) {
  struct Case {
    int64_t t, h, hkv, d;
    std::vector<int32_t> pos;
  };
  const Case cases[] = {{1, 4, 2, 8, {5, 0, 12}}, {3, 6, 3, 16, {2, 9, 0}}, {1, 6, 1, 8, {17, 3, 8}}};
  Rng rng(31);
  for (const Case& c : cases) {
    const int64_t B = static_cast<int64_t>(c.pos.size()), Smax = 21;
    const Tensor q = random_tensor({B, c.t, c.h, c.d}, rng);
    const Tensor kc = random_tensor({B, Smax, c.hkv, c.d}, rng);
    const Tensor vc = random_tensor({B, Smax, c.hkv, c.d}, rng);
    const std::vector<float> sl = test_slopes(c.h, false);
    const Tensor pos = Tensor::from_ints(c.pos, {B});
    const Tensor got =
        ops::attention_cached(q, kc, vc, pos, 0.0f, Tensor::from_floats(sl, {c.h}));
    const Ref ref = alibi_ref(q, kc, vc, sl, /*causal=*/true, nullptr, &c.pos);
    EXPECT_TRUE(all_close(got.to_floats(), ref.out, tolerance_for(DType::f32),
                          "attention_cached T " + std::to_string(c.t)));
  }
}

TEST(AlibiAttentionOp, BadSlopesAreReported) {
  const Tensor q = Tensor::zeros({1, 2, 4, 8}), k = Tensor::zeros({1, 2, 2, 8});
  try {
    (void)ops::attention(q, k, k, true, 0.0f, Tensor::zeros({3}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::attention: alibi_slopes f32[3] does not match q"),
              std::string::npos)
        << e.what();
  }
  try {
    (void)ops::attention_cached(q, k, k, Tensor::from_ints({0}, {1}), 0.0f,
                                Tensor::zeros({4}, DType::bf16));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("alibi_slopes"), std::string::npos) << e.what();
  }
}

}  // namespace el::test
