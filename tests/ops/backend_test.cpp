// backend_test.cpp — CPU backend kernels without autograd: gemm (dtypes,
// transposes, alpha/beta), fill/copy conversions, AdamW, elementwise helpers.
#include "ops/backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/ops_harness.h"
#include "cpu/cpu_math.h"

namespace el::test {
namespace {

Backend& cpu() { return backend_for(Device::cpu()); }

Tensor as_dtype(const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt);
  out.copy_from(t);
  return out;
}

// c = alpha op(a) op(b) + beta c0, in f64.
std::vector<double> gemm_ref(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c0,
                             double alpha, double beta) {
  const std::vector<double> av = to_doubles(a), bv = to_doubles(b), cv = to_doubles(c0);
  const int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const int64_t n = tb ? b.dim(0) : b.dim(1);
  std::vector<double> c(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double x = ta ? av[p * m + i] : av[i * k + p];
        const double y = tb ? bv[j * k + p] : bv[p * n + j];
        s += x * y;
      }
      c[i * n + j] = alpha * s + beta * cv[i * n + j];
    }
  return c;
}

}  // namespace

TEST(CpuGemm, AllTransposesWithAlphaBeta) {
  Rng rng(1);
  const int64_t m = 7, k = 33, n = 5;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, rng);
      const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, rng);
      const Tensor c0 = random_tensor({m, n}, rng);
      for (auto [alpha, beta] :
           {std::pair{1.f, 0.f}, std::pair{0.5f, 1.f}, std::pair{-2.f, 0.25f}}) {
        Tensor c = c0.clone();
        cpu().gemm(a, ta, b, tb, c, alpha, beta);
        EXPECT_TRUE(all_close(
            c.to_floats(), gemm_ref(a, ta, b, tb, c0, alpha, beta), tolerance_for(DType::f32),
            "ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta)));
      }
    }
}

// Sizes past the threading threshold: split by rows (M >= N) and by columns
// (decode-like M = 3), with every transpose, so each block's pointer offsets
// are exercised.
TEST(CpuGemm, ThreadedRowAndColumnSplits) {
  Rng rng(5);
  for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{70, 300, 40}, {3, 700, 301}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, rng);
        const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, rng);
        const Tensor c0 = random_tensor({m, n}, rng);
        Tensor c = c0.clone();
        cpu().gemm(a, ta, b, tb, c, 0.75f, 0.5f);
        EXPECT_TRUE(all_close(
            c.to_floats(), gemm_ref(a, ta, b, tb, c0, 0.75, 0.5), {1e-4, 1e-4},
            "m=" + std::to_string(m) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb)));
      }
  }
}

TEST(CpuGemm, BetaZeroIgnoresNanInC) {
  Rng rng(2);
  const Tensor a = random_tensor({3, 4}, rng), b = random_tensor({4, 2}, rng);
  Tensor c = Tensor::full({3, 2}, std::numeric_limits<float>::quiet_NaN());
  cpu().gemm(a, false, b, false, c, 1.f, 0.f);
  for (float x : c.to_floats()) EXPECT_TRUE(std::isfinite(x));
  // K = 0: c = beta c.
  Tensor c2 = Tensor::full({2, 3}, 2.f);
  cpu().gemm(Tensor::zeros({2, 0}), false, Tensor::zeros({0, 3}), false, c2, 1.f, 0.5f);
  EXPECT_EQ(c2.to_floats(), std::vector<float>(6, 1.f));
}

TEST(CpuGemm, HalfPrecisionInputsWithinTolerance) {
  Rng rng(3);
  for (DType dt : {DType::bf16, DType::f16}) {
    for (bool tb : {false, true}) {
      const Tensor a = random_tensor({17, 64}, rng);
      const Tensor b = random_tensor(tb ? Shape{9, 64} : Shape{64, 9}, rng);
      const Tensor c0 = Tensor::zeros({17, 9});
      Tensor c = c0.clone();
      cpu().gemm(as_dtype(a, dt), false, as_dtype(b, dt), tb, c, 1.f, 0.f);
      // Against the exact product of the f32 values: rounding of inputs only.
      // Each term x*y carries ~2 eps relative error; sqrt(K) terms add up.
      const Tolerance tol = tolerance_for(dt);
      const Tolerance scaled{tol.abs * 8, tol.rel};
      EXPECT_TRUE(
          all_close(c.to_floats(), gemm_ref(a, false, b, tb, c0, 1, 0), scaled, dtype_name(dt)));
      // And exactly (to f32) the product of the rounded values.
      EXPECT_TRUE(all_close(c.to_floats(),
                            gemm_ref(as_dtype(a, dt), false, as_dtype(b, dt), tb, c0, 1, 0),
                            tolerance_for(DType::f32), std::string(dtype_name(dt)) + " rounded"));
    }
  }
}

