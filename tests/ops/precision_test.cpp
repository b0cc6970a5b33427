// precision_test.cpp — mixed precision below the model: the ops' dtype rules
// and their error messages, the tape's backward seed, and the backend kernels
// added for training in bf16/f16 (adamw_update_master, all_finite) and the
// CPU backend's f32 staging of read-write arguments. The per-op bf16/f16
// comparisons against f32 run for every registered case as
// OpCaseTest.HalfPrecisionMatchesF32 (op_registry_test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <span>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

Backend& cpu() { return backend_for(Device::cpu()); }

Tensor as_dtype(const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt);
  out.copy_from(t);
  return out;
}

std::string exception_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Exception& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(OpDtypes, MismatchedFloatInputsAreReported) {
  const Tensor a = Tensor::zeros({2, 3}, DType::bf16);
  const Tensor b = Tensor::zeros({2, 3}, DType::f32);
  std::string msg = exception_message([&] { (void)ops::add(a, b); });
  EXPECT_NE(msg.find("ops::add: b is f32[2, 3] but a is bf16[2, 3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("must share one dtype"), std::string::npos) << msg;
  msg = exception_message([&] { (void)ops::swiglu(a, b); });
  EXPECT_NE(msg.find("ops::swiglu: up is f32[2, 3] but gate is bf16[2, 3]"), std::string::npos)
      << msg;
  msg = exception_message(
      [&] { (void)ops::rmsnorm(a, Tensor::full({3}, 1.f, DType::f16), 1e-5f); });
  EXPECT_NE(msg.find("ops::rmsnorm: w is f16[3] but x is bf16[2, 3]"), std::string::npos) << msg;
  const Tensor q = Tensor::zeros({1, 2, 2, 4}, DType::f16);
  msg = exception_message([&] { (void)ops::attention(q, Tensor::zeros({1, 2, 2, 4}), q); });
  EXPECT_NE(msg.find("ops::attention: k is f32[1, 2, 2, 4] but q is f16[1, 2, 2, 4]"),
            std::string::npos)
      << msg;
  // rope's frequency table must stay f32.
  msg = exception_message([&] {
    (void)ops::rope(Tensor::zeros({1, 2, 1, 4}, DType::bf16), Tensor::zeros({2}, DType::bf16));
  });
  EXPECT_NE(msg.find("ops::rope: inv_freq is bf16[2], expected dtype f32"), std::string::npos)
      << msg;
  // Integer activations are not accepted.
  msg = exception_message([&] { (void)ops::gelu(Tensor::zeros({3}, DType::i32)); });
  EXPECT_NE(msg.find("ops::gelu: x is i32[3], expected a float dtype"), std::string::npos) << msg;
  // linear's bias must have x's or w's dtype.
  msg = exception_message([&] {
    (void)ops::linear(Tensor::zeros({2, 3}, DType::bf16), Tensor::zeros({4, 3}, DType::f32),
                      Tensor::zeros({4}, DType::f16));
  });
  EXPECT_NE(msg.find("ops::linear: bias is f16[4], expected the dtype of x bf16[2, 3] or of w "
                     "f32[4, 3]"),
            std::string::npos)
      << msg;
}

// Outputs take the activation dtype, statistics and the loss stay f32, and
// each gradient has its own tensor's dtype (linear: bf16 x, f32 w).
TEST(OpDtypes, OutputsStatisticsAndGradients) {
  Rng rng(3);
  Tensor x = as_dtype(random_tensor({3, 8}, rng), DType::bf16);
  Tensor w = random_tensor({5, 8}, rng, 0.3f);
  Tensor b = random_tensor({5}, rng);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor y = ops::linear(x, w, b);
  EXPECT_EQ(y.dtype(), DType::bf16);
  Tensor loss = ops::cross_entropy(y, Tensor::from_ints({1, 4, 0}, {3}));
  EXPECT_EQ(loss.dtype(), DType::f32);
  tape().backward(loss);
  EXPECT_EQ(x.grad().dtype(), DType::bf16);
  EXPECT_EQ(w.grad().dtype(), DType::f32);
  EXPECT_EQ(b.grad().dtype(), DType::f32);
  // The same computation in f32 on the rounded x agrees within bf16 tolerance.
  Tensor x32 = as_dtype(x, DType::f32);
  Tensor w32 = w.clone(), b32 = b.clone();
  x32.set_requires_grad(true);
  w32.set_requires_grad(true);
  b32.set_requires_grad(true);
  Tensor loss32 = ops::cross_entropy(ops::linear(x32, w32, b32), Tensor::from_ints({1, 4, 0}, {3}));
  tape().backward(loss32);
  EXPECT_NEAR(loss.item(), loss32.item(), 2e-2 * loss32.item());
  const std::vector<float> gw = w32.grad().to_floats();
  EXPECT_TRUE(all_close(w.grad().to_floats(), std::vector<double>(gw.begin(), gw.end()),
                        tolerance_for(DType::bf16), "dW"));
}

TEST(TapeSeed, ScalesEveryGradient) {
  Rng rng(8);
  const Tensor logits0 = random_tensor({4, 7}, rng);
  const Tensor t = Tensor::from_ints({1, 2, 3, 6}, {4});
  Tensor a = logits0.clone(), b = logits0.clone();
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  tape().backward(ops::cross_entropy(a, t));
  tape().backward(ops::cross_entropy(b, t), 1024.f);
  const std::vector<float> ga = a.grad().to_floats(), gb = b.grad().to_floats();
  for (size_t i = 0; i < ga.size(); ++i) EXPECT_FLOAT_EQ(gb[i], 1024.f * ga[i]) << i;
}

// ---- backend: AdamW with an f32 master ------------------------------------------

TEST(AdamWMasterKernel, MatchesScalarReferenceAndRoundsTheMaster) {
  Rng rng(12);
  const int64_t n = 70000;  // past the OpenMP threshold
  for (DType pdt : {DType::bf16, DType::f16}) {
    for (DType gdt : {DType::f32, DType::bf16, DType::f16}) {
      const Tensor master0 = random_tensor({n}, rng);
      const Tensor grad = as_dtype(random_tensor({n}, rng, 0.1f), gdt);
      const Tensor m0 = random_tensor({n}, rng, 0.01f);
      Tensor v0 = random_tensor({n}, rng, 0.01f);
      for (float& x : std::span<float>(v0.data<float>(), n)) x = x * x;
      Tensor master = master0.clone(), m = m0.clone(), v = v0.clone();
      Tensor param = as_dtype(master0, pdt);
      AdamWStep st;
      st.lr = 1e-2f;
      st.beta1 = 0.9f;
      st.beta2 = 0.95f;
      st.eps = 1e-8f;
      st.weight_decay = 0.1f;
      st.grad_scale = 0.25f;
      st.step = 3;
      cpu().adamw_update_master(param, grad, master, m, v, st);
      // Scalar reference in f64.
      const std::vector<float> g = grad.to_floats(), w0 = master0.to_floats(), mm = m0.to_floats(),
                               vv = v0.to_floats();
      std::vector<double> want_w(n), want_m(n), want_v(n);
      const double bc1 = 1 - std::pow(0.9, 3), bc2 = 1 - std::pow(0.95, 3);
      for (int64_t i = 0; i < n; ++i) {
        const double gi = static_cast<double>(g[i]) * 0.25;
        want_m[i] = 0.9 * mm[i] + 0.1 * gi;
        want_v[i] = 0.95 * vv[i] + 0.05 * gi * gi;
        want_w[i] = w0[i] - 1e-2 * (want_m[i] / bc1 / (std::sqrt(want_v[i] / bc2) + 1e-8) +
                                    0.1 * w0[i]);
      }
      const std::string tag =
          std::string("param ") + dtype_name(pdt) + ", grad " + dtype_name(gdt);
      EXPECT_TRUE(all_close(m.to_floats(), want_m, {1e-7, 1e-5}, tag + " m"));
      EXPECT_TRUE(all_close(v.to_floats(), want_v, {1e-9, 1e-5}, tag + " v"));
      EXPECT_TRUE(all_close(master.to_floats(), want_w, {1e-6, 1e-5}, tag + " master"));
      // param is exactly the master rounded to nearest even.
      EXPECT_EQ(param.to_floats(), as_dtype(master, pdt).to_floats()) << tag;
    }
  }
  // Sizes must agree.
  Tensor p = Tensor::zeros({4}, DType::bf16), mst = Tensor::zeros({5});
  Tensor mm = Tensor::zeros({4}), vv = Tensor::zeros({4});
  const std::string msg = exception_message(
      [&] { cpu().adamw_update_master(p, Tensor::zeros({4}), mst, mm, vv, AdamWStep{}); });
  EXPECT_NE(msg.find("differ in size"), std::string::npos) << msg;
  const std::string msg2 = exception_message([&] {
    Tensor bad_master = Tensor::zeros({4}, DType::bf16);
    cpu().adamw_update_master(p, Tensor::zeros({4}), bad_master, mm, vv, AdamWStep{});
  });
  EXPECT_NE(msg2.find("adamw_update_master (master)"), std::string::npos) << msg2;
}

// ---- backend: all_finite ---------------------------------------------------------

TEST(AllFiniteKernel, FindsNanAndInfInEveryFloatDtype) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    for (int64_t n : {int64_t{1}, int64_t{37}, int64_t{200000}}) {
      Rng rng(static_cast<uint64_t>(n));
      Tensor x = as_dtype(random_tensor({n}, rng, 100.f), dt);
      EXPECT_TRUE(cpu().all_finite(x)) << dtype_name(dt) << " n=" << n;
      for (float bad : {inf, -inf, nan}) {
        for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
          Tensor y = as_dtype(random_tensor({n}, rng, 100.f), DType::f32);
          y.data<float>()[pos] = bad;
          EXPECT_FALSE(cpu().all_finite(as_dtype(y, dt)))
              << dtype_name(dt) << " n=" << n << " value " << bad << " at " << pos;
        }
      }
    }
  }
  // Large finite values are finite; what a conversion rounds to inf is not:
  // 1e6 in f16 (max 65504), FLT_MAX in bf16 (it rounds up past bf16's max).
  const Tensor big = Tensor::from_floats({-65504.f, 1e6f}, {2});
  EXPECT_TRUE(cpu().all_finite(big));
  EXPECT_TRUE(cpu().all_finite(as_dtype(big, DType::bf16)));
  EXPECT_FALSE(cpu().all_finite(as_dtype(big, DType::f16)));
  const Tensor fmax = Tensor::from_floats({std::numeric_limits<float>::max()}, {1});
  EXPECT_TRUE(cpu().all_finite(fmax));
  EXPECT_FALSE(cpu().all_finite(as_dtype(fmax, DType::bf16)));
  EXPECT_TRUE(cpu().all_finite(Tensor::from_floats({65504.f, -1e-8f}, {2})));
  EXPECT_TRUE(cpu().all_finite(Tensor::zeros({0})));
  EXPECT_TRUE(cpu().all_finite(Tensor::from_ints({1, -2}, {2})));
}

