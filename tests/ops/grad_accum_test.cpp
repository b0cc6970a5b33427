// grad_accum_test.cpp — weight gradients added by the backward kernels
// themselves (GradSlot, autograd/tape.h): linear's dW GEMM with beta = 1 and
// grouped_linear's grouped_gemm_dw(accumulate = true) write into the
// parameter's gradient instead of a fresh buffer added afterwards. Two
// backward passes into the same parameters (two micro-batches of gradient
// accumulation) must leave the sum of the two gradients computed separately:
//  * linear (f32, bf16, and weight and activation dtypes mixed, alpha != 1),
//    a gradient shared with another tensor (copied, never written), the
//    multi-part fallback of linear_stacked, linear_split with a part that
//    gets no gradient in the second pass;
//  * grouped_linear with an expert without rows in one pass and unused rows,
//    the gradient updated in place, the multi-part fallback;
//  * Backend::grouped_gemm_dw(accumulate) directly: old value + product, an
//    expert without rows keeping its old value bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/moe_test_util.h"
#include "common/ops_harness.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

using Vec = std::vector<double>;

// The budget of "accumulated == first + second": f32 sums differ only in the
// last bits; a bf16 / f16 gradient is the sum rounded once (<= 2^-9 of it)
// while the separately computed second gradient was rounded on its own (<=
// 2^-9 of the terms), so 2^-8 of the terms' scale (f16: 2^-10).
Tolerance accum_tolerance(DType grad_dtype, double scale) {
  const double unit = grad_dtype == DType::bf16 ? 1.0 / 256 : grad_dtype == DType::f16 ? 1.0 / 1024
                                                                                       : 1e-6;
  return {unit * scale, unit};
}

Tensor as(const Tensor& t, DType dt) {
  Tensor c = Tensor::empty(t.shape(), dt, t.device());
  c.copy_from(t);
  return c;
}

// A fresh leaf copy of w that requires grad (one "model" per run).
Tensor param(const Tensor& w) {
  Tensor p = w.clone();
  p.set_requires_grad(true);
  return p;
}

// Runs the closures for out.grad = dy (one micro-batch's backward).
void backward_from(const Tensor& out, const Tensor& dy) {
  accumulate_grad(out, dy.clone());
  tape().backward(Tensor::zeros({1}));
}

Vec sum(const Vec& a, const Vec& b) {
  Vec s(a.size());
  for (size_t i = 0; i < a.size(); ++i) s[i] = a[i] + b[i];
  return s;
}

double max_abs(const Vec& a, const Vec& b) {
  double m = 0;
  for (double v : a) m = std::max(m, std::abs(v));
  for (double v : b) m = std::max(m, std::abs(v));
  return m;
}

::testing::AssertionResult is_sum(const Tensor& grad, const Vec& g1, const Vec& g2,
                                  const std::string& what) {
  return all_close(grad.to_floats(), sum(g1, g2), accum_tolerance(grad.dtype(), max_abs(g1, g2)),
                   what);
}

// ---- linear ----------------------------------------------------------------------------------

