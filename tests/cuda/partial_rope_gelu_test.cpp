// partial_rope_gelu_test.cpp — the CUDA side of GPT-NeoX (Pythia): every
// rope op of the backend with fewer frequencies than half the head (partial
// rotary: the first R dims rotate, dims [R, D) pass) and the erf GELU, against
// the CPU backend in f32 and bf16, at head dims and rotary widths that do and
// do not fit the vector paths (odd R/2, D not a multiple of 8).
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "ops/ops.h"

namespace el::test {
namespace {

struct RopeShape {
  int64_t b, t, h, hkv, d, r;
};

const RopeShape kShapes[] = {{2, 5, 3, 1, 16, 4},  {1, 7, 4, 2, 64, 16}, {2, 3, 2, 2, 10, 6},
                             {1, 4, 2, 1, 128, 32}, {3, 2, 1, 1, 8, 2},  {1, 9, 4, 4, 32, 32}};

Tensor host_freq(int64_t r) { return ops::rope_inv_freq(r, 10000.f, Device::cpu()); }

TEST(CudaPartialRope, RopeAndInverseMatchCpu) {
  EL_REQUIRE_GPU();
  Rng rng(1);
  for (const RopeShape& s : kShapes) {
    for (const DType dt : {DType::f32, DType::bf16}) {
      const Tensor x = random_host({s.b, s.t, s.h, s.d}, rng, dt);
      for (const bool inverse : {false, true}) {
        Tensor ref = Tensor::empty(x.shape());
        cpu_backend().rope(x, host_freq(s.r), 3, inverse, ref);
        Tensor y = poisoned(x.shape(), dt);
        gpu_backend().rope(to_gpu(x, dt), to_gpu(host_freq(s.r)), 3, inverse, y);
        EXPECT_TRUE(close_to(y, ref, tol(dt),
                             "rope d " + std::to_string(s.d) + " r " + std::to_string(s.r) + " " +
                                 dtype_name(dt) + (inverse ? " inverse" : "")));
      }
      // In place.
      Tensor ref = Tensor::empty(x.shape());
      cpu_backend().rope(x, host_freq(s.r), 0, false, ref);
      Tensor y = to_gpu(x, dt);
      gpu_backend().rope(y, to_gpu(host_freq(s.r)), 0, false, y);
      EXPECT_TRUE(close_to(y, ref, tol(dt), "rope in place d " + std::to_string(s.d)));
    }
  }
}

TEST(CudaPartialRope, PackedSplitMergeAndCachedOpsMatchCpu) {
  EL_REQUIRE_GPU();
  Rng rng(2);
  for (const RopeShape& s : kShapes) {
    for (const DType dt : {DType::f32, DType::bf16}) {
      const std::string what = "d " + std::to_string(s.d) + " r " + std::to_string(s.r) + " " +
                               dtype_name(dt);
      const int64_t heads = s.h + 2 * s.hkv;
      const Tensor packed = random_host({s.b, s.t, heads, s.d}, rng, dt);
      const Tensor freq = host_freq(s.r), gfreq = to_gpu(freq);
      Tensor q = Tensor::empty({s.b, s.t, s.h, s.d}), k = Tensor::empty({s.b, s.t, s.hkv, s.d}),
             v = Tensor::empty({s.b, s.t, s.hkv, s.d});
      cpu_backend().split_qkv_rope(packed, freq, 2, q, k, v);
      Tensor gq = poisoned(q.shape(), dt), gk = poisoned(k.shape(), dt), gv = poisoned(v.shape(), dt);
      gpu_backend().split_qkv_rope(to_gpu(packed, dt), gfreq, 2, gq, gk, gv);
      EXPECT_TRUE(close_to(gq, q, tol(dt), "split q " + what));
      EXPECT_TRUE(close_to(gk, k, tol(dt), "split k " + what));
      EXPECT_TRUE(close_to(gv, v, tol(dt), "split v " + what));
      // The backward: rotate back into the packed layout.
      Tensor dp = Tensor::empty(packed.shape());
      cpu_backend().merge_qkv_rope_grad(q, k, v, freq, 2, dp);
      Tensor gdp = poisoned(packed.shape(), dt);
      gpu_backend().merge_qkv_rope_grad(to_gpu(round_to(q, dt), dt), to_gpu(round_to(k, dt), dt),
                                        to_gpu(round_to(v, dt), dt), gfreq, 2, gdp);
      EXPECT_TRUE(close_to(gdp, dp, tol(dt), "merge grad " + what, 2.0));
      // Per-row offsets: split, rope_at, and the fused cache write.
      std::vector<int32_t> pos_host;
      for (int64_t i = 0; i < s.b; ++i) pos_host.push_back(static_cast<int32_t>(3 * i + 1));
      const Tensor pos = Tensor::from_ints(pos_host, {s.b}), gpos = to_gpu(pos);
      cpu_backend().split_qkv_rope_at(packed, freq, pos, q, k, v);
      gpu_backend().split_qkv_rope_at(to_gpu(packed, dt), gfreq, gpos, gq, gk, gv);
      EXPECT_TRUE(close_to(gq, q, tol(dt), "split_at q " + what));
      EXPECT_TRUE(close_to(gk, k, tol(dt), "split_at k " + what));
      const int64_t smax = s.t + 3 * s.b;
      Tensor kc = Tensor::zeros({s.b, smax, s.hkv, s.d}), vc = Tensor::zeros(kc.shape());
      Tensor q2 = Tensor::empty(q.shape());
      cpu_backend().qkv_rope_cache_write(packed, freq, pos, q2, kc, vc);
      Tensor gkc = Tensor::zeros(kc.shape(), dt, gpu()), gvc = Tensor::zeros(kc.shape(), dt, gpu());
      Tensor gq2 = poisoned(q.shape(), dt);
      gpu_backend().qkv_rope_cache_write(to_gpu(packed, dt), gfreq, gpos, gq2, gkc, gvc);
      EXPECT_TRUE(close_to(gq2, q2, tol(dt), "cache write q " + what));
      EXPECT_TRUE(close_to(gkc, kc, tol(dt), "cache write k " + what));
      EXPECT_TRUE(close_to(gvc, vc, tol(dt), "cache write v " + what));
      const Tensor x = random_host({s.b, s.t, s.h, s.d}, rng, dt);
      Tensor xr = Tensor::empty(x.shape());
      cpu_backend().rope_at(x, freq, pos, xr);
      Tensor gxr = poisoned(x.shape(), dt);
      gpu_backend().rope_at(to_gpu(x, dt), gfreq, gpos, gxr);
      EXPECT_TRUE(close_to(gxr, xr, tol(dt), "rope_at " + what));
    }
  }
}

TEST(CudaGeluExact, ForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  Rng rng(3);
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{4099}}) {
    for (const DType dt : {DType::f32, DType::bf16}) {
      const Tensor x = random_host({n}, rng, dt, 3.f), dy = random_host({n}, rng, dt);
      Tensor y = Tensor::empty({n}), dx = Tensor::empty({n});
      cpu_backend().gelu_exact_forward(x, y);
      cpu_backend().gelu_exact_backward(dy, x, dx);
      Tensor gy = poisoned({n}, dt), gdx = poisoned({n}, dt);
      gpu_backend().gelu_exact_forward(to_gpu(x, dt), gy);
      gpu_backend().gelu_exact_backward(to_gpu(dy, dt), to_gpu(x, dt), gdx);
      EXPECT_TRUE(close_to(gy, y, tol(dt), "gelu_exact forward " + std::string(dtype_name(dt))));
      EXPECT_TRUE(close_to(gdx, dx, tol(dt), "gelu_exact backward " + std::string(dtype_name(dt))));
    }
  }
}

}  // namespace
}  // namespace el::test
