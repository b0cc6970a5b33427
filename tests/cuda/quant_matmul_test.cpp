// Tests for the CUDA weight-only int4/int8 matmul (cuda_quant_gemv.cu,
// cuda_quant_gemm.cu) against the CPU reference (cpu::quant_matmul through
// the CPU backend, on host copies of the same packed weight).
//
// Weights are random bytes (every nibble / byte value occurs), scales random
// f16 around 0.01, zero points random (asymmetric) or 2^(bits-1). Shapes
// cover M in {1, 3, 8, 17, 64, 300}, N in {1, 40, 2560} and K / group pairs
// that reach every kernel: tensor-core GEMV and GEMM (K 64 per-channel,
// 128 / 32, 5632 / 128; int8 also 80 / 16 and 80 / 80, a partial k-block),
// the vectorised SIMT path (f32, and int4 with K 80) and the scalar SIMT path
// (K 90, group 45), and the GEMV's load depths (K 2048 / 2080 / 4096 /
// 4128 int4, half those in int8). bf16/f16 outputs differ from the f32
// reference by the weight's rounding to the activation dtype (2^-9 / 2^-11
// relative per weight, averaging out over K) and the output rounding; f32
// only by the summation order. Tolerances: tests/common/ops_tolerance.h,
// widened with sqrt(K).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "cuda/cuda_kernels.h"
#include "cuda_quant_test_util.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

using cuda::QuantPath;

double k_factor(DType dtype, int64_t k) {
  const double r = std::sqrt(static_cast<double>(k));
  return dtype == DType::f32 ? 1.0 + r / 8.0 : 1.0 + r / 64.0;
}

struct Problem {
  Tensor x, bias, ref;  // host f32 (x, bias rounded to the dtype under test)
  QuantizedWeight wh, wg;
};

Problem make_problem(int64_t m, int64_t n, int64_t k, int bits, int64_t group, bool symmetric,
                     bool with_bias, DType dtype, uint64_t seed) {
  Rng rng(seed);
  Problem p;
  p.wh = random_quant_host(n, k, bits, group, symmetric, rng);
  p.wg = quant_to_gpu(p.wh);
  p.x = random_host({m, k}, rng, dtype);
  if (with_bias) p.bias = random_host({n}, rng, dtype);
  p.ref = Tensor::empty({m, n}, DType::f32);
  cpu_backend().quant_matmul(p.x, p.wh, p.bias, p.ref);
  return p;
}

Tensor run_gpu(const Problem& p, DType dtype, QuantPath path) {
  const int64_t m = p.x.dim(0), n = p.wh.out_features;
  Tensor y = poisoned({m, n}, dtype);
  const Tensor bias = p.bias.defined() ? to_gpu(p.bias, dtype) : Tensor();
  cuda::quant_matmul_with(to_gpu(p.x, dtype), p.wg, bias, y, path);
  return y;
}

std::string describe(int64_t m, int64_t n, int64_t k, int bits, int64_t group, bool symmetric,
                     DType dtype, QuantPath path) {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " int" +
         std::to_string(bits) + " g" + std::to_string(group) + (symmetric ? " sym " : " asym ") +
         dtype_name(dtype) + " " + cuda::quant_path_name(path);
}

struct KGroup {
  int64_t k, group;
};

TEST(CudaQuantMatmul, MatchesCpuOverShapesBitsAndDtypes) {
  EL_REQUIRE_GPU();
  const KGroup kgroups[] = {{64, 64}, {128, 32}, {80, 16}, {80, 80}, {5632, 128}, {90, 45}};
  const DType dtypes[] = {DType::bf16, DType::f16, DType::f32};
  uint64_t seed = 1;
  int turn = 0;
  for (const KGroup& kg : kgroups) {
    for (int bits : {4, 8}) {
      if (bits == 4 && kg.group % 2 != 0) continue;  // int4 groups are even (quant_layout.h)
      for (int64_t n : {1, 40, 2560}) {
        for (int64_t m : {1, 3, 8, 17, 64, 300}) {
          const DType dtype = dtypes[turn % 3];
          const bool symmetric = (turn / 3) % 2 == 0, with_bias = turn % 2 == 0;
          ++turn;
          const Problem p = make_problem(m, n, kg.k, bits, kg.group, symmetric, with_bias, dtype,
                                         seed++);
          const Tensor y = run_gpu(p, dtype, QuantPath::automatic);
          const QuantPath used = cuda::quant_matmul_path(to_gpu(p.x, dtype), p.wg);
          EXPECT_TRUE(close_to(y, p.ref, tol(dtype), "quant_matmul", k_factor(dtype, kg.k)))
              << describe(m, n, kg.k, bits, kg.group, symmetric, dtype, used);
        }
      }
    }
  }
}