TEST(CpuGemm, ShapeMismatchIsReported) {
  Tensor c = Tensor::zeros({2, 3});
  try {
    cpu().gemm(Tensor::zeros({2, 4}), false, Tensor::zeros({5, 3}), false, c, 1.f, 0.f);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 4] @ op(b) [5, 3]"), std::string::npos) << e.what();
  }
}

TEST(CpuCopy, FloatConversionsRoundTrip) {
  const std::vector<float> v = {0.f, 1.f, -2.5f, 3.14159f, 1e-3f, -65504.f, 1e-8f, 123456.f};
  const Tensor f = Tensor::from_floats(v, {8});
  const std::vector<float> bf = as_dtype(f, DType::bf16).to_floats();
  const std::vector<float> hf = as_dtype(f, DType::f16).to_floats();
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(bf[i], bf16_to_f32(f32_to_bf16(v[i]))) << v[i];
    EXPECT_EQ(hf[i], f16_to_f32(f32_to_f16(v[i]))) << v[i];
  }
  // bf16 -> f16 -> bf16 and f32 -> bf16 -> f32 -> bf16 are stable.
  const Tensor b = as_dtype(f, DType::bf16);
  EXPECT_EQ(as_dtype(as_dtype(b, DType::f32), DType::bf16).to_floats(), b.to_floats());
  const Tensor h = as_dtype(f, DType::f16);
  EXPECT_EQ(as_dtype(as_dtype(h, DType::f32), DType::f16).to_floats(), h.to_floats());
}

TEST(CpuCopy, IntConversionsTruncateAndSaturate) {
  const Tensor f = Tensor::from_floats({1.9f, -1.9f, 300.f, -5.f, 3e10f, NAN}, {6});
  EXPECT_EQ(as_dtype(f, DType::i32).to_floats(),
            (std::vector<float>{1, -1, 300, -5, 2147483647.f, 0}));
  EXPECT_EQ(as_dtype(f, DType::u8).to_floats(), (std::vector<float>{1, 0, 255, 0, 255, 0}));
  // i64 keeps values f32 cannot hold exactly; i64 -> i32 saturates.
  Tensor big = Tensor::empty({2}, DType::i64);
  big.data<int64_t>()[0] = (int64_t{1} << 40) + 1;
  big.data<int64_t>()[1] = -3;
  Tensor back = Tensor::empty({2}, DType::i64);
  back.copy_from(as_dtype(big, DType::i64));
  EXPECT_EQ(back.data<int64_t>()[0], (int64_t{1} << 40) + 1);
  const Tensor i32 = as_dtype(big, DType::i32);
  EXPECT_EQ(i32.data<int32_t>()[0], std::numeric_limits<int32_t>::max());
  EXPECT_EQ(i32.data<int32_t>()[1], -3);
  // ints -> floats
  const Tensor ints = Tensor::from_ints({-7, 0, 42}, {3});
  EXPECT_EQ(as_dtype(ints, DType::bf16).to_floats(), (std::vector<float>{-7, 0, 42}));
  EXPECT_EQ(as_dtype(as_dtype(ints, DType::u8), DType::i64).to_floats(),
            (std::vector<float>{0, 0, 42}));
}

TEST(CpuFill, EveryDtype) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8}) {
    const Tensor t = Tensor::full({3, 5}, 2.75f, dt);
    const float want = dtype_is_float(dt) ? 2.75f : 2.f;
    EXPECT_EQ(t.to_floats(), std::vector<float>(15, want)) << dtype_name(dt);
  }
  // Large enough to run threaded.
  const Tensor big = Tensor::full({1 << 20}, -1.f);
  const std::vector<float> v = big.to_floats();
  EXPECT_EQ(v.front(), -1.f);
  EXPECT_EQ(v.back(), -1.f);
}

