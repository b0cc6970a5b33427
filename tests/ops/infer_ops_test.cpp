// infer_ops_test.cpp — the inference-only ops (ops/ops.h "inference only")
// on the CPU backend, checked against the training ops they must agree with:
//  * attention_cached over a cache filled from position 0 equals causal
//    ops::attention over the prompt; a decode query at position p equals the
//    last row of causal attention over p + 1 tokens (rows of one batch at
//    different positions);
//  * rope_at / split_qkv_rope_at at positions p equal rope / split_qkv_rope
//    with pos_offset p, row by row;
//  * kv_cache_write places rows at positions[b] + t (converting dtypes) and
//    leaves the other rows untouched;
//  * attention_cached with value columns [o, o + n) equals those columns of
//    its full output (MLA's latent values);
//  * mla_decode_prologue equals the gathers + rmsnorm + rope_at +
//    kv_cache_write it fuses (f32, bf16; full, partial and no rotation);
//  * argmax_rows: first index on ties, NaN never wins;
//  * bad shapes and dtypes fail with messages naming the op and the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "common/ops_harness.h"
#include "core/tensor.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

constexpr Tolerance kTight{1e-5, 1e-5};

Tensor positions_of(const std::vector<int32_t>& p) {
  return Tensor::from_ints(p, {static_cast<int64_t>(p.size())});
}

// x[b, t0:t1] of a [B, T, ...] tensor, as a contiguous [1, t1 - t0, ...] tensor.
Tensor rows(const Tensor& x, int64_t b, int64_t t0, int64_t t1) {
  Shape inner(x.shape().begin() + 2, x.shape().end());
  const int64_t per_t = shape_numel(inner);
  Shape flat{x.dim(0) * x.dim(1), per_t};
  Tensor r = x.view(flat).slice0(b * x.dim(1) + t0, b * x.dim(1) + t1).clone();
  Shape out{1, t1 - t0};
  out.insert(out.end(), inner.begin(), inner.end());
  return r.view(out);
}

// The message of the el::Exception that fn throws ("" when it throws none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(call, text)                                            \
  do {                                                                          \
    const std::string el_msg_ = error_of([&] { (void)(call); });                \
    EXPECT_NE(el_msg_.find(text), std::string::npos) << "message: " << el_msg_; \
  } while (0)

TEST(InferOps, AttentionCachedPrefillEqualsCausalAttention) {
  struct Case {
    int64_t b, t, h, hkv, d, smax;
  };
  for (const Case c : {Case{2, 7, 6, 2, 8, 11}, Case{1, 5, 4, 4, 6, 5}, Case{3, 4, 4, 1, 16, 9}}) {
    Rng rng(static_cast<uint64_t>(c.t * 31 + c.h));
    const Tensor q = random_tensor({c.b, c.t, c.h, c.d}, rng);
    const Tensor k = random_tensor({c.b, c.t, c.hkv, c.d}, rng);
    const Tensor v = random_tensor({c.b, c.t, c.hkv, c.d}, rng);
    Tensor kc = Tensor::zeros({c.b, c.smax, c.hkv, c.d});
    Tensor vc = Tensor::zeros({c.b, c.smax, c.hkv, c.d});
    const Tensor pos = positions_of(std::vector<int32_t>(static_cast<size_t>(c.b), 0));
    ops::kv_cache_write(k, v, pos, kc, vc);
    const Tensor got = ops::attention_cached(q, kc, vc, pos);
    const Tensor ref = ops::attention(q, k, v, /*causal=*/true);
    EXPECT_TRUE(all_close(got.to_floats(), to_doubles(ref), kTight, "prefill"))
        << "B " << c.b << " T " << c.t << " H " << c.h << " Hkv " << c.hkv;
  }
}

