// alibi_attention_test.cpp — ALiBi slopes in the CUDA attention kernels
// (attention_fwd.cu, attention_bwd.cu, attention_simt.cu, and the cached
// kernels of cuda_infer.cu) against the CPU backend (the reference, itself
// checked against a materialised-bias f64 reference in
// tests/ops/alibi_attention_test.cpp) on the same rounded inputs.
//
// Training attention: forward (out, lse) and backward (dq, dk, dv) through
// the Backend interface, bf16 / f16 with D 64 and 128 (tensor-core kernels),
// f32 and bf16 with D 32 / 80 (SIMT kernels); odd T, S > T offsets, GQA /
// MQA, a non-power-of-2 head count, causal and not. Errors are
// ||gpu - cpu|| / ||cpu|| per output (the budgets of attention_test.cpp).
// Cached attention: decode and few-query shapes over caches whose rows past
// positions[b] + T hold NaN, tensor-core and SIMT paths, one and many chunks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/ops.h"

namespace el::test {
namespace {

double rel_error(const Tensor& got, const Tensor& ref) {
  const std::vector<float> a = got.to_floats(), e = ref.to_floats();
  if (a.size() != e.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(e[i]) && a[i] == e[i]) continue;  // -inf lse rows must match
    const double d = double(a[i]) - e[i];
    num += d * d;
    den += double(e[i]) * e[i];
  }
  return std::isfinite(num) ? std::sqrt(num / std::max(den, 1e-30)) : INFINITY;
}

struct Case {
  int64_t b, t, s, h, hkv, d;
  bool causal;
  DType dt;
};

std::string name_of(const Case& c) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "B%lld_T%lld_S%lld_H%lld_Hkv%lld_D%lld_%s_%s", (long long)c.b,
                (long long)c.t, (long long)c.s, (long long)c.h, (long long)c.hkv, (long long)c.d,
                c.causal ? "causal" : "full", dtype_name(c.dt));
  return buf;
}

void check_training_case(const Case& c, uint64_t seed) {
  Rng rng(seed);
  const Shape qs{c.b, c.t, c.h, c.d}, ks{c.b, c.s, c.hkv, c.d}, ls{c.b, c.h, c.t};
  const Tensor q = random_host(qs, rng, c.dt), k = random_host(ks, rng, c.dt),
               v = random_host(ks, rng, c.dt), dout = random_host(qs, rng, c.dt);
  const Tensor slopes = ops::alibi_slopes(c.h, Device::cpu());
  const float scale = 1.f / std::sqrt(static_cast<float>(c.d));

  Tensor r_out = Tensor::empty(qs), r_lse = Tensor::empty(ls), r_dq = Tensor::empty(qs),
         r_dk = Tensor::empty(ks), r_dv = Tensor::empty(ks);
  cpu_backend().attention_forward(q, k, v, scale, c.causal, r_out, r_lse, slopes);
  cpu_backend().attention_backward(dout, q, k, v, r_out, r_lse, scale, c.causal, r_dq, r_dk, r_dv,
                                   slopes);

  const Tensor gq = to_gpu(q, c.dt), gk = to_gpu(k, c.dt), gv = to_gpu(v, c.dt),
               gdo = to_gpu(dout, c.dt), gs = to_gpu(slopes);
  Tensor out = poisoned(qs, c.dt), lse = poisoned(ls, DType::f32), dq = poisoned(qs, c.dt),
         dk = poisoned(ks, c.dt), dv = poisoned(ks, c.dt);
  gpu_backend().attention_forward(gq, gk, gv, scale, c.causal, out, lse, gs);
  gpu_backend().attention_backward(gdo, gq, gk, gv, out, lse, scale, c.causal, dq, dk, dv, gs);
  gpu_backend().synchronize();

  const double fwd = tolerance_for(c.dt).rel * (c.dt == DType::f32 ? 1.0 : 0.5);
  const double bwd = tolerance_for(c.dt).rel * (c.dt == DType::f32 ? 2.0 : 1.0);
  const double e_out = rel_error(out, r_out), e_lse = rel_error(lse, r_lse);
  const double e_dq = rel_error(dq, r_dq), e_dk = rel_error(dk, r_dk), e_dv = rel_error(dv, r_dv);
  std::printf("[ alibi   ] %-44s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", name_of(c).c_str(),
              e_out, e_lse, e_dq, e_dk, e_dv);
  EXPECT_LT(e_out, fwd) << name_of(c);
  EXPECT_LT(e_lse, c.dt == DType::f32 ? 1e-5 : 1e-3) << name_of(c);
  EXPECT_LT(e_dq, bwd) << name_of(c);
  EXPECT_LT(e_dk, bwd) << name_of(c);
  EXPECT_LT(e_dv, bwd) << name_of(c);
}

