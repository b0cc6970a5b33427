// infer_kernels_test.cpp — the CUDA inference kernels (cuda_infer.cu, and
// rope_at / split_qkv_rope_at in cuda_embedding_rope.cu) against the CPU
// backend on the same rounded inputs (cuda_test_util.h).
//
// Shapes cover decode (T = 1) and several queries (T = 3, 4, chunked
// prefill T = 100), GQA groups H / Hkv = 1, 4, 8, head dims 64 and 128 (the
// tensor-core path) and 80 / 6 (SIMT), odd cache lengths, and batch rows at
// different positions including 0 and Smax - T. Cache rows past positions[b]
// + T hold NaN, so a kernel that reads a key it must not see fails. Long
// caches with few rows exercise the split-key chunks and their combine; a
// cache of one tile the single-chunk path. dtypes f32 / bf16 / f16 for q,
// caches and outputs, plus mixed q / cache dtypes (SIMT path).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda_test_util.h"
#include "ops/ops.h"

namespace el::test {
namespace {

constexpr DType kFloat[] = {DType::f32, DType::bf16, DType::f16};

// The coarser of two dtypes: the tolerance of a result computed from both.
DType coarser(DType a, DType b) {
  if (a == DType::bf16 || b == DType::bf16) return DType::bf16;
  if (a == DType::f16 || b == DType::f16) return DType::f16;
  return DType::f32;
}

Tensor host_positions(const std::vector<int32_t>& p) {
  return Tensor::from_ints(p, {static_cast<int64_t>(p.size())});
}

// A CPU tensor of `dtype` with the host f32 values.
Tensor host_as(const Tensor& host_f32, DType dtype) {
  Tensor t = Tensor::empty(host_f32.shape(), dtype);
  t.copy_from(host_f32);
  return t;
}

Tensor host_freq(int64_t d) { return ops::rope_inv_freq(d, 10000.f, Device::cpu()); }

std::string shape_name(const Shape& s) {
  std::string out;
  for (int64_t d : s) out += (out.empty() ? "" : "x") + std::to_string(d);
  return out;
}

// ---- rope_at / split_qkv_rope_at ------------------------------------------------------
TEST(CudaInferKernels, RopeAtMatchesCpu) {
  EL_REQUIRE_GPU();
  struct Case {
    Shape shape;
    std::vector<int32_t> pos;
  };
  const std::vector<Case> cases = {{{1, 1, 32, 64}, {4000}},
                                   {{3, 3, 4, 128}, {0, 17, 301}},
                                   {{2, 5, 3, 80}, {9, 0}},
                                   {{4, 1, 8, 6}, {1, 2, 3, 0}}};
  uint64_t seed = 100;
  for (DType dt : kFloat) {
    for (const Case& c : cases) {
      Rng rng(seed++);
      const Tensor x = random_host(c.shape, rng, dt);
      const Tensor f = host_freq(c.shape[3]);
      Tensor ref = Tensor::empty(c.shape);
      cpu_backend().rope_at(x, f, host_positions(c.pos), ref);
      const Tensor gpos = to_gpu(host_positions(c.pos));
      const Tensor gf = to_gpu(f);
      Tensor y = poisoned(c.shape, dt);
      gpu_backend().rope_at(to_gpu(x, dt), gf, gpos, y);
      EXPECT_TRUE(close_to(y, ref, tol(dt), "rope_at"))
          << dtype_name(dt) << " " << shape_name(c.shape);
      Tensor inplace = to_gpu(x, dt);  // y may alias x
      gpu_backend().rope_at(inplace, gf, gpos, inplace);
      EXPECT_TRUE(close_to(inplace, ref, tol(dt), "rope_at in place")) << dtype_name(dt);
      Tensor copy = poisoned(c.shape, dt);  // no frequencies: y = x
      gpu_backend().rope_at(to_gpu(x, dt), Tensor(), gpos, copy);
      EXPECT_EQ(copy.to_floats(), x.to_floats()) << dtype_name(dt);
    }
  }
}

TEST(CudaInferKernels, SplitQkvRopeAtMatchesCpu) {
  EL_REQUIRE_GPU();
  struct Case {
    int64_t b, t, h, hkv, d;
    std::vector<int32_t> pos;
  };
  const std::vector<Case> cases = {{2, 3, 8, 2, 64, {0, 511}},
                                   {1, 1, 32, 4, 64, {77}},
                                   {3, 2, 4, 4, 80, {5, 0, 1000}},
                                   {2, 4, 2, 1, 128, {3, 4}}};
  uint64_t seed = 200;
  for (DType dt : kFloat) {
    for (const Case& c : cases) {
      for (bool rotate : {true, false}) {
        Rng rng(seed++);
        const Shape ps{c.b, c.t, c.h + 2 * c.hkv, c.d};
        const Shape qs{c.b, c.t, c.h, c.d}, ks{c.b, c.t, c.hkv, c.d};
        const Tensor packed = random_host(ps, rng, dt);
        const Tensor f = rotate ? host_freq(c.d) : Tensor();
        Tensor q_ref = Tensor::empty(qs), k_ref = Tensor::empty(ks), v_ref = Tensor::empty(ks);
        cpu_backend().split_qkv_rope_at(packed, f, host_positions(c.pos), q_ref, k_ref, v_ref);
        Tensor q = poisoned(qs, dt), k = poisoned(ks, dt), v = poisoned(ks, dt);
        gpu_backend().split_qkv_rope_at(to_gpu(packed, dt), rotate ? to_gpu(f) : Tensor(),
                                        to_gpu(host_positions(c.pos)), q, k, v);
        const std::string what =
            std::string(dtype_name(dt)) + " " + shape_name(ps) + (rotate ? " rotated" : " copied");
        EXPECT_TRUE(close_to(q, q_ref, tol(dt), "q")) << what;
        EXPECT_TRUE(close_to(k, k_ref, tol(dt), "k")) << what;
        EXPECT_EQ(v.to_floats(), v_ref.to_floats()) << what;
      }
    }
  }
}

// ---- kv_cache_write ------------------------------------------------------------------
TEST(CudaInferKernels, KvCacheWriteMatchesCpuForEveryDtypePair) {
  EL_REQUIRE_GPU();
  struct Case {
    int64_t b, t, hkv, d, smax;
    std::vector<int32_t> pos;
  };
  const std::vector<Case> cases = {{3, 1, 4, 64, 37, {0, 36, 17}},
                                   {2, 3, 1, 80, 37, {34, 0}},
                                   {2, 3, 1, 6, 11, {8, 4}},
                                   {1, 5, 4, 128, 9, {4}}};
  uint64_t seed = 300;
  for (DType src : kFloat) {
    for (DType dst : kFloat) {
      for (const Case& c : cases) {
        Rng rng(seed++);
        const Shape ks{c.b, c.t, c.hkv, c.d}, cs{c.b, c.smax, c.hkv, c.d};
        const Tensor k = random_host(ks, rng, src), v = random_host(ks, rng, src);
        const Tensor kc0 = random_host(cs, rng, dst), vc0 = random_host(cs, rng, dst);
        Tensor kc_ref = host_as(kc0, dst), vc_ref = host_as(vc0, dst);
        cpu_backend().kv_cache_write(host_as(k, src), host_as(v, src), host_positions(c.pos),
                                     kc_ref, vc_ref);
        Tensor kc = to_gpu(kc0, dst), vc = to_gpu(vc0, dst);
        gpu_backend().kv_cache_write(to_gpu(k, src), to_gpu(v, src), to_gpu(host_positions(c.pos)),
                                     kc, vc);
        const std::string what = std::string(dtype_name(src)) + " -> " + dtype_name(dst) + " " +
                                 shape_name(ks) + " into " + shape_name(cs);
        EXPECT_EQ(kc.to_floats(), kc_ref.to_floats()) << what;  // conversions are exact copies
        EXPECT_EQ(vc.to_floats(), vc_ref.to_floats()) << what;
      }
    }
  }
}

// The fused split + RoPE + cache write against the CPU's split then write:
// every dtype pair (16-byte items for 16-bit pairs with D / 2 % 8 == 0, else
// scalar), rotated and not, batch rows at 0 and Smax - T.
TEST(CudaInferKernels, QkvRopeCacheWriteMatchesCpu) {
  EL_REQUIRE_GPU();
  struct Case {
    int64_t b, t, h, hkv, d, smax;
    std::vector<int32_t> pos;
  };
  const std::vector<Case> cases = {{1, 1, 32, 4, 64, 300, {77}},
                                   {2, 3, 8, 2, 64, 40, {0, 37}},
                                   {3, 2, 4, 4, 80, 9, {5, 0, 7}},
                                   {2, 1, 2, 1, 6, 5, {4, 0}},
                                   {1, 4, 2, 1, 128, 4, {0}}};
  uint64_t seed = 900;
  for (DType dt : kFloat) {
    for (DType cd : kFloat) {
      for (const Case& c : cases) {
        for (bool rotate : {true, false}) {
          Rng rng(seed++);
          const Shape ps{c.b, c.t, c.h + 2 * c.hkv, c.d}, qs{c.b, c.t, c.h, c.d},
              cs{c.b, c.smax, c.hkv, c.d};
          const Tensor packed = random_host(ps, rng, dt);
          const Tensor f = rotate ? host_freq(c.d) : Tensor();
          const Tensor kc0 = random_host(cs, rng, cd), vc0 = random_host(cs, rng, cd);
          Tensor q_ref = Tensor::empty(qs, dt);
          Tensor kc_ref = host_as(kc0, cd), vc_ref = host_as(vc0, cd);
          cpu_backend().qkv_rope_cache_write(host_as(packed, dt), f, host_positions(c.pos), q_ref,
                                             kc_ref, vc_ref);
          Tensor q = poisoned(qs, dt), kc = to_gpu(kc0, cd), vc = to_gpu(vc0, cd);
          gpu_backend().qkv_rope_cache_write(to_gpu(packed, dt), rotate ? to_gpu(f) : Tensor(),
                                             to_gpu(host_positions(c.pos)), q, kc, vc);
          const std::string what = std::string(dtype_name(dt)) + " -> " + dtype_name(cd) + " " +
                                   shape_name(ps) + (rotate ? " rotated" : " copied");
          EXPECT_TRUE(close_to(q, q_ref, tol(dt), "q")) << what;
          EXPECT_TRUE(close_to(kc, kc_ref, tol(coarser(dt, cd)), "k cache")) << what;
          EXPECT_EQ(vc.to_floats(), vc_ref.to_floats()) << what;  // v is copied exactly
        }
      }
    }
  }
}

TEST(CudaInferKernels, QkvRopeCacheWritePastTheCacheIsReported) {
  EL_REQUIRE_GPU();
  Rng rng(8);
  const Tensor packed = random_host({1, 2, 6, 64}, rng, DType::bf16);  // H 2, Hkv 2
  Tensor q = Tensor::zeros({1, 2, 2, 64}, DType::bf16, gpu());
  Tensor kc = Tensor::zeros({1, 5, 2, 64}, DType::bf16, gpu());
  Tensor vc = Tensor::zeros({1, 5, 2, 64}, DType::bf16, gpu());
  try {
    gpu_backend().qkv_rope_cache_write(to_gpu(packed, DType::bf16), to_gpu(host_freq(64)),
                                       to_gpu(host_positions({4})), q, kc, vc);
    gpu_backend().synchronize();
    FAIL() << "expected a device error";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("writes cache position 5, outside [0, 5)"), std::string::npos) << msg;
  }
  gpu_backend().synchronize();  // the record was cleared
}

// A read queued behind a kernel that recorded a device error reports it
// (without a stream-wide wait) and clears it.
TEST(CudaInferKernels, AQueuedReadReportsADeviceErrorBeforeIt) {
  EL_REQUIRE_GPU();
  Rng rng(9);
  const Tensor k = random_host({1, 1, 2, 64}, rng, DType::bf16);
  Tensor kc = Tensor::zeros({1, 4, 2, 64}, DType::bf16, gpu());
  Tensor vc = Tensor::zeros({1, 4, 2, 64}, DType::bf16, gpu());
  Backend& be = gpu_backend();
  be.kv_cache_write(to_gpu(k, DType::bf16), to_gpu(k, DType::bf16), to_gpu(host_positions({4})),
                    kc, vc);
  Result<int64_t> t = be.read_later(kc.view({4 * 2 * 64}).slice0(0, 8));
  ASSERT_TRUE(t.ok()) << t.error().message();
  const Result<std::vector<uint8_t>> got = be.read_wait(*t);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().what.find("writes cache position 4, outside [0, 4)"), std::string::npos)
      << got.error().message();
  be.synchronize();  // the record was cleared
}