TEST(InferOps, AttentionCachedValueColumnsAreThoseColumnsOfTheFullOutput) {
  const int64_t b = 2, t = 2, h = 4, hkv = 2, d = 10, smax = 9;
  Rng rng(77);
  const Tensor q = random_tensor({b, t, h, d}, rng);
  const Tensor kc = random_tensor({b, smax, hkv, d}, rng);
  const Tensor vc = random_tensor({b, smax, hkv, d}, rng);
  const Tensor pos = positions_of({3, 7});
  const std::vector<float> full = ops::attention_cached(q, kc, vc, pos, 0.3f).to_floats();
  for (const auto& [offset, cols] : {std::pair<int64_t, int64_t>{3, 5}, {0, 4}, {6, 0}}) {
    const Tensor part = ops::attention_cached(q, kc, vc, pos, 0.3f, Tensor(), offset, cols);
    const int64_t n = cols == 0 ? d - offset : cols;
    ASSERT_EQ(part.shape(), (Shape{b, t, h, n}));
    const std::vector<float> got = part.to_floats();
    for (int64_t r = 0; r < b * t * h; ++r)
      for (int64_t j = 0; j < n; ++j)
        ASSERT_EQ(got[static_cast<size_t>(r * n + j)], full[static_cast<size_t>(r * d + offset + j)])
            << "row " << r << " column " << j << " of values from " << offset;
  }
  EXPECT_ERROR_HAS(ops::attention_cached(q, kc, vc, pos, 0.3f, Tensor(), 6, 5),
                   "ops::attention_cached: value columns [6, 11) are not inside the cache rows' "
                   "10 columns");
}

TEST(InferOps, AttentionCachedInBf16CacheEqualsAttentionOnRoundedKeys) {
  Rng rng(17);
  const int64_t b = 2, t = 6, h = 4, hkv = 2, d = 8, smax = 8;
  const Tensor q = random_tensor({b, t, h, d}, rng);
  const Tensor k = random_tensor({b, t, hkv, d}, rng);
  const Tensor v = random_tensor({b, t, hkv, d}, rng);
  Tensor kc = Tensor::zeros({b, smax, hkv, d}, DType::bf16);
  Tensor vc = Tensor::zeros({b, smax, hkv, d}, DType::bf16);
  const Tensor pos = positions_of({0, 0});
  ops::kv_cache_write(k, v, pos, kc, vc);  // f32 rows into a bf16 cache
  auto rounded = [](const Tensor& x) {
    Tensor lo = Tensor::empty(x.shape(), DType::bf16);
    lo.copy_from(x);
    Tensor back = Tensor::empty(x.shape());
    back.copy_from(lo);
    return back;
  };
  const Tensor got = ops::attention_cached(q, kc, vc, pos);
  const Tensor ref = ops::attention(q, rounded(k), rounded(v), true);
  EXPECT_EQ(got.dtype(), DType::f32);
  EXPECT_TRUE(all_close(got.to_floats(), to_doubles(ref), kTight, "bf16 cache"));
}

TEST(InferOps, DecodeQueryEqualsLastRowOfFullCausalAttention) {
  // Two sequences of one batch at different positions (0 and 12), plus a
  // middle one: each decode query must see exactly its own p + 1 keys.
  const int64_t h = 8, hkv = 2, d = 16, smax = 16;
  const std::vector<int32_t> p = {0, 12, 5};
  const int64_t b = static_cast<int64_t>(p.size()), lmax = 13;
  Rng rng(23);
  const Tensor q_all = random_tensor({b, lmax, h, d}, rng);
  const Tensor k_all = random_tensor({b, lmax, hkv, d}, rng);
  const Tensor v_all = random_tensor({b, lmax, hkv, d}, rng);
  Tensor kc = Tensor::full({b, smax, hkv, d}, 3.f);
  Tensor vc = Tensor::full({b, smax, hkv, d}, -3.f);
  // The prefix of every row (rows past a sequence's length hold keys it must not see).
  ops::kv_cache_write(k_all, v_all, positions_of({0, 0, 0}), kc, vc);
  Tensor q = Tensor::empty({b, 1, h, d});
  for (int64_t i = 0; i < b; ++i) {
    q.view({b, h * d}).slice0(i, i + 1).copy_from(rows(q_all, i, p[i], p[i] + 1).view({1, h * d}));
  }
  const Tensor got = ops::attention_cached(q, kc, vc, positions_of(p));
  const std::vector<float> g = got.to_floats();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t len = p[i] + 1;
    const Tensor full = ops::attention(rows(q_all, i, 0, len), rows(k_all, i, 0, len),
                                       rows(v_all, i, 0, len), true);
    const std::vector<double> last = to_doubles(rows(full, 0, len - 1, len));
    const std::vector<float> mine(g.begin() + i * h * d, g.begin() + (i + 1) * h * d);
    EXPECT_TRUE(all_close(mine, last, kTight, "decode row")) << "row " << i << " at " << p[i];
  }
}