TEST(GradAccum, LinearWeightAndBiasSumOverMicroBatches) {
  struct Dtypes {
    DType x, w;
  };
  for (const Dtypes d : {Dtypes{DType::f32, DType::f32}, Dtypes{DType::bf16, DType::bf16},
                         Dtypes{DType::f32, DType::bf16}, Dtypes{DType::bf16, DType::f32}}) {
    const std::string what = std::string("x ") + dtype_name(d.x) + " w " + dtype_name(d.w);
    Rng rng(11);
    const int64_t in = 33, out = 17;
    const float alpha = 0.5f;
    const Tensor w = as(random_tensor({out, in}, rng, 0.3f), d.w);
    const Tensor b = as(random_tensor({out}, rng), d.w);
    const Tensor x1 = as(random_tensor({2, 7, in}, rng), d.x);
    const Tensor x2 = as(random_tensor({5, in}, rng), d.x);
    const Tensor dy1 = as(random_tensor({2, 7, out}, rng), d.x);
    const Tensor dy2 = as(random_tensor({5, out}, rng), d.x);
    auto pass = [&](const Tensor& pw, const Tensor& pb, const Tensor& x, const Tensor& dy) {
      tape().clear();
      backward_from(ops::linear(x, pw, pb, alpha), dy);
    };
    // Each micro-batch on its own model...
    Tensor w1 = param(w), b1 = param(b), w2 = param(w), b2 = param(b);
    pass(w1, b1, x1, dy1);
    pass(w2, b2, x2, dy2);
    // ... and both into one.
    Tensor wa = param(w), ba = param(b);
    pass(wa, ba, x1, dy1);
    const void* first = wa.grad().raw();
    pass(wa, ba, x2, dy2);
    ASSERT_EQ(wa.grad().dtype(), d.w) << what;
    EXPECT_EQ(wa.grad().raw(), first) << what << ": dW accumulated in place";
    EXPECT_TRUE(is_sum(wa.grad(), to_doubles(w1.grad()), to_doubles(w2.grad()), what + " dW"));
    EXPECT_TRUE(is_sum(ba.grad(), to_doubles(b1.grad()), to_doubles(b2.grad()), what + " db"));
  }
}

// A gradient buffer that another tensor also holds (share_grad, as add hands
// out) is read, never written: the weight gets a new buffer with the sum.
TEST(GradAccum, LinearSharedGradientIsCopiedNotWritten) {
  Rng rng(12);
  const Tensor w = random_tensor({6, 5}, rng), x = random_tensor({4, 5}, rng),
               dy = random_tensor({4, 6}, rng);
  const Tensor shared = random_tensor({6, 5}, rng);
  const std::vector<float> shared_before = shared.to_floats();
  Tensor other = param(shared);  // the second holder of the buffer
  Tensor wa = param(w), w1 = param(w);
  share_grad(other, shared);
  share_grad(wa, shared);
  tape().clear();
  backward_from(ops::linear(x, wa), dy);
  tape().clear();
  backward_from(ops::linear(x, w1), dy);
  EXPECT_EQ(shared.to_floats(), shared_before);
  EXPECT_NE(wa.grad().raw(), shared.raw());
  EXPECT_TRUE(is_sum(wa.grad(), to_doubles(shared), to_doubles(w1.grad()), "shared prior + dW"));
}

// Several weight parts (linear_stacked) keep the separate accumulation per part.
TEST(GradAccum, LinearStackedPartsFallBack) {
  Rng rng(13);
  const int64_t in = 9;
  const std::vector<int64_t> rows{4, 3, 5};
  const Tensor x1 = random_tensor({6, in}, rng), x2 = random_tensor({3, in}, rng);
  const Tensor dy1 = random_tensor({6, 12}, rng), dy2 = random_tensor({3, 12}, rng);
  const Tensor init = random_tensor({12, in}, rng);
  auto model = [&]() { return stacked_parts(init.clone(), rows); };
  auto pass = [](const std::vector<Tensor>& ws, const Tensor& x, const Tensor& dy) {
    tape().clear();
    backward_from(ops::linear_stacked(x, ws), dy);
  };
  const std::vector<Tensor> m1 = model(), m2 = model(), ma = model();
  pass(m1, x1, dy1);
  pass(m2, x2, dy2);
  pass(ma, x1, dy1);
  pass(ma, x2, dy2);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_TRUE(is_sum(ma[i].grad(), to_doubles(m1[i].grad()), to_doubles(m2[i].grad()),
                       "part " + std::to_string(i)));
  }
}