TEST(CudaInferKernels, KvCacheWritePastTheCacheIsReported) {
  EL_REQUIRE_GPU();
  const int64_t smax = 37;
  Rng rng(7);
  const Tensor k = random_host({1, 3, 2, 64}, rng, DType::bf16);
  Tensor kc = Tensor::zeros({1, smax, 2, 64}, DType::bf16, gpu());
  Tensor vc = Tensor::zeros({1, smax, 2, 64}, DType::bf16, gpu());
  try {
    // Rows 35, 36 fit; row 37 does not.
    gpu_backend().kv_cache_write(to_gpu(k, DType::bf16), to_gpu(k, DType::bf16),
                                 to_gpu(host_positions({35})), kc, vc);
    gpu_backend().synchronize();
    FAIL() << "expected a device error";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(
        msg.find("cuda kv_cache_write: batch row 0 writes cache position 37, outside [0, 37)"),
        std::string::npos)
        << msg;
  }
  gpu_backend().synchronize();  // the record was cleared
  // The rows that fit were written.
  const std::vector<float> got = kc.to_floats(), want = k.to_floats();
  const size_t row = 2 * 64;
  for (size_t j = 0; j < 2 * row; ++j) EXPECT_EQ(got[35 * row + j], want[j]);
}

// ---- attention_cached ----------------------------------------------------------------
struct AttnCase {
  int64_t b, t, h, hkv, d, smax;
  std::vector<int32_t> pos;
};