TEST(InferOps, RopeAtEqualsRopeAtEachRowsOffset) {
  Rng rng(3);
  const int64_t b = 3, t = 5, h = 2, d = 8;
  const std::vector<int32_t> p = {0, 7, 100};
  const Tensor x = random_tensor({b, t, h, d}, rng);
  const Tensor f = ops::rope_inv_freq(d, 10000.f, Device::cpu());
  const Tensor y = ops::rope_at(x, f, positions_of(p));
  for (int64_t i = 0; i < b; ++i) {
    const Tensor ref = ops::rope(rows(x, i, 0, t), f, p[i]);
    EXPECT_TRUE(all_close(rows(y, i, 0, t).to_floats(), to_doubles(ref), kTight, "rope_at"))
        << "row " << i;
  }
  // No frequencies: no rotation.
  const Tensor same = ops::rope_at(x, Tensor(), positions_of(p));
  EXPECT_EQ(same.to_floats(), x.to_floats());
}

TEST(InferOps, SplitQkvRopeAtEqualsSplitQkvRope) {
  Rng rng(4);
  const int64_t b = 2, t = 4, h = 4, hkv = 2, d = 8;
  const std::vector<int32_t> p = {3, 9};
  const Tensor packed = random_tensor({b, t, (h + 2 * hkv) * d}, rng);
  const Tensor f = ops::rope_inv_freq(d, 10000.f, Device::cpu());
  for (const Tensor& freq : {f, Tensor()}) {
    const ops::QKV got = ops::split_qkv_rope_at(packed, h, hkv, freq, positions_of(p));
    for (int64_t i = 0; i < b; ++i) {
      const ops::QKV ref = ops::split_qkv_rope(rows(packed, i, 0, t), h, hkv, freq, p[i]);
      EXPECT_TRUE(all_close(rows(got.q, i, 0, t).to_floats(), to_doubles(ref.q), kTight, "q"));
      EXPECT_TRUE(all_close(rows(got.k, i, 0, t).to_floats(), to_doubles(ref.k), kTight, "k"));
      EXPECT_TRUE(all_close(rows(got.v, i, 0, t).to_floats(), to_doubles(ref.v), kTight, "v"));
    }
  }
}

TEST(InferOps, QkvRopeCacheWriteEqualsSplitThenCacheWrite) {
  Rng rng(14);
  const int64_t b = 2, t = 3, h = 4, hkv = 2, d = 8, smax = 11;
  const std::vector<int32_t> p = {0, static_cast<int32_t>(smax - t)};
  const Tensor packed = random_tensor({b, t, (h + 2 * hkv) * d}, rng);
  const Tensor f = ops::rope_inv_freq(d, 10000.f, Device::cpu());
  for (DType cache_dtype : {DType::f32, DType::bf16}) {
    for (const Tensor& freq : {f, Tensor()}) {
      Tensor kc = Tensor::full({b, smax, hkv, d}, 3.f, cache_dtype);
      Tensor vc = Tensor::full({b, smax, hkv, d}, -3.f, cache_dtype);
      Tensor kc_ref = Tensor::full({b, smax, hkv, d}, 3.f, cache_dtype);
      Tensor vc_ref = Tensor::full({b, smax, hkv, d}, -3.f, cache_dtype);
      const Tensor q = ops::qkv_rope_cache_write(packed, h, hkv, freq, positions_of(p), kc, vc);
      const ops::QKV ref = ops::split_qkv_rope_at(packed, h, hkv, freq, positions_of(p));
      ops::kv_cache_write(ref.k, ref.v, positions_of(p), kc_ref, vc_ref);
      EXPECT_EQ(q.shape(), ref.q.shape());
      EXPECT_EQ(q.to_floats(), ref.q.to_floats());
      EXPECT_EQ(kc.to_floats(), kc_ref.to_floats()) << dtype_name(cache_dtype);
      EXPECT_EQ(vc.to_floats(), vc_ref.to_floats()) << dtype_name(cache_dtype);
    }
  }
  Tensor small = Tensor::zeros({b, 2, hkv, d});  // Smax 2 < T 3
  EXPECT_ERROR_HAS(ops::qkv_rope_cache_write(packed, h, hkv, f, positions_of(p), small, small),
                   "ops::qkv_rope_cache_write: caches f32[2, 2, 2, 8] / f32[2, 2, 2, 8] do not fit "
                   "packed f32[2, 3, 64] (expected [2, >= 3, 2, 8])");
}