TEST(CudaAlibiAttention, TrainingForwardBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  const Case cases[] = {
      {2, 257, 257, 8, 2, 64, true, DType::bf16},    // tensor cores, GQA, odd T
      {1, 130, 300, 6, 3, 128, true, DType::bf16},   // D 128, S > T offset, H = 6
      {2, 100, 100, 12, 1, 64, true, DType::f16},    // MQA, H = 12 (interleaved slopes)
      {1, 77, 77, 4, 4, 64, false, DType::bf16},     // non-causal
      {2, 1, 45, 8, 2, 64, true, DType::bf16},       // decode-like T = 1
      {2, 37, 45, 6, 2, 32, true, DType::f32},       // SIMT f32
      {1, 33, 33, 4, 2, 80, true, DType::bf16},      // SIMT bf16, D 80
      {1, 19, 7, 4, 1, 32, true, DType::f32},        // S < T: rows without keys
  };
  uint64_t seed = 900;
  for (const Case& c : cases) check_training_case(c, seed++);
}

// ---- cached attention -----------------------------------------------------------------
struct CachedCase {
  int64_t b, t, h, hkv, d, smax;
  std::vector<int32_t> pos;
};

void check_cached_case(const CachedCase& c, DType dt, uint64_t seed) {
  Rng rng(seed);
  const Shape qs{c.b, c.t, c.h, c.d}, cs{c.b, c.smax, c.hkv, c.d};
  const Tensor q = random_host(qs, rng, dt);
  auto cache = [&] {
    Tensor x = random_host(cs, rng, dt);
    float* p = x.data<float>();
    const int64_t row = c.hkv * c.d;
    for (int64_t i = 0; i < c.b; ++i)
      for (int64_t s = c.pos[static_cast<size_t>(i)] + c.t; s < c.smax; ++s)
        for (int64_t j = 0; j < row; ++j) p[(i * c.smax + s) * row + j] = NAN;
    return x;
  };
  const Tensor kc = cache(), vc = cache();
  const Tensor slopes = ops::alibi_slopes(c.h, Device::cpu());
  const Tensor pos = Tensor::from_ints(c.pos, {c.b});
  const float scale = 1.f / std::sqrt(static_cast<float>(c.d));
  Tensor ref = Tensor::empty(qs);
  cpu_backend().attention_cached(q, kc, vc, pos, scale, ref, slopes);
  Tensor out = poisoned(qs, dt);
  gpu_backend().attention_cached(to_gpu(q, dt), to_gpu(kc, dt), to_gpu(vc, dt), to_gpu(pos), scale,
                                 out, to_gpu(slopes));
  EXPECT_TRUE(close_to(out, ref, tol(dt), "attention_cached alibi", 2.0))
      << dtype_name(dt) << " B" << c.b << " T" << c.t << " H" << c.h << " Hkv" << c.hkv << " D"
      << c.d << " Smax" << c.smax;
}

TEST(CudaAlibiAttention, CachedMatchesCpu) {
  EL_REQUIRE_GPU();
  const CachedCase cases[] = {
      {2, 1, 32, 4, 64, 517, {0, 516}},       // decode, G 8, split keys
      {3, 3, 8, 1, 128, 301, {0, 298, 150}},  // T 3 x G 8: 2 row tiles
      {2, 3, 6, 3, 80, 77, {0, 74}},          // D 80: SIMT, H = 6
      {2, 1, 4, 4, 64, 37, {36, 5}},          // one tile: single chunk
      {1, 1, 16, 2, 128, 4099, {4098}},       // long cache: many chunks and their merge
      {1, 100, 8, 2, 64, 333, {200}},         // chunked prefill
      {3, 2, 6, 3, 6, 19, {17, 0, 9}},        // tiny odd head dim (SIMT)
  };
  uint64_t seed = 950;
  for (const CachedCase& c : cases)
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) check_cached_case(c, dt, seed++);
}

// The slope pointer is checked: wrong dtype or count is an error, not a read
// out of bounds.
TEST(CudaAlibiAttention, BadSlopesAreReported) {
  EL_REQUIRE_GPU();
  const Tensor q = Tensor::zeros({1, 2, 4, 64}, DType::bf16, gpu());
  const Tensor kc = Tensor::zeros({1, 8, 2, 64}, DType::bf16, gpu());
  Tensor out = Tensor::zeros({1, 2, 4, 64}, DType::bf16, gpu());
  const Tensor pos = to_gpu(Tensor::from_ints({0}, {1}));
  EXPECT_THROW(gpu_backend().attention_cached(q, kc, kc, pos, 0.125f, out,
                                              Tensor::zeros({3}, DType::f32, gpu())),
               Exception);
  Tensor lse = Tensor::zeros({1, 4, 2}, DType::f32, gpu());
  EXPECT_THROW(gpu_backend().attention_forward(q, kc, kc, 0.125f, true, out, lse,
                                               Tensor::zeros({4}, DType::bf16, gpu())),
               Exception);
}

}  // namespace
}  // namespace el::test