std::string attn_name(const AttnCase& c, DType qd, DType cd) {
  return "B" + std::to_string(c.b) + " T" + std::to_string(c.t) + " H" + std::to_string(c.h) +
         " Hkv" + std::to_string(c.hkv) + " D" + std::to_string(c.d) + " Smax" +
         std::to_string(c.smax) + " q " + dtype_name(qd) + " cache " + dtype_name(cd);
}

// Random caches with NaN in every row a query must not see (s >= positions[b] + T).
Tensor poisoned_cache(const AttnCase& c, Rng& rng, DType cd) {
  Tensor x = random_host({c.b, c.smax, c.hkv, c.d}, rng, cd);
  float* p = x.data<float>();
  const int64_t row = c.hkv * c.d;
  for (int64_t i = 0; i < c.b; ++i) {
    for (int64_t s = c.pos[static_cast<size_t>(i)] + c.t; s < c.smax; ++s) {
      for (int64_t j = 0; j < row; ++j) p[(i * c.smax + s) * row + j] = NAN;
    }
  }
  return x;
}

void check_attention_cached(const AttnCase& c, DType qd, DType cd, uint64_t seed) {
  Rng rng(seed);
  const Shape qs{c.b, c.t, c.h, c.d};
  const Tensor q = random_host(qs, rng, qd);
  const Tensor kc = poisoned_cache(c, rng, cd), vc = poisoned_cache(c, rng, cd);
  const float scale = 1.f / std::sqrt(static_cast<float>(c.d));
  Tensor ref = Tensor::empty(qs);
  cpu_backend().attention_cached(q, host_as(kc, cd), host_as(vc, cd), host_positions(c.pos), scale,
                                 ref);
  Tensor out = poisoned(qs, qd);
  gpu_backend().attention_cached(to_gpu(q, qd), to_gpu(kc, cd), to_gpu(vc, cd),
                                 to_gpu(host_positions(c.pos)), scale, out);
  EXPECT_TRUE(close_to(out, ref, tol(coarser(qd, cd)), "attention_cached", 2.0))
      << attn_name(c, qd, cd);
}

