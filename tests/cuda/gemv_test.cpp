// Tests for the dense small-M GEMV (cuda_gemv.cu) behind cuda::gemm: y[M, N]
// = alpha x[M, K] @ W[N, K]^T + beta y against the CPU backend's gemm, at M
// 1..8, N 1, 7, 40, 2560, 32000 and K 16, 80, 2048, 5632 (K 80: a partial
// batch of loads; N 1 and 7: fewer rows than a block's warps), bf16/f16
// inputs into a same-dtype or f32 output, beta 0 (y poisoned with NaN: it
// must not be read) and beta != 0. Also: which calls the dispatch routes to
// the GEMV, and the error of a layout the GEMV does not take.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "cuda/cuda_gemv.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

struct Operands {
  Tensor x, w;          // host f32, representable in the dtype
  Tensor x_dev, w_dev;  // device, in the dtype
};

Operands make_operands(int64_t m, int64_t n, int64_t k, DType dtype, Rng& rng) {
  Operands o;
  o.x = random_host({m, k}, rng, dtype);
  o.w = random_host({n, k}, rng, dtype, 0.05f);
  o.x_dev = to_gpu(o.x, dtype);
  o.w_dev = to_gpu(o.w, dtype);
  return o;
}

// Runs gemm on the GPU backend (dispatching to the GEMV) and compares with the CPU.
void check(const Operands& o, DType out, float alpha, float beta, Rng& rng, bool direct = false) {
  const int64_t m = o.x.dim(0), k = o.x.dim(1), n = o.w.dim(0);
  const Tensor y0 = random_host({m, n}, rng, out);
  Tensor ref = y0.clone();
  cpu_backend().gemm(o.x, false, o.w, true, ref, alpha, beta);
  Tensor y = beta == 0.f ? poisoned({m, n}, out) : to_gpu(y0, out);
  // The dispatch routes M <= dense_gemv_max_m() (default 1: measured) to the
  // GEMV; larger M are still tested by calling the kernel directly.
  const bool routed = m <= cuda::dense_gemv_max_m();
  if (routed) {
    ASSERT_TRUE(cuda::dense_gemv_takes(o.x_dev, false, o.w_dev, true, y)) << m << "x" << n << "x" << k;
  }
  if (direct || !routed) {
    cuda::dense_gemv(o.x_dev, o.w_dev, y, alpha, beta);
  } else {
    gpu_backend().gemm(o.x_dev, false, o.w_dev, true, y, alpha, beta);
  }
  const double factor = 1.0 + std::sqrt(static_cast<double>(k)) / 8.0;
  EXPECT_TRUE(close_to(y, ref, tol(out), "gemv", out == DType::f32 ? factor : 1.0))
      << "M " << m << " N " << n << " K " << k << " in " << dtype_name(o.x_dev.dtype())
      << " out " << dtype_name(out) << " alpha " << alpha << " beta " << beta;
}

TEST(CudaGemv, SmallShapesEveryMDtypeAndBeta) {
  EL_REQUIRE_GPU();
  Rng rng(1);
  for (DType dt : {DType::bf16, DType::f16}) {
    for (int64_t n : {1, 7, 40}) {
      for (int64_t k : {16, 80, 2048}) {
        for (int64_t m = 1; m <= 8; ++m) {
          const Operands o = make_operands(m, n, k, dt, rng);
          check(o, dt, 1.f, 0.f, rng);
          check(o, DType::f32, 1.f, 0.f, rng);
          check(o, dt, 1.f, 1.f, rng);
          check(o, DType::f32, -0.5f, 0.25f, rng);
        }
      }
    }
  }
}

TEST(CudaGemv, DecodeShapes) {
  EL_REQUIRE_GPU();
  Rng rng(2);
  for (DType dt : {DType::bf16, DType::f16}) {
    for (int64_t k : {2048, 5632}) {
      for (int64_t m : {1, 3, 8}) {
        const Operands o = make_operands(m, 2560, k, dt, rng);
        check(o, dt, 1.f, 0.f, rng);
        if (m != 3) check(o, dt, 1.f, 1.f, rng);
        if (m == 8) check(o, DType::f32, 1.f, 0.f, rng);
      }
    }
  }
  // The LM head: N 32000 (one weight, reused over M), K 2048 and K 80.
  for (int64_t k : {80, 2048}) {
    Operands o = make_operands(8, 32000, k, DType::bf16, rng);
    for (int64_t m : {1, 5, 8}) {
      Operands om = o;
      om.x = o.x.slice0(0, m).clone();
      om.x_dev = to_gpu(om.x, DType::bf16);
      check(om, DType::bf16, 1.f, 0.f, rng);
    }
    check(o, DType::bf16, 1.f, 1.f, rng, /*direct=*/true);
  }
}