// Every dtype on the TinyLlama-like shapes the decode and prefill paths serve.
TEST(CudaQuantMatmul, EveryDtypeOnModelShapes) {
  EL_REQUIRE_GPU();
  uint64_t seed = 1000;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (int bits : {4, 8}) {
      for (int64_t m : {1, 8, 64}) {
        const Problem p = make_problem(m, 2560, 2048, bits, 128, bits == 8, true, dtype, seed++);
        EXPECT_TRUE(close_to(run_gpu(p, dtype, QuantPath::automatic), p.ref, tol(dtype),
                             "quant_matmul", k_factor(dtype, 2048)))
            << describe(m, 2560, 2048, bits, 128, bits == 8, dtype, QuantPath::automatic);
      }
    }
  }
}

// The GEMV at M <= 8 loads 2 k-blocks per warp per pass for rows of up to
// 16 k-blocks (int4 K 2048, int8 K 1024), 4 up to 32 and 8 beyond: both
// sides of each switch, the longer one ending in a partial pass and a
// partial k-block.
TEST(CudaQuantMatmul, GemvLoadDepthSwitch) {
  EL_REQUIRE_GPU();
  struct Case {
    int bits;
    int64_t k, group;
  };
  const Case cases[] = {{4, 2048, 128}, {4, 2080, 32}, {4, 4096, 128}, {4, 4128, 32},
                        {8, 1024, 128}, {8, 1040, 16}, {8, 2048, 128}, {8, 2064, 16}};
  uint64_t seed = 1500;
  for (const Case& c : cases) {
    for (DType dtype : {DType::bf16, DType::f16}) {
      for (int64_t m : {1, 8}) {
        const bool symmetric = seed % 2 == 0;
        const Problem p =
            make_problem(m, 40, c.k, c.bits, c.group, symmetric, !symmetric, dtype, seed++);
        EXPECT_TRUE(close_to(run_gpu(p, dtype, QuantPath::gemv), p.ref, tol(dtype), "gemv",
                             k_factor(dtype, c.k)))
            << describe(m, 40, c.k, c.bits, c.group, symmetric, dtype, QuantPath::gemv);
      }
    }
  }
}

// The same weight through the SIMT, tensor-core GEMV and GEMM kernels: each
// matches the reference and GEMV and GEMM agree with each other. M 12 takes
// the GEMV's 2-token-tile variant, 300 its multi-block token split, 1100 x
// 2560 the GEMM's 128-token tile.
TEST(CudaQuantMatmul, GemvAndGemmPathsAgree) {
  EL_REQUIRE_GPU();
  struct Case {
    int64_t m, n, k, group;
  };
  const Case cases[] = {{1, 40, 128, 32},      {12, 2560, 128, 128}, {17, 40, 5632, 128},
                        {64, 2560, 256, 64},   {300, 40, 256, 256},  {1100, 2560, 128, 128},
                        {5, 131, 4096, 4096}};
  uint64_t seed = 2000;
  int turn = 0;
  for (const Case& c : cases) {
    for (DType dtype : {DType::bf16, DType::f16}) {
      for (int bits : {4, 8}) {
        const bool symmetric = turn++ % 2 == 0;
        const Problem p = make_problem(c.m, c.n, c.k, bits, c.group, symmetric, !symmetric, dtype,
                                       seed++);
        const double f = k_factor(dtype, c.k);
        const Tensor gemv = run_gpu(p, dtype, QuantPath::gemv);
        const Tensor gemm = run_gpu(p, dtype, QuantPath::gemm);
        const Tensor simt = run_gpu(p, dtype, QuantPath::simt);
        EXPECT_TRUE(close_to(gemv, p.ref, tol(dtype), "gemv", f))
            << describe(c.m, c.n, c.k, bits, c.group, symmetric, dtype, QuantPath::gemv);
        EXPECT_TRUE(close_to(gemm, p.ref, tol(dtype), "gemm", f))
            << describe(c.m, c.n, c.k, bits, c.group, symmetric, dtype, QuantPath::gemm);
        EXPECT_TRUE(close_to(simt, p.ref, tol(dtype), "simt", f))
            << describe(c.m, c.n, c.k, bits, c.group, symmetric, dtype, QuantPath::simt);
        // Same dequantised weights and mma order per k-block: the two differ
        // only by how the split-K partials are added.
        EXPECT_TRUE(close_to(gemv, gemm, tol(dtype), "gemv vs gemm", f))
            << describe(c.m, c.n, c.k, bits, c.group, symmetric, dtype, QuantPath::gemv);
      }
    }
  }
}