// Decode and few-query shapes; the comments name the path each takes.
const std::vector<AttnCase>& attn_cases() {
  static const std::vector<AttnCase> cases = {
      {2, 1, 32, 4, 64, 517, {0, 516}},       // decode, G 8, split keys (4 warps x 16 keys)
      {3, 3, 8, 1, 128, 301, {0, 298, 150}},  // T 3 x G 8 = 24 rows: 2 row tiles x 2 key splits
      {2, 3, 4, 1, 80, 77, {0, 74}},          // D 80: SIMT
      {2, 1, 4, 4, 64, 37, {36, 5}},          // MHA, one tile: single chunk, direct write
      {1, 1, 16, 2, 128, 4099, {4098}},       // one row, long cache: many chunks
      {2, 4, 16, 2, 64, 1000, {996, 10}},     // T 4 x G 8 = 32 rows
      {1, 100, 8, 2, 64, 333, {200}},         // chunked prefill: 400 rows, 7 row tiles
      {2, 70, 4, 4, 128, 70, {0, 0}},         // prefill from 0, whole cache
      {3, 2, 6, 3, 6, 19, {17, 0, 9}},        // tiny odd head dim (SIMT)
  };
  return cases;
}

TEST(CudaInferKernels, AttentionCachedMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 400;
  for (const AttnCase& c : attn_cases()) {
    for (DType dt : kFloat) check_attention_cached(c, dt, dt, seed++);
  }
}