TEST(CpuElementwise, AxpyScaleAddSumSquares) {
  Rng rng(8);
  const Tensor x = random_tensor({1000}, rng);
  Tensor y = random_tensor({1000}, rng);
  const std::vector<double> xv = to_doubles(x), y0 = to_doubles(y);
  cpu().axpy(-0.5f, x, y);
  std::vector<double> want(1000);
  for (int i = 0; i < 1000; ++i) want[i] = y0[i] - 0.5 * xv[i];
  EXPECT_TRUE(all_close(y.to_floats(), want, tolerance_for(DType::f32), "axpy"));
  cpu().scale(y, 2.f);
  for (double& w : want) w *= 2;
  EXPECT_TRUE(all_close(y.to_floats(), want, tolerance_for(DType::f32), "scale"));
  Tensor s = Tensor::empty({1000});
  cpu().add(x, y, s);
  for (int i = 0; i < 1000; ++i) want[i] += xv[i];
  EXPECT_TRUE(all_close(s.to_floats(), want, tolerance_for(DType::f32), "add"));
  const Tensor big = random_tensor({300001}, rng);
  double ss = 0;
  for (double v : to_doubles(big)) ss += v * v;
  EXPECT_NEAR(cpu().sum_squares(big), ss, 1e-5 * ss);
}

// AdamW over 3 steps against a scalar f64 transcription of the update.
TEST(CpuAdamW, MatchesScalarReferenceOverThreeSteps) {
  for (DType pdt : {DType::f32, DType::bf16}) {
    Rng rng(12);
    const int64_t n = 37;
    const Tensor p0 = random_tensor({n}, rng);
    Tensor param = as_dtype(p0, pdt);
    Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
    std::vector<double> rp = to_doubles(param), rm(n, 0.0), rv(n, 0.0);
    AdamWStep st;
    st.lr = 1e-2f;
    st.beta1 = 0.9f;
    st.beta2 = 0.95f;
    st.eps = 1e-8f;
    st.weight_decay = 0.1f;
    st.grad_scale = 0.5f;
    for (int64_t step = 1; step <= 3; ++step) {
      st.step = step;
      const Tensor g = random_tensor({n}, rng);
      const std::vector<double> gv = to_doubles(g);
      cpu().adamw_update(param, g, m, v, st);
      for (int64_t i = 0; i < n; ++i) {
        const double gi = gv[i] * st.grad_scale;
        rm[i] = st.beta1 * rm[i] + (1 - st.beta1) * gi;
        rv[i] = st.beta2 * rv[i] + (1 - st.beta2) * gi * gi;
        const double mhat = rm[i] / (1 - std::pow(st.beta1, step));
        const double vhat = rv[i] / (1 - std::pow(st.beta2, step));
        rp[i] -= st.lr * (mhat / (std::sqrt(vhat) + st.eps) + st.weight_decay * rp[i]);
      }
      if (pdt == DType::bf16) {  // the stored parameter is rounded every step
        for (double& x : rp) x = bf16_to_f32(f32_to_bf16(static_cast<float>(x)));
      }
    }
    const Tolerance tol = pdt == DType::f32 ? Tolerance{1e-6, 1e-5} : tolerance_for(DType::bf16);
    EXPECT_TRUE(all_close(param.to_floats(), rp, tol, std::string("param ") + dtype_name(pdt)));
    EXPECT_TRUE(all_close(m.to_floats(), rm, {1e-6, 1e-5}, "m"));
    EXPECT_TRUE(all_close(v.to_floats(), rv, {1e-7, 1e-5}, "v"));
  }
}

TEST(CpuBackend, Identity) {
  EXPECT_STREQ(cpu().name(), "cpu");
  EXPECT_TRUE(cpu().device().is_cpu());
  EXPECT_EQ(&backend_for(Device::cpu()), &cpu());
}

}  // namespace el::test

namespace el::test {

// The vectorisable exp behind softmax, cross-entropy, SiLU and GELU.
TEST(CpuMath, FastExpAndTanhAccuracy) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.01237) {
    const double want = std::exp(x);
    worst = std::max(worst, std::abs(cpu::fast_exp(static_cast<float>(x)) -
                                     std::exp(static_cast<double>(static_cast<float>(x)))) /
                                want);
  }
  EXPECT_LT(worst, 4e-7);  // ~3 ulp
  EXPECT_EQ(cpu::fast_exp(-INFINITY), 0.f);
  EXPECT_EQ(cpu::fast_exp(-200.f), 0.f);
  EXPECT_TRUE(std::isfinite(cpu::fast_exp(1000.f)));
  EXPECT_EQ(cpu::fast_exp(0.f), 1.f);
  for (double x = -10; x <= 10; x += 0.0731) {
    EXPECT_NEAR(cpu::fast_tanh(static_cast<float>(x)), std::tanh(x), 2e-7) << x;
  }
}

}  // namespace el::test