// The cache layout of the test: D 10 columns from L 5 latent values and R 4
// RoPE-key values (sources 0..8), one zero column.
const std::vector<int32_t> kMlaRowMap = {5, 0, 1, 2, -1, 6, 3, 4, 7, 8};

TEST(InferOps, MlaDecodePrologueEqualsTheOpsItFuses) {
  const int64_t b = 2, t = 3, h = 3, d = 10, latent = 5, sources = 9, smax = 8;
  const float eps = 1e-6f;
  const std::vector<int32_t> p = {0, static_cast<int32_t>(smax - t)};
  Rng rng(21);
  const Tensor packed_f32 = random_tensor({b, t, h * d + sources}, rng);
  const Tensor norm_w = random_tensor({latent}, rng);
  const Tensor f = Tensor::from_floats({0.9f, 0.3f, 0.0f, 0.05f, 0.0f}, {d / 2});
  // rope_at's partial rotation (pairs (0, 2) and (1, 3)), as MLA's [rope | latent] rows.
  const Tensor f_partial = Tensor::from_floats({0.7f, 0.2f}, {2});
  const Tensor row_map = Tensor::from_ints(kMlaRowMap, {d});
  auto cols = [](int64_t from, int64_t n) {
    std::vector<int64_t> c(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) c[static_cast<size_t>(i)] = from + i;
    return c;
  };
  std::vector<int64_t> lat_cols(d, -1), rope_cols(d, -1);
  for (int64_t m = 0; m < d; ++m) {
    const int32_t s = kMlaRowMap[static_cast<size_t>(m)];
    (s >= 0 && s < latent ? lat_cols : rope_cols)[static_cast<size_t>(m)] = s;
  }
  const Device cpu = Device::cpu();
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor packed = Tensor::empty(packed_f32.shape(), dt);
    packed.copy_from(packed_f32);
    Tensor w = Tensor::empty(norm_w.shape(), dt);
    w.copy_from(norm_w);
    for (const Tensor& freq : {f, f_partial, Tensor()}) {
      Tensor kc = Tensor::full({b, smax, 1, d}, 3.f, dt), vc = Tensor::full({b, smax, 1, d}, -3.f, dt);
      const Tensor q = ops::mla_decode_prologue(packed, h, latent, row_map, w, eps, freq,
                                                positions_of(p), kc, vc);
      // The composition forward_cached ran before the fused op.
      const Tensor kva = ops::gather_columns(packed, ops::make_column_map(h * d + sources,
                                                                          cols(h * d, sources), cpu));
      const Tensor c = ops::rmsnorm(ops::gather_columns(kva, ops::make_column_map(sources, cols(0, latent), cpu)), w, eps);
      Tensor row = ops::add(ops::gather_columns(c, ops::make_column_map(latent, lat_cols, cpu)),
                            ops::gather_columns(kva, ops::make_column_map(sources, rope_cols, cpu)));
      row = ops::rope_at(ops::reshape(row, {b, t, 1, d}), freq, positions_of(p));
      Tensor kc_ref = Tensor::full({b, smax, 1, d}, 3.f, dt), vc_ref = Tensor::full({b, smax, 1, d}, -3.f, dt);
      ops::kv_cache_write(row, row, positions_of(p), kc_ref, vc_ref);
      const Tensor q_ref = ops::rope_at(
          ops::reshape(ops::gather_columns(packed, ops::make_column_map(h * d + sources, cols(0, h * d), cpu)),
                       {b, t, h, d}),
          freq, positions_of(p));
      const std::string what = std::string(dtype_name(dt)) +
                               (freq.defined() ? fmt::format(" rope {}", freq.numel()) : " plain");
      // (f32: the norm's sum in another order; bf16: that can flip a rounding.)
      const Tolerance tol = dt == DType::f32 ? kTight : Tolerance{8e-3, 8e-3};
      EXPECT_TRUE(all_close(q.to_floats(), to_doubles(q_ref), tol, "q")) << what;
      EXPECT_TRUE(all_close(kc.to_floats(), to_doubles(kc_ref), tol, "k_cache")) << what;
      EXPECT_TRUE(all_close(vc.to_floats(), to_doubles(vc_ref), tol, "v_cache")) << what;
    }
  }
  // v_cache as the same tensor as k_cache (an MLA cache): written once, same result.
  Tensor kc = Tensor::zeros({b, smax, 1, d});
  EXPECT_NO_THROW(ops::mla_decode_prologue(packed_f32, h, latent, row_map, norm_w, eps, f,
                                           positions_of(p), kc, kc));
  Tensor small = Tensor::zeros({b, 2, 1, d});  // Smax 2 < T 3
  EXPECT_ERROR_HAS(ops::mla_decode_prologue(packed_f32, h, latent, row_map, norm_w, eps, f,
                                            positions_of(p), small, small),
                   "ops::mla_decode_prologue: packed f32[2, 3, 39] does not fit 3 heads of 10 "
                   "cache columns plus 5 latent values");
  const Tensor bad_map = Tensor::from_ints({5, 0, 1, 2, -1, 6, 3, 4, 7, 9}, {d});
  EXPECT_ERROR_HAS(ops::mla_decode_prologue(packed_f32, h, latent, bad_map, norm_w, eps, f,
                                            positions_of(p), kc, kc),
                   "row_map[9] = 9 is outside the 9 kv_a columns");
}