TEST(CudaQuantMatmul, AutomaticPathChoice) {
  EL_REQUIRE_GPU();
  Rng rng(7);
  const QuantizedWeight w4 = quant_to_gpu(random_quant_host(64, 256, 4, 128, true, rng));
  const QuantizedWeight w4g16 = quant_to_gpu(random_quant_host(64, 256, 4, 16, true, rng));
  const auto x = [](int64_t m, DType t) { return Tensor::zeros({m, 256}, t, gpu()); };
  EXPECT_EQ(cuda::quant_matmul_path(x(1, DType::bf16), w4), QuantPath::gemv);
  EXPECT_EQ(cuda::quant_matmul_path(x(32, DType::f16), w4), QuantPath::gemv);
  EXPECT_EQ(cuda::quant_matmul_path(x(33, DType::bf16), w4), QuantPath::gemm);
  EXPECT_EQ(cuda::quant_matmul_path(x(1, DType::f32), w4), QuantPath::simt);
  EXPECT_EQ(cuda::quant_matmul_path(x(1, DType::bf16), w4g16), QuantPath::simt);
}

TEST(CudaQuantMatmul, EmptyBatchWritesNothing) {
  EL_REQUIRE_GPU();
  Rng rng(8);
  const QuantizedWeight w = quant_to_gpu(random_quant_host(16, 64, 4, 64, true, rng));
  Tensor y = Tensor::empty({0, 16}, DType::bf16, gpu());
  cuda::quant_matmul(Tensor::empty({0, 64}, DType::bf16, gpu()), w, Tensor(), y);
  gpu_backend().synchronize();
}

TEST(CudaQuantMatmul, TensorCorePathRefusesF32AndOddGroups) {
  EL_REQUIRE_GPU();
  Rng rng(9);
  const QuantizedWeight w = quant_to_gpu(random_quant_host(16, 64, 4, 64, true, rng));
  Tensor y = Tensor::empty({2, 16}, DType::f32, gpu());
  try {
    cuda::quant_matmul_with(Tensor::zeros({2, 64}, DType::f32, gpu()), w, Tensor(), y,
                            QuantPath::gemm);
    FAIL() << "expected an error";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("gemm tensor-core path needs bf16/f16 x"),
              std::string::npos)
        << e.what();
  }
  const QuantizedWeight w16 = quant_to_gpu(random_quant_host(16, 64, 4, 16, true, rng));
  Tensor yb = Tensor::empty({2, 16}, DType::bf16, gpu());
  try {
    cuda::quant_matmul_with(Tensor::zeros({2, 64}, DType::bf16, gpu()), w16, Tensor(), yb,
                            QuantPath::gemv);
    FAIL() << "expected an error";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("group 16"), std::string::npos) << e.what();
  }
}

