// attention_test.cpp — rope, rope_inv_freq and attention: registry cases
// (MHA/GQA/MQA, causal, non-causal, S > T and S < T causal offsets) and a
// naive f64 forward/backward reference for shapes large enough to run the
// threaded kernels.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// ---- rope ------------------------------------------------------------------------
std::vector<double> rope_ref(const Tensor& x, double theta, int64_t pos_offset) {
  const std::vector<double> xv = to_doubles(x);
  const int64_t b = x.dim(0), t = x.dim(1), h = x.dim(2), d = x.dim(3), half = d / 2;
  std::vector<double> y(xv.size());
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t tt = 0; tt < t; ++tt)
      for (int64_t hh = 0; hh < h; ++hh) {
        const int64_t base = ((bb * t + tt) * h + hh) * d;
        for (int64_t i = 0; i < half; ++i) {
          const double ang = static_cast<double>(pos_offset + tt) * std::pow(theta, -2.0 * i / d);
          const double x1 = xv[base + i], x2 = xv[base + half + i];
          y[base + i] = x1 * std::cos(ang) - x2 * std::sin(ang);
          y[base + half + i] = x2 * std::cos(ang) + x1 * std::sin(ang);
        }
      }
  return y;
}

OpCase rope_case(Shape shape, int64_t pos_offset) {
  std::string name = "x";
  for (int64_t d : shape) name += "_" + std::to_string(d);
  name += "_pos" + std::to_string(pos_offset);
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng)};
            inst.differentiable = {true};
            const int64_t d = shape[3];
            inst.run = [d, pos_offset](const std::vector<Tensor>& in) {
              return ops::rope(in[0], ops::rope_inv_freq(d, 10000.f, Device::cpu()), pos_offset);
            };
            inst.reference = [pos_offset](const std::vector<Tensor>& in) {
              return rope_ref(in[0], 10000.0, pos_offset);
            };
            return inst;
          }};
}

// ---- attention -------------------------------------------------------------------
struct AttnShape {
  int64_t b, t, s, h, hkv, d;
  bool causal;
};

std::string attn_name(const AttnShape& a) {
  return "B" + std::to_string(a.b) + "_T" + std::to_string(a.t) + "_S" + std::to_string(a.s) +
         "_H" + std::to_string(a.h) + "_Hkv" + std::to_string(a.hkv) + "_D" + std::to_string(a.d) +
         (a.causal ? "_causal" : "_full");
}

struct AttnRef {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive f64 attention; with dout given, also the gradients.
AttnRef attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                      const Tensor* dout = nullptr) {
  const std::vector<double> qv = to_doubles(q), kv = to_doubles(k), vv = to_doubles(v);
  std::vector<double> gv;
  if (dout) gv = to_doubles(*dout);
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), S = k.dim(1),
                Hkv = k.dim(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  AttnRef r;
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
        const int64_t lim = causal ? std::clamp<int64_t>(t + S - T + 1, 0, S) : S;
        if (lim == 0) continue;
        std::vector<double> p(static_cast<size_t>(lim));
        double mx = -INFINITY;
        for (int64_t s = 0; s < lim; ++s) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qv[qi(b, t, h) + d] * kv[ki(b, s, hk) + d];
          p[s] = dot * scale;
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

OpCase attention_case(AttnShape a) {
  return {attn_name(a), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({a.b, a.t, a.h, a.d}, rng),
                           random_tensor({a.b, a.s, a.hkv, a.d}, rng),
                           random_tensor({a.b, a.s, a.hkv, a.d}, rng)};
            inst.differentiable = {true, true, true};
            inst.run = [a](const std::vector<Tensor>& in) {
              return ops::attention(in[0], in[1], in[2], a.causal);
            };
            inst.reference = [a](const std::vector<Tensor>& in) {
              return attention_ref(in[0], in[1], in[2], a.causal).out;
            };
            inst.max_fd_elements = 24;
            return inst;
          }};
}