TEST(CudaInferKernels, AttentionCachedMixedDtypesMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 500;
  for (const AttnCase& c : {attn_cases()[0], attn_cases()[1], attn_cases()[4]}) {
    check_attention_cached(c, DType::f32, DType::bf16, seed++);  // f32 model, bf16 cache
    check_attention_cached(c, DType::bf16, DType::f32, seed++);
    check_attention_cached(c, DType::f16, DType::bf16, seed++);
  }
}

TEST(CudaInferKernels, AttentionCachedIsDeterministic) {
  EL_REQUIRE_GPU();
  const AttnCase c = attn_cases()[4];  // many chunks and a combine
  Rng rng(9);
  const Tensor q = to_gpu(random_host({c.b, c.t, c.h, c.d}, rng, DType::bf16), DType::bf16);
  const Tensor kc = to_gpu(poisoned_cache(c, rng, DType::bf16), DType::bf16);
  const Tensor vc = to_gpu(poisoned_cache(c, rng, DType::bf16), DType::bf16);
  const Tensor pos = to_gpu(host_positions(c.pos));
  const Tensor a = ops::attention_cached(q, kc, vc, pos);
  const Tensor b = ops::attention_cached(q, kc, vc, pos);
  EXPECT_EQ(a.to_floats(), b.to_floats());
}

// The prefill of a prompt through the cache equals the training attention
// kernel (causal) on the same GPU: two independent kernels agree.
TEST(CudaInferKernels, CachedPrefillEqualsCausalAttentionOnGpu) {
  EL_REQUIRE_GPU();
  for (DType dt : {DType::bf16, DType::f32}) {
    const int64_t b = 2, t = 50, h = 8, hkv = 2, d = 64, smax = 64;
    Rng rng(11);
    const Tensor q = to_gpu(random_host({b, t, h, d}, rng, dt), dt);
    const Tensor k = to_gpu(random_host({b, t, hkv, d}, rng, dt), dt);
    const Tensor v = to_gpu(random_host({b, t, hkv, d}, rng, dt), dt);
    Tensor kc = Tensor::zeros({b, smax, hkv, d}, dt, gpu());
    Tensor vc = Tensor::zeros({b, smax, hkv, d}, dt, gpu());
    const Tensor pos = to_gpu(host_positions({0, 0}));
    ops::kv_cache_write(k, v, pos, kc, vc);
    const Tensor got = ops::attention_cached(q, kc, vc, pos);
    const Tensor ref = ops::attention(q, k, v, /*causal=*/true);
    EXPECT_TRUE(close_to(got, ref.to(Device::cpu()), tol(dt), "prefill vs attention", 2.0))
        << dtype_name(dt);
    // The next decode step: positions advance on the device.
    Tensor pos2 = pos.clone();
    ops::increment_i32(pos2, static_cast<int32_t>(t));
    EXPECT_EQ(pos2.to_floats(), (std::vector<float>{float(t), float(t)}));
  }
}

