// Tests for the cuBLASLt GEMM against the CPU backend: shapes that are not
// multiples of any tile (1, odd, prime), every transpose combination, f32 /
// bf16 / f16 inputs, f32 or input-dtype outputs, alpha/beta, mixed inputs,
// K = 0, and unaligned operand views.
#include <gtest/gtest.h>

#include <tuple>

#include "cuda_test_util.h"

namespace el::test {
namespace {

struct GemmCase {
  int64_t m, n, k;
};

// c_ref = alpha op(a) op(b) + beta c0 on the CPU (f32, from the rounded inputs).
Tensor cpu_gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c0, float alpha,
                float beta) {
  Tensor c = c0.clone();
  cpu_backend().gemm(a, ta, b, tb, c, alpha, beta);
  return c;
}

void check_gemm(const GemmCase& g, bool ta, bool tb, DType in, DType out, float alpha, float beta,
                uint64_t seed) {
  Rng rng(seed);
  const Tensor a = random_host(ta ? Shape{g.k, g.m} : Shape{g.m, g.k}, rng, in);
  const Tensor b = random_host(tb ? Shape{g.n, g.k} : Shape{g.k, g.n}, rng, in);
  const Tensor c0 = random_host({g.m, g.n}, rng, out);
  const Tensor ref = cpu_gemm(a, ta, b, tb, c0, alpha, beta);
  Tensor c = to_gpu(c0, out);
  gpu_backend().gemm(to_gpu(a, in), ta, to_gpu(b, in), tb, c, alpha, beta);
  // Error grows like sqrt(K) with the summation order; bf16/f16 outputs round once.
  const double factor = 1.0 + std::sqrt(static_cast<double>(g.k)) / 8.0;
  EXPECT_TRUE(close_to(c, ref, tol(out), "gemm", out == DType::f32 ? factor : 1.0))
      << g.m << "x" << g.n << "x" << g.k << " ta=" << ta << " tb=" << tb << " in " << dtype_name(in)
      << " out " << dtype_name(out) << " alpha " << alpha << " beta " << beta;
}

const GemmCase kShapes[] = {{1, 1, 1},       {7, 13, 5},   {33, 65, 17}, {128, 96, 64},
                            {257, 129, 300}, {64, 1, 511}, {1, 200, 33}};

TEST(CudaGemm, MatchesCpuForAllShapesTransposesAndDtypes) {
  EL_REQUIRE_GPU();
  uint64_t seed = 1;
  for (const GemmCase& g : kShapes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_gemm(g, ta, tb, DType::f32, DType::f32, 1.f, 0.f, seed++);
        check_gemm(g, ta, tb, DType::bf16, DType::f32, 1.f, 0.f, seed++);
        check_gemm(g, ta, tb, DType::bf16, DType::bf16, 1.f, 0.f, seed++);
        check_gemm(g, ta, tb, DType::f16, DType::f32, 1.f, 0.f, seed++);
        check_gemm(g, ta, tb, DType::f16, DType::f16, 1.f, 0.f, seed++);
      }
    }
  }
}

TEST(CudaGemm, AlphaBetaAccumulate) {
  EL_REQUIRE_GPU();
  check_gemm({37, 41, 29}, false, true, DType::f32, DType::f32, 0.5f, 1.f, 101);
  check_gemm({37, 41, 29}, true, false, DType::bf16, DType::f32, -2.f, 0.25f, 102);
  check_gemm({37, 41, 29}, false, false, DType::bf16, DType::bf16, 1.f, 1.f, 103);
}

TEST(CudaGemm, MixedInputsWidenToF32) {
  EL_REQUIRE_GPU();
  Rng rng(5);
  const Tensor a = random_host({19, 23}, rng, DType::f32);
  const Tensor b = random_host({31, 23}, rng, DType::bf16);  // [N, K], used transposed
  const Tensor c0 = Tensor::zeros({19, 31});
  const Tensor ref = cpu_gemm(a, false, b, true, c0, 1.f, 0.f);
  Tensor c = poisoned({19, 31}, DType::f32);
  gpu_backend().gemm(to_gpu(a, DType::f32), false, to_gpu(b, DType::bf16), true, c, 1.f, 0.f);
  EXPECT_TRUE(close_to(c, ref, tol(DType::f32), "mixed gemm", 2.0));
}

TEST(CudaGemm, AnyOutputDtype) {
  EL_REQUIRE_GPU();
  check_gemm({23, 17, 40}, false, true, DType::f32, DType::bf16, 1.f, 0.f, 201);
  check_gemm({23, 17, 40}, true, false, DType::f32, DType::f16, 1.f, 0.5f, 202);
  check_gemm({23, 17, 40}, false, false, DType::bf16, DType::f16, 1.f, 0.f, 203);
}

TEST(CudaGemm, EmptyKScalesC) {
  EL_REQUIRE_GPU();
  Tensor a = Tensor::empty({3, 0}, DType::f32, gpu());
  Tensor b = Tensor::empty({0, 4}, DType::f32, gpu());
  Tensor c = Tensor::full({3, 4}, 2.f, DType::f32, gpu());
  gpu_backend().gemm(a, false, b, false, c, 1.f, 0.5f);
  for (float x : c.to_floats()) EXPECT_FLOAT_EQ(x, 1.f);
  gpu_backend().gemm(a, false, b, false, c, 1.f, 0.f);
  for (float x : c.to_floats()) EXPECT_FLOAT_EQ(x, 0.f);
}

TEST(CudaGemm, UnalignedOperandViews) {
  EL_REQUIRE_GPU();
  Rng rng(9);
  // Row 1 of a [K+1, ...] buffer: an operand whose start is not 16-byte aligned.
  const Tensor big_a = random_host({22, 9}, rng, DType::bf16);  // a = rows 1..21: [21, 9]
  const Tensor b = random_host({9, 15}, rng, DType::bf16);
  Tensor dev_big = to_gpu(big_a, DType::bf16);
  const Tensor dev_a = dev_big.slice0(1, 22);
  const Tensor ref =
      cpu_gemm(big_a.slice0(1, 22).clone(), false, b, false, Tensor::zeros({21, 15}), 1.f, 0.f);
  Tensor c = poisoned({21, 15}, DType::f32);
  gpu_backend().gemm(dev_a, false, to_gpu(b, DType::bf16), false, c, 1.f, 0.f);
  EXPECT_TRUE(close_to(c, ref, tol(DType::f32), "unaligned gemm", 2.0));
}

}  // namespace
}  // namespace el::test