std::vector<OpCase> attention_cases() {
  return {
      attention_case({1, 1, 1, 4, 4, 8, true}),     // single token
      attention_case({2, 5, 5, 4, 4, 8, true}),     // MHA
      attention_case({1, 19, 19, 4, 2, 16, true}),  // GQA
      attention_case({1, 7, 7, 4, 1, 8, true}),     // MQA
      attention_case({2, 5, 5, 6, 3, 2, false}),    // GQA 6/3, non-causal, D=2
      attention_case({1, 3, 33, 4, 2, 16, false}),  // non-causal, S > T
      attention_case({1, 5, 12, 4, 2, 8, true}),    // causal with offset S - T = 7
      attention_case({1, 1, 19, 4, 1, 8, true}),    // decode step: T = 1 against a cache
      attention_case({1, 6, 3, 4, 4, 8, true}),     // S < T: first rows see no key
      attention_case({2, 19, 19, 6, 3, 8, false}),
  };
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Rope, OpCaseTest,
                         ::testing::Values(rope_case({1, 1, 1, 2}, 0), rope_case({2, 5, 3, 8}, 0),
                                           rope_case({1, 19, 4, 16}, 3),
                                           rope_case({3, 7, 2, 8}, 11)),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(Attention, OpCaseTest, ::testing::ValuesIn(attention_cases()),
                         op_case_name);

TEST(RopeOp, InvFreqAndInverseRotation) {
  const Tensor f = ops::rope_inv_freq(8, 10000.f, Device::cpu());
  ASSERT_EQ(f.shape(), (Shape{4}));
  const std::vector<float> fv = f.to_floats();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(fv[i], std::pow(10000.0, -2.0 * i / 8), 1e-7);
  // Rotating forward then backward gives the input back.
  Rng rng(5);
  const Tensor x = random_tensor({2, 9, 3, 8}, rng);
  Tensor y = Tensor::empty(x.shape()), z = Tensor::empty(x.shape());
  Backend& be = backend_for(Device::cpu());
  be.rope(x, f, 4, false, y);
  be.rope(y, f, 4, true, z);
  EXPECT_TRUE(all_close(z.to_floats(), to_doubles(x), {1e-5, 1e-5}, "rope round trip"));
  try {
    (void)ops::rope(Tensor::zeros({1, 2, 3, 5}), Tensor::zeros({2}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::rope: x is f32[1, 2, 3, 5]"), std::string::npos)
        << e.what();
  }
}

// Shapes past the threading threshold, GQA so the per-head dK/dV buffers are
// reduced, against the naive f64 forward, lse and backward.
TEST(AttentionKernel, LargeGqaMatchesNaiveReference) {
  for (bool causal : {true, false}) {
    Rng rng(11);
    const int64_t B = 2, T = 37, S = 45, H = 6, Hkv = 2, D = 24;
    const Tensor q = random_tensor({B, T, H, D}, rng);
    const Tensor k = random_tensor({B, S, Hkv, D}, rng);
    const Tensor v = random_tensor({B, S, Hkv, D}, rng);
    const Tensor dout = random_tensor({B, T, H, D}, rng);
    const AttnRef ref = attention_ref(q, k, v, causal, &dout);
    Backend& be = backend_for(Device::cpu());
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, H, T});
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    be.attention_forward(q, k, v, scale, causal, out, lse);
    const Tolerance tol = tolerance_for(DType::f32);
    EXPECT_TRUE(all_close(out.to_floats(), ref.out, tol, "out"));
    EXPECT_TRUE(all_close(lse.to_floats(), ref.lse, tol, "lse"));
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
           dv = Tensor::empty(v.shape());
    be.attention_backward(dout, q, k, v, out, lse, scale, causal, dq, dk, dv);
    const Tolerance gtol{1e-4, 1e-3};
    EXPECT_TRUE(all_close(dq.to_floats(), ref.dq, gtol, "dq"));
    EXPECT_TRUE(all_close(dk.to_floats(), ref.dk, gtol, "dk"));
    EXPECT_TRUE(all_close(dv.to_floats(), ref.dv, gtol, "dv"));
    // Deterministic: a second backward gives the same bits.
    Tensor dk2 = Tensor::empty(k.shape()), dq2 = Tensor::empty(q.shape()),
           dv2 = Tensor::empty(v.shape());
    be.attention_backward(dout, q, k, v, out, lse, scale, causal, dq2, dk2, dv2);
    EXPECT_EQ(dk.to_floats(), dk2.to_floats());
    EXPECT_EQ(dq.to_floats(), dq2.to_floats());
  }
}

TEST(AttentionKernel, RowsWithoutKeysGiveZeroAndMinusInfLse) {
  // T = 4 > S = 2, causal: query 0 and 1 see no key.
  Rng rng(2);
  const Tensor q = random_tensor({1, 4, 2, 8}, rng);
  const Tensor k = random_tensor({1, 2, 1, 8}, rng);
  const Tensor v = random_tensor({1, 2, 1, 8}, rng);
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({1, 2, 4});
  backend_for(Device::cpu()).attention_forward(q, k, v, 0.3f, true, out, lse);
  const std::vector<float> o = out.to_floats(), l = lse.to_floats();
  for (int i = 0; i < 2 * 2 * 8; ++i) EXPECT_EQ(o[i], 0.f);
  EXPECT_TRUE(std::isinf(l[0]) && l[0] < 0);
  EXPECT_TRUE(std::isfinite(l[2]));
}

TEST(AttentionOp, HeadMismatchIsReported) {
  try {
    (void)ops::attention(Tensor::zeros({1, 2, 6, 8}), Tensor::zeros({1, 2, 4, 8}),
                         Tensor::zeros({1, 2, 4, 8}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::attention"), std::string::npos) << msg;
    EXPECT_NE(msg.find("q heads 6 must be a multiple of kv heads 4"), std::string::npos) << msg;
  }
  try {
    (void)ops::attention(Tensor::zeros({1, 2, 4, 8}), Tensor::zeros({1, 2, 2, 8}),
                         Tensor::zeros({1, 3, 2, 8}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("k f32[1, 2, 2, 8] and v f32[1, 3, 2, 8]"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace el::test