// ---- argmax_rows / increment_i32 -----------------------------------------------------
TEST(CudaInferKernels, ArgmaxRowsMatchesCpu) {
  EL_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  uint64_t seed = 600;
  for (DType dt : kFloat) {
    for (int64_t n : {int64_t{1}, int64_t{5}}) {
      for (int64_t v : {int64_t{1}, int64_t{7}, int64_t{32000}, int64_t{100003}, int64_t{262144}}) {
        Rng rng(seed++);
        Tensor x = random_host({n, v}, rng, dt, 3.f);  // bf16 rounding makes many ties
        float* p = x.data<float>();
        for (int64_t r = 0; r < n; ++r) {
          float* row = p + r * v;
          if (v > 2) {  // a NaN first, a tie of the row's maximum, NaNs sprinkled
            row[0] = nan;
            row[v / 2] = 50.f;
            row[v - 1] = 50.f;
            for (int64_t j = 3; j < v; j += 997) row[j] = nan;
          }
          if (n > 1 && r == 1) std::fill(row, row + v, nan);   // nothing valid: 0
          if (n > 1 && r == 2) std::fill(row, row + v, -inf);  // all -inf: the first
        }
        const Tensor xh = host_as(x, dt);
        Tensor ref = Tensor::empty({n}, DType::i32);
        cpu_backend().argmax_rows(xh, ref);
        Tensor got =
            to_gpu(Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(n), -1), {n}));
        gpu_backend().argmax_rows(to_gpu(x, dt), got);
        EXPECT_EQ(got.to_floats(), ref.to_floats()) << dtype_name(dt) << " " << n << "x" << v;
      }
    }
  }
}

TEST(CudaInferKernels, IncrementI32) {
  EL_REQUIRE_GPU();
  for (int64_t n : {int64_t{1}, int64_t{64}, int64_t{5000}}) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<int32_t>(i * 3 - 7);
    Tensor x = to_gpu(Tensor::from_ints(v, {n}));
    gpu_backend().increment_i32(x, 5);
    gpu_backend().increment_i32(x, -2);
    const std::vector<float> got = x.to_floats();
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], float(i * 3 - 4));
  }
}

TEST(CudaInferKernels, BadArgumentsAreReported) {
  EL_REQUIRE_GPU();
  const Tensor q = Tensor::zeros({2, 1, 4, 64}, DType::bf16, gpu());
  const Tensor kc = Tensor::zeros({2, 8, 2, 64}, DType::bf16, gpu());
  Tensor out = Tensor::empty({2, 1, 4, 64}, DType::bf16, gpu());
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Exception& e) {
      return e.what();
    }
    return "";
  };
  // positions on the host, of the wrong length, of the wrong dtype
  std::string msg = message([&] {
    gpu_backend().attention_cached(q, kc, kc, host_positions({0, 0}), 0.125f, out);
  });
  EXPECT_NE(msg.find("cuda attention_cached: tensor is on cpu"), std::string::npos) << msg;
  msg = message(
      [&] { gpu_backend().attention_cached(q, kc, kc, to_gpu(host_positions({0})), 0.125f, out); });
  EXPECT_NE(msg.find("cuda attention_cached: positions has 1 entries for batch 2"),
            std::string::npos)
      << msg;
  msg = message([&] {
    gpu_backend().attention_cached(q, kc, kc, Tensor::zeros({2}, DType::f32, gpu()), 0.125f, out);
  });
  EXPECT_NE(msg.find("attention_cached"), std::string::npos) << msg;
  EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
  msg = message([&] {
    gpu_backend().attention_cached(q, kc, kc, to_gpu(host_positions({0, 0})), -1.f, out);
  });
  EXPECT_NE(msg.find("cuda attention_cached: scale -1 must be positive"), std::string::npos) << msg;
  const Tensor wide = Tensor::zeros({2, 1, 4, 640}, DType::bf16, gpu());
  const Tensor wide_kc = Tensor::zeros({2, 8, 2, 640}, DType::bf16, gpu());
  Tensor wide_out = Tensor::empty({2, 1, 4, 640}, DType::bf16, gpu());
  msg = message([&] {
    gpu_backend().attention_cached(wide, wide_kc, wide_kc, to_gpu(host_positions({0, 0})), 0.1f,
                                   wide_out);
  });
  EXPECT_NE(msg.find("cuda attention_cached: head dim 640 outside [1, 576]"), std::string::npos)
      << msg;
  Tensor small_kc = Tensor::zeros({2, 8, 3, 64}, DType::bf16, gpu());
  msg = message([&] {
    gpu_backend().kv_cache_write(q, q, to_gpu(host_positions({0, 0})), small_kc, small_kc);
  });
  EXPECT_NE(msg.find("cuda kv_cache_write: k [2, 1, 4, 64]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace el::test