// linear_split: the second pass's dW GEMMs add their rows; the rows of a part
// that got no gradient keep the first pass's values.
TEST(GradAccum, LinearSplitKeepsRowsOfAPartWithoutGradient) {
  for (DType dt : {DType::f32, DType::bf16}) {
    Rng rng(14);
    const std::vector<int64_t> sizes{3, 5};
    const int64_t in = 7;
    const Tensor w = as(random_tensor({8, in}, rng), dt), b = as(random_tensor({8}, rng), dt);
    const Tensor x1 = as(random_tensor({4, in}, rng), dt), x2 = as(random_tensor({6, in}, rng), dt);
    const Tensor d10 = as(random_tensor({4, 3}, rng), dt), d11 = as(random_tensor({4, 5}, rng), dt);
    const Tensor d20 = as(random_tensor({6, 3}, rng), dt);
    auto first = [&](const Tensor& pw, const Tensor& pb) {  // both parts get a gradient
      tape().clear();
      const std::vector<Tensor> p = ops::linear_split(x1, pw, sizes, pb);
      accumulate_grad(p[0], d10.clone());
      accumulate_grad(p[1], d11.clone());
      tape().backward(Tensor::zeros({1}));
    };
    auto second = [&](const Tensor& pw, const Tensor& pb) {  // part 1 unused
      tape().clear();
      const std::vector<Tensor> p = ops::linear_split(x2, pw, sizes, pb);
      accumulate_grad(p[0], d20.clone());
      tape().backward(Tensor::zeros({1}));
    };
    Tensor w1 = param(w), b1 = param(b), w2 = param(w), b2 = param(b), wa = param(w), ba = param(b);
    first(w1, b1);
    second(w2, b2);
    first(wa, ba);
    const std::vector<float> after_first = wa.grad().to_floats();
    second(wa, ba);
    const std::string what = std::string("linear_split ") + dtype_name(dt);
    EXPECT_TRUE(is_sum(wa.grad(), to_doubles(w1.grad()), to_doubles(w2.grad()), what + " dW"));
    EXPECT_TRUE(is_sum(ba.grad(), to_doubles(b1.grad()), to_doubles(b2.grad()), what + " db"));
    const std::vector<float> g = wa.grad().to_floats();
    for (int64_t i = 3 * in; i < 8 * in; ++i) {
      ASSERT_EQ(g[i], after_first[i]) << what << ": row of the unused part changed at " << i;
    }
  }
}

// ---- grouped_linear ----------------------------------------------------------------------

struct MoePass {
  Tensor x, dy, offsets;
};

void grouped_pass(const std::vector<Tensor>& ws, const MoePass& p) {
  tape().clear();
  backward_from(ops::grouped_linear(p.x, ws, p.offsets), p.dy);
}

// Expert 1 has no rows in the first pass (its gradient starts as zeros),
// expert 0 none in the second (it must keep the first pass's values), and the
// second pass leaves 2 rows unused (capacity-limited grouping).
TEST(GradAccum, GroupedLinearSumsOverMicroBatchesWithEmptyExperts) {
  struct Dtypes {
    DType x, w;
  };
  for (const Dtypes d : {Dtypes{DType::f32, DType::f32}, Dtypes{DType::bf16, DType::bf16},
                         Dtypes{DType::bf16, DType::f32}}) {
    const std::string what = std::string("x ") + dtype_name(d.x) + " w " + dtype_name(d.w);
    Rng rng(21);
    const int64_t E = 4, K = 6, O = 5;
    const Tensor w = as(random_tensor({E, O, K}, rng, 0.5f), d.w);
    const MoePass p1{as(random_tensor({9, K}, rng), d.x), as(random_tensor({9, O}, rng), d.x),
                     offsets_of({3, 0, 4, 2})};
    const MoePass p2{as(random_tensor({10, K}, rng), d.x), as(random_tensor({10, O}, rng), d.x),
                     offsets_of({0, 5, 2, 1})};
    const Tensor w1 = param(w), w2 = param(w), wa = param(w);
    grouped_pass({w1}, p1);
    grouped_pass({w2}, p2);
    grouped_pass({wa}, p1);
    const void* first = wa.grad().raw();
    const std::vector<float> after_first = wa.grad().to_floats();
    grouped_pass({wa}, p2);
    ASSERT_EQ(wa.grad().dtype(), d.w) << what;
    EXPECT_EQ(wa.grad().raw(), first) << what << ": dW accumulated in place";
    EXPECT_TRUE(is_sum(wa.grad(), to_doubles(w1.grad()), to_doubles(w2.grad()), what + " dW"));
    // Expert 0 received nothing in the second pass: bit for bit its first gradient.
    const std::vector<float> g = wa.grad().to_floats();
    for (int64_t i = 0; i < O * K; ++i) ASSERT_EQ(g[i], after_first[i]) << what << " expert 0";
    // Expert 1 had no rows in the first pass: zeros then, the second's product now.
    const std::vector<float> g2 = w2.grad().to_floats();
    for (int64_t i = O * K; i < 2 * O * K; ++i) {
      ASSERT_EQ(after_first[i], 0.f) << what << " expert 1 after the first pass";
      ASSERT_EQ(g[i], g2[i]) << what << " expert 1";
    }
  }
}