TEST(CudaGemv, DirectCallTakesAnyM) {
  EL_REQUIRE_GPU();
  Rng rng(3);
  for (int64_t m : {9, 20}) {  // past the dispatch limit: still exact, just not routed
    const Operands o = make_operands(m, 40, 80, DType::bf16, rng);
    const Tensor ref = [&] {
      Tensor r = Tensor::zeros({m, 40});
      cpu_backend().gemm(o.x, false, o.w, true, r, 1.f, 0.f);
      return r;
    }();
    Tensor y = poisoned({m, 40}, DType::f32);
    cuda::dense_gemv(o.x_dev, o.w_dev, y, 1.f, 0.f);
    EXPECT_TRUE(close_to(y, ref, tol(DType::f32), "gemv m " + std::to_string(m), 3.0));
  }
}

TEST(CudaGemv, DispatchRoutesOnlyLinearsItTakes) {
  EL_REQUIRE_GPU();
  Rng rng(4);
  const Operands o = make_operands(4, 40, 80, DType::bf16, rng);
  Tensor y = Tensor::empty({4, 40}, DType::bf16, gpu());
  EXPECT_EQ(cuda::dense_gemv_max_m() >= 4,
            cuda::dense_gemv_takes(o.x_dev, false, o.w_dev, true, y));
  EXPECT_FALSE(cuda::dense_gemv_takes(o.x_dev, false, o.w_dev, false, y));  // w not transposed
  Tensor y16 = Tensor::empty({4, 40}, DType::f16, gpu());
  EXPECT_FALSE(cuda::dense_gemv_takes(o.x_dev, false, o.w_dev, true, y16));  // other out dtype
  const Operands big = make_operands(9, 40, 80, DType::bf16, rng);
  Tensor y9 = Tensor::empty({9, 40}, DType::bf16, gpu());
  if (cuda::dense_gemv_max_m() < 9) {
    EXPECT_FALSE(cuda::dense_gemv_takes(big.x_dev, false, big.w_dev, true, y9));
  }
  // K not a multiple of 8, and an x that is not 16-byte aligned: cuBLASLt, still correct.
  const Operands odd = make_operands(2, 40, 33, DType::bf16, rng);
  Tensor yo = Tensor::empty({2, 40}, DType::f32, gpu());
  EXPECT_FALSE(cuda::dense_gemv_takes(odd.x_dev, false, odd.w_dev, true, yo));
  const Tensor x9 = random_host({2, 88}, rng, DType::bf16);
  Tensor x9_dev = to_gpu(x9, DType::bf16);
  const Tensor flat = x9_dev.view({176}).slice0(1, 161).view({2, 80});  // starts 2 bytes in
  Tensor yu = poisoned({2, 40}, DType::f32);
  EXPECT_FALSE(cuda::dense_gemv_takes(flat, false, o.w_dev, true, yu));
  gpu_backend().gemm(flat, false, o.w_dev, true, yu, 1.f, 0.f);
  Tensor ref = Tensor::zeros({2, 40});
  cpu_backend().gemm(x9.view({176}).slice0(1, 161).clone().view({2, 80}), false, o.w, true, ref,
                     1.f, 0.f);
  EXPECT_TRUE(close_to(yu, ref, tol(DType::f32), "unaligned x through cuBLASLt", 2.0));
}

TEST(CudaGemv, RejectsALayoutItDoesNotTake) {
  EL_REQUIRE_GPU();
  Rng rng(5);
  const Operands o = make_operands(2, 40, 33, DType::bf16, rng);  // K 33: not a multiple of 8
  Tensor y = Tensor::empty({2, 40}, DType::bf16, gpu());
  try {
    cuda::dense_gemv(o.x_dev, o.w_dev, y, 1.f, 0.f);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("dense_gemv"), std::string::npos) << msg;
    EXPECT_NE(msg.find("K % 8 == 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 33]"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace el::test