TEST(InferOps, KvCacheWritePlacesRowsAndLeavesOthers) {
  const int64_t b = 2, t = 3, hkv = 2, d = 4, smax = 9;
  const std::vector<int32_t> p = {0, static_cast<int32_t>(smax - t)};
  for (DType cache_dtype : {DType::f32, DType::bf16, DType::f16}) {
    Rng rng(5);
    const Tensor k = random_tensor({b, t, hkv, d}, rng);
    const Tensor v = random_tensor({b, t, hkv, d}, rng);
    Tensor kc = Tensor::full({b, smax, hkv, d}, 7.f, cache_dtype);
    Tensor vc = Tensor::full({b, smax, hkv, d}, -7.f, cache_dtype);
    ops::kv_cache_write(k, v, positions_of(p), kc, vc);
    // The written rows hold k/v rounded to the cache's dtype.
    Tensor k_round = Tensor::empty(k.shape(), cache_dtype),
           v_round = Tensor::empty(v.shape(), cache_dtype);
    k_round.copy_from(k);
    v_round.copy_from(v);
    const std::vector<float> kv = k_round.to_floats(), vv = v_round.to_floats();
    const std::vector<float> kg = kc.to_floats(), vg = vc.to_floats();
    const int64_t row = hkv * d;
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t s = 0; s < smax; ++s) {
        const bool written = s >= p[i] && s < p[i] + t;
        for (int64_t j = 0; j < row; ++j) {
          const size_t at = static_cast<size_t>((i * smax + s) * row + j);
          const size_t src = static_cast<size_t>((i * t + (s - p[i])) * row + j);
          EXPECT_EQ(kg[at], written ? kv[src] : 7.f)
              << dtype_name(cache_dtype) << " b " << i << " s " << s;
          EXPECT_EQ(vg[at], written ? vv[src] : -7.f)
              << dtype_name(cache_dtype) << " b " << i << " s " << s;
        }
      }
    }
  }
}

TEST(InferOps, ArgmaxRowsTakesFirstMaximumAndSkipsNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {
      1,    3,    3,    2,     // tie: first index
      nan,  1,    nan,  1,     // NaN skipped, tie
      nan,  nan,  nan,  nan,   // nothing valid: 0
      -inf, -inf, -inf, -inf,  // all -inf: the first
      -inf, nan,  5,    5,     //
      nan,  -2,   -1,   -1,    //
  };
  const std::vector<float> want = {1, 1, 0, 0, 2, 2};
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Tensor xt = Tensor::empty({2, 3, 4}, dt);  // leading dims flatten into rows
    xt.copy_from(Tensor::from_floats(x, {2, 3, 4}));
    const Tensor idx = ops::argmax_rows(xt);
    EXPECT_EQ(idx.dtype(), DType::i32);
    EXPECT_EQ(idx.shape(), (Shape{6}));
    EXPECT_EQ(idx.to_floats(), want) << dtype_name(dt);
  }
}