TEST(CudaQuantMatmul, MalformedOperandsAreNamed) {
  EL_REQUIRE_GPU();
  Rng rng(10);
  QuantizedWeight w = quant_to_gpu(random_quant_host(16, 64, 4, 32, false, rng));
  Tensor y = Tensor::empty({2, 16}, DType::bf16, gpu());
  const Tensor x = Tensor::zeros({2, 64}, DType::bf16, gpu());
  QuantizedWeight bad = w;
  bad.scales = Tensor::zeros({16, 1}, DType::f16, gpu());  // 2 groups per row expected
  try {
    cuda::quant_matmul(x, bad, Tensor(), y);
    FAIL() << "expected an error";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("do not match [16, 64] at 4 bits, group 32"),
              std::string::npos)
        << e.what();
  }
  Tensor y_wrong = Tensor::empty({3, 16}, DType::bf16, gpu());
  try {
    cuda::quant_matmul(x, w, Tensor(), y_wrong);
    FAIL() << "expected an error";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("y has 48 values, expected 2 x 16"), std::string::npos)
        << e.what();
  }
}

// The one-token stream path (cuda_stream_gemv.cu): rows shared out over the
// SMs (N 4 and 40: a window or less a block; 2053 and 517: uneven shares
// ending in partial windows), rows of one to four spans (K 2048, 4096, 5632
// int4 = 2.75 spans, int8 K 5632), the scale after the mma (int4 g128 / g256,
// int8 g128) and the dequantising fallback (int4 g64, int8 g32), symmetric or
// not, with and without bias; the lm head shape, which automatic picks.
TEST(CudaQuantMatmul, StreamPathMatchesCpu) {
  EL_REQUIRE_GPU();
  struct Case {
    int64_t n, k, group;
    int bits;
  };
  const Case cases[] = {{4, 128, 128, 4},      {40, 2048, 128, 4},   {2053, 2048, 128, 4},
                        {2053, 5632, 128, 4},  {517, 4096, 256, 4},  {300, 2048, 64, 4},
                        {2053, 2048, 128, 8},  {300, 5632, 128, 8},  {301, 1024, 32, 8},
                        {32000, 2048, 128, 4}};
  uint64_t seed = 3000;
  for (const Case& c : cases) {
    for (DType dtype : {DType::bf16, DType::f16}) {
      const bool symmetric = seed % 2 == 0;
      const Problem p = make_problem(1, c.n, c.k, c.bits, c.group, symmetric, !symmetric, dtype,
                                     seed++);
      EXPECT_TRUE(close_to(run_gpu(p, dtype, QuantPath::stream), p.ref, tol(dtype), "stream",
                           k_factor(dtype, c.k)))
          << describe(1, c.n, c.k, c.bits, c.group, symmetric, dtype, QuantPath::stream);
    }
  }
  // automatic: the stream path for one token of the lm head, the GEMV for a small weight
  Rng rng(3100);
  const QuantizedWeight head = quant_to_gpu(random_quant_host(32000, 2048, 4, 128, true, rng));
  const QuantizedWeight small = quant_to_gpu(random_quant_host(512, 2048, 4, 128, true, rng));
  const Tensor x1 = to_gpu(random_host({1, 2048}, rng, DType::bf16), DType::bf16);
  const Tensor x2 = to_gpu(random_host({2, 2048}, rng, DType::bf16), DType::bf16);
  EXPECT_EQ(cuda::quant_matmul_path(x1, head), QuantPath::stream);
  EXPECT_EQ(cuda::quant_matmul_path(x1, small), QuantPath::gemv);
  EXPECT_EQ(cuda::quant_matmul_path(x2, head), QuantPath::gemv);
  // forced where it cannot: a clear error, not a wrong answer (two tokens; a zero-point table
  // of 2 bytes, which the 4-byte staging copies would overrun)
  Tensor y = Tensor::empty({2, 32000}, DType::bf16, x2.device());
  EXPECT_THROW(cuda::quant_matmul_with(x2, head, Tensor(), y, QuantPath::stream), Exception);
  const Problem odd = make_problem(1, 2, 128, 4, 128, false, false, DType::bf16, 3200);
  EXPECT_THROW(run_gpu(odd, DType::bf16, QuantPath::stream), Exception);
}

}  // namespace
}  // namespace el::test