// Weights as several row blocks of one buffer: the per-part fallback.
TEST(GradAccum, GroupedLinearPartsFallBack) {
  Rng rng(22);
  const int64_t E = 3, K = 5, O = 4;
  const Tensor init = random_tensor({E, O, K}, rng);
  const MoePass p1{random_tensor({9, K}, rng), random_tensor({9, O}, rng), offsets_of({3, 0, 5})};
  const MoePass p2{random_tensor({7, K}, rng), random_tensor({7, O}, rng), offsets_of({2, 5, 0})};
  auto model = [&]() {
    const Tensor rows = init.clone().view({E * O, K});
    std::vector<Tensor> ws;
    for (int64_t r = 0; r < E * O; r += O / 2) {
      ws.push_back(rows.slice0(r, r + O / 2));
      ws.back().set_requires_grad(true);
    }
    return ws;
  };
  const std::vector<Tensor> m1 = model(), m2 = model(), ma = model();
  grouped_pass(m1, p1);
  grouped_pass(m2, p2);
  grouped_pass(ma, p1);
  grouped_pass(ma, p2);
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_TRUE(is_sum(ma[i].grad(), to_doubles(m1[i].grad()), to_doubles(m2[i].grad()),
                       "part " + std::to_string(i)));
  }
}

// The backend contract itself: dw = old + dy_e^T x_e, an expert without rows
// untouched (bit for bit, also through bf16 storage), and without accumulate
// that expert's rows are zeroed.
TEST(GradAccum, GroupedGemmDwAccumulateKeepsEmptyExperts) {
  Backend& be = backend_for(Device::cpu());
  for (DType dt : {DType::f32, DType::bf16}) {
    Rng rng(23);
    const int64_t E = 3, M = 11, K = 7, O = 6;
    const Tensor offsets = offsets_of({4, 0, 6});  // one unused row
    const Tensor dy = as(random_tensor({M, O}, rng), dt), x = as(random_tensor({M, K}, rng), dt);
    const Tensor old = as(random_tensor({E, O, K}, rng), dt);
    Tensor fresh = as(random_tensor({E, O, K}, rng), dt);  // overwritten everywhere
    be.grouped_gemm_dw(dy, x, offsets, fresh);
    Tensor acc = old.clone();
    be.grouped_gemm_dw(dy, x, offsets, acc, /*accumulate=*/true);
    const std::string what = std::string("grouped_gemm_dw ") + dtype_name(dt);
    const std::vector<float> f = fresh.to_floats(), a = acc.to_floats(), o = old.to_floats();
    for (int64_t i = O * K; i < 2 * O * K; ++i) {
      ASSERT_EQ(f[i], 0.f) << what << ": expert without rows, no accumulate";
      ASSERT_EQ(a[i], o[i]) << what << ": expert without rows, accumulate";
    }
    EXPECT_TRUE(is_sum(acc, to_doubles(old), to_doubles(fresh), what));
  }
}

}  // namespace
}  // namespace el::test