// ---- CPU backend: f32 staging of read-write arguments ----------------------------

TEST(CpuF32Stage, ReadWriteArgumentsKeepTheirValues) {
  Rng rng(21);
  for (DType dt : {DType::bf16, DType::f16}) {
    const Tensor a = random_tensor({9, 17}, rng), bm = random_tensor({17, 5}, rng);
    const Tensor c0 = as_dtype(random_tensor({9, 5}, rng), dt);
    // gemm with beta != 0 reads c: c = 0.5 a b + 2 c0, computed from the rounded c0.
    Tensor c = c0.clone();
    cpu().gemm(as_dtype(a, dt), false, as_dtype(bm, dt), false, c, 0.5f, 2.f);
    Tensor c32 = as_dtype(c0, DType::f32);
    cpu().gemm(as_dtype(as_dtype(a, dt), DType::f32), false, as_dtype(as_dtype(bm, dt), DType::f32),
               false, c32, 0.5f, 2.f);
    EXPECT_EQ(c.dtype(), dt);
    EXPECT_EQ(c.to_floats(), as_dtype(c32, dt).to_floats()) << dtype_name(dt) << " gemm";
    // axpy and scale on narrow tensors.
    const Tensor x = as_dtype(random_tensor({100}, rng), dt);
    Tensor y = as_dtype(random_tensor({100}, rng), dt);
    const std::vector<float> xv = x.to_floats(), yv = y.to_floats();
    cpu().axpy(3.f, x, y);
    cpu().scale(y, 0.5f);
    std::vector<float> want(100);
    for (int i = 0; i < 100; ++i) want[i] = (yv[i] + 3.f * xv[i]);
    Tensor w = as_dtype(as_dtype(Tensor::from_floats(want, {100}), dt), DType::f32);
    for (float& v : std::span<float>(w.data<float>(), 100)) v *= 0.5f;
    EXPECT_EQ(y.to_floats(), as_dtype(w, dt).to_floats()) << dtype_name(dt) << " axpy/scale";
    double ss = 0;
    for (float v : xv) ss += static_cast<double>(v) * v;
    EXPECT_NEAR(cpu().sum_squares(x), ss, 1e-4) << dtype_name(dt) << " sum_squares";
  }
}

}  // namespace
}  // namespace el::test