TEST(InferOps, IncrementI32AddsDelta) {
  Tensor x = Tensor::from_ints({1, -2, 5}, {3});
  ops::increment_i32(x, 3);
  EXPECT_EQ(x.to_floats(), (std::vector<float>{4, 1, 8}));
  ops::increment_i32(x, -4);
  EXPECT_EQ(x.to_floats(), (std::vector<float>{0, -3, 4}));
}

TEST(InferOps, BadShapesAndDtypesAreReported) {
  const Tensor q = Tensor::zeros({2, 1, 4, 8});
  Tensor kc = Tensor::zeros({2, 5, 2, 8}), vc = Tensor::zeros({2, 5, 2, 8});
  const Tensor pos2 = positions_of({0, 1});
  EXPECT_ERROR_HAS(ops::attention_cached(q, kc, vc, positions_of({0, 1, 2})),
                   "ops::attention_cached: positions i32[3] does not match batch 2");
  EXPECT_ERROR_HAS(ops::attention_cached(q, kc, vc, Tensor::zeros({2})),
                   "ops::attention_cached: positions is f32[2], expected dtype i32");
  EXPECT_ERROR_HAS(
      ops::attention_cached(Tensor::zeros({2, 1, 3, 8}), kc, vc, pos2),
      "ops::attention_cached: q f32[2, 1, 3, 8] and cache f32[2, 5, 2, 8] do not match");
  EXPECT_ERROR_HAS(
      ops::attention_cached(q, kc, Tensor::zeros({2, 5, 2, 8}, DType::bf16), pos2),
      "ops::attention_cached: v_cache is bf16[2, 5, 2, 8] but k_cache is f32[2, 5, 2, 8]");
  const Tensor k = Tensor::zeros({2, 6, 2, 8});
  EXPECT_ERROR_HAS(ops::kv_cache_write(k, k, pos2, kc, vc),
                   "ops::kv_cache_write: k f32[2, 6, 2, 8] / v f32[2, 6, 2, 8] do not fit cache "
                   "f32[2, 5, 2, 8]");
  const Tensor k3 = Tensor::zeros({2, 3, 2, 8});
  EXPECT_ERROR_HAS(ops::kv_cache_write(k3, k3, positions_of({0, 3}), kc, vc),
                   "kv_cache_write: row 1 writes positions [3, 6) of a cache of 5");
  EXPECT_ERROR_HAS(ops::kv_cache_write(k3, k3, positions_of({-1, 0}), kc, vc),
                   "kv_cache_write: row 0 writes positions [-1, 2) of a cache of 5");
  const Tensor f = ops::rope_inv_freq(8, 10000.f, Device::cpu());
  EXPECT_ERROR_HAS(ops::rope_at(Tensor::zeros({1, 2, 3, 5}), Tensor::zeros({2}), positions_of({0})),
                   "ops::rope_at: x is f32[1, 2, 3, 5], expected [B, T, H, D]");
  EXPECT_ERROR_HAS(ops::rope_at(Tensor::zeros({1, 2, 3, 6}), f, positions_of({0})),
                   "ops::rope_at: inv_freq f32[4] does not match head dim 6");
  EXPECT_ERROR_HAS(
      ops::split_qkv_rope_at(Tensor::zeros({1, 2, 30}), 2, 1, f, positions_of({0})),
      "ops::split_qkv_rope_at: packed is f32[1, 2, 30], expected [B, T, (H + 2 Hkv) * D]");
  EXPECT_ERROR_HAS(ops::argmax_rows(Tensor::zeros({3, 0})), "ops::argmax_rows: x is f32[3, 0]");
  Tensor not_int = Tensor::zeros({2});
  EXPECT_ERROR_HAS(ops::increment_i32(not_int, 1),
                   "ops::increment_i32: x is f32[2], expected dtype i32");
  Tensor trainable = Tensor::zeros({2, 1, 4, 8});
  trainable.set_requires_grad(true);
  EXPECT_ERROR_HAS(ops::attention_cached(trainable, kc, vc, pos2),
                   "ops::attention_cached: inference op called on a tensor that requires grad");
}

}  // namespace
}  // namespace el::test
