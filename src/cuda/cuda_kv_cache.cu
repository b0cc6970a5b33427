// cuda_kv_cache.cu — writes into the KV cache at per-row positions
// (ops/backend.h, "inference with a KV cache"):
//  * kv_cache_write: k/v rows to cache rows positions[b] + t, any float dtype
//    pair;
//  * qkv_rope_cache_write: the cached attention path's split of the packed
//    q/k/v projection, RoPE on q and k, and the cache writes of k and v in
//    one kernel (three launches per layer otherwise: at batch 1 each is a
//    few microseconds of a ~1 ms decode step);
//  * mla_decode_prologue: MLA's absorbed decode (nn/mla.h) — the latent
//    row's RMSNorm, its column layout, RoPE on it and on the queries, and the
//    cache write — in one kernel instead of eight.
// A position outside [0, Smax) is reported (deferred device error) and that
// row's cache write skipped: it would land in another sequence's rows.
#include <algorithm>
#include <climits>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// dst[u] = src[u] converted, u < units, strided over the block's threads.
template <class TS, class TD, int V>
__device__ __forceinline__ void copy_convert_row(const Pack<TS, V>* src, Pack<TD, V>* dst,
                                                 int units) {
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const Pack<TS, V> x = src[u];
    Pack<TD, V> y;
#pragma unroll
    for (int e = 0; e < V; ++e) y.v[e] = from_f<TD>(to_f<TS>(x.v[e]));
    dst[u] = y;
  }
}

// ---- kv_cache_write ----------------------------------------------------------------
// Block (row b * T + t, y: 0 = k, 1 = v): the row's `units` packs of V
// elements go to cache row positions[b] + t, converted to the cache's dtype.
// A position outside [0, Smax) is reported (deferred device error) and its
// row skipped: writing it would land in another sequence's rows.
template <class TS, class TD, int V>
__global__ void kv_write_kernel(const TS* __restrict__ k, const TS* __restrict__ v,
                                TD* __restrict__ kc, TD* __restrict__ vc,
                                const int32_t* __restrict__ pos, int t_len, int smax, int units,
                                DeviceErrorRecord* err) {
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const int64_t row = blockIdx.x;
  const int b = static_cast<int>(row / t_len);
  const int64_t p = int64_t{pos[b]} + (row - int64_t{b} * t_len);
  if (p < 0 || p >= smax) {
    if (threadIdx.x == 0 && blockIdx.y == 0)
      report_device_error(err, kErrKvCachePosition, b, p, smax);
    return;
  }
  const auto* src = reinterpret_cast<const Pack<TS, V>*>(blockIdx.y == 0 ? k : v) + row * units;
  auto* dst =
      reinterpret_cast<Pack<TD, V>*>(blockIdx.y == 0 ? kc : vc) + (int64_t{b} * smax + p) * units;
  copy_convert_row(src, dst, units);
}

template <class TS, class TD, int V>
void launch_kv_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& kc,
                     Tensor& vc, int64_t rows, int t_len, int smax, int64_t row_elems) {
  const int units = static_cast<int>(row_elems / V);
  const int threads = std::min(256, (units + 31) / 32 * 32);
  Context& cx = ctx();
  launch_kernel(kv_write_kernel<TS, TD, V>, dim3(static_cast<unsigned>(rows), 2), threads, 0,
                cx.stream, k.data<TS>(), v.data<TS>(), kc.data<TD>(), vc.data<TD>(),
                positions.data<int32_t>(), t_len, smax, units, cx.dev_error);
}

// ---- qkv_rope_cache_write ------------------------------------------------------------
constexpr int kQkvMaxThreads = 256;

struct QkvCacheArgs {
  const void* packed;     // [B * T, (H + 2 Hkv) * D] T
  const void* inv_freq;   // [D / 2] or nullptr (no rotation)
  DType freq_dtype;
  const int32_t* pos;     // [B]
  void* q;                // [B * T, H * D] T
  void* kc;               // [B, Smax, Hkv, D] TC
  void* vc;
  int t_len, h, hkv, d, smax;
  DeviceErrorRecord* err;
};

// Block: one position row (b, t). Its D / 2 angles (positions[b] + t) x
// inv_freq[i] go to shared memory once; items of V elements of each q/k
// head's first half are rotated with the matching second half (rotate-half
// RoPE, as rope_kernel); q goes to q, k and v to cache row positions[b] + t,
// rounded to T first and then converted to TC (what split + kv_cache_write
// store).
template <class T, class TC, int V>
__global__ void __launch_bounds__(kQkvMaxThreads) qkv_rope_cache_kernel(const QkvCacheArgs a) {
  extern __shared__ float2 cs[];  // [D / 2]: (cos, sin)
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const int64_t row = blockIdx.x;
  const int b = static_cast<int>(row / a.t_len);
  const int64_t p = int64_t{a.pos[b]} + (row - int64_t{b} * a.t_len);
  const bool in_cache = p >= 0 && p < a.smax;
  if (!in_cache && threadIdx.x == 0) report_device_error(a.err, kErrKvCachePosition, b, p, a.smax);
  const int half = a.d / 2;
  if (a.inv_freq) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      float sn, c;  // as rope_kernel: f32 position times f32 frequency
      sincosf(static_cast<float>(p) * ld(a.inv_freq, a.freq_dtype, i), &sn, &c);
      cs[i] = make_float2(c, sn);
    }
  }
  __syncthreads();
  const int64_t width = int64_t{a.h + 2 * a.hkv} * a.d;
  const T* src = static_cast<const T*>(a.packed) + row * width;
  T* qo = static_cast<T*>(a.q) + row * a.h * a.d;
  const int64_t cache_row = (int64_t{b} * a.smax + p) * a.hkv * a.d;
  const int hv = half / V;
  const int qk_items = (a.h + a.hkv) * hv;
  for (int j = threadIdx.x; j < qk_items; j += blockDim.x) {
    const int head = j / hv, i0 = (j - head * hv) * V;
    if (head >= a.h && !in_cache) break;  // k heads follow the q heads
    const T* x = src + head * a.d + i0;
    const Pack<T, V> x1 = *reinterpret_cast<const Pack<T, V>*>(x);
    const Pack<T, V> x2 = *reinterpret_cast<const Pack<T, V>*>(x + half);
    Pack<T, V> y1, y2;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float u = to_f<T>(x1.v[e]), w = to_f<T>(x2.v[e]);
      if (a.inv_freq) {
        const float2 t = cs[i0 + e];
        y1.v[e] = from_f<T>(u * t.x - w * t.y);
        y2.v[e] = from_f<T>(w * t.x + u * t.y);
      } else {
        y1.v[e] = x1.v[e];
        y2.v[e] = x2.v[e];
      }
    }
    if (head < a.h) {
      *reinterpret_cast<Pack<T, V>*>(qo + head * a.d + i0) = y1;
      *reinterpret_cast<Pack<T, V>*>(qo + head * a.d + i0 + half) = y2;
    } else {
      TC* k = static_cast<TC*>(a.kc) + cache_row + (head - a.h) * a.d + i0;
      Pack<TC, V> c1, c2;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        c1.v[e] = from_f<TC>(to_f<T>(y1.v[e]));
        c2.v[e] = from_f<TC>(to_f<T>(y2.v[e]));
      }
      *reinterpret_cast<Pack<TC, V>*>(k) = c1;
      *reinterpret_cast<Pack<TC, V>*>(k + half) = c2;
    }
  }
  if (!in_cache) return;
  const auto* vs = reinterpret_cast<const Pack<T, V>*>(src + int64_t{a.h + a.hkv} * a.d);
  auto* vd = reinterpret_cast<Pack<TC, V>*>(static_cast<TC*>(a.vc) + cache_row);
  copy_convert_row(vs, vd, a.hkv * a.d / V);
}

template <class T, class TC, int V>
void launch_qkv_rope_cache(const QkvCacheArgs& a, int64_t rows) {
  const int items = std::max((a.h + a.hkv) * (a.d / 2 / V), a.hkv * a.d / V);
  const int threads = std::min(kQkvMaxThreads, (items + 31) / 32 * 32);
  launch_kernel(qkv_rope_cache_kernel<T, TC, V>, static_cast<unsigned>(rows), threads,
                sizeof(float2) * static_cast<size_t>(a.d / 2), ctx().stream, a);
}

// ---- mla_decode_prologue --------------------------------------------------------------
constexpr int kMlaThreads = 256;

struct MlaPrologueArgs {
  const void* packed;      // [B * T, width] T: H heads of D, then `sources` kv_a values
  const int32_t* row_map;  // [D]: cache column -> kv_a source (< 0: zero)
  const void* norm_w;      // [latent]
  DType norm_dtype;
  const void* inv_freq;  // [rot] or nullptr (no rotation)
  DType freq_dtype;
  const int32_t* pos;  // [B]
  void* q;             // [B * T, H * D] T
  void* kc;            // [B, Smax, 1, D] TC
  void* vc;            // nullptr when v_cache is k_cache
  float eps;
  int t_len, h, d, latent, sources, smax;
  int rot;  // rotated pairs (i, rot + i), i < rot (0: none); columns from 2 rot on pass through
  int64_t width;
  DeviceErrorRecord* err;
};

// Grid (B T, 1 + H): block (r, 0) writes the cache row of position row r =
// (b, t), block (r, 1 + h) the rotated query head h of that row; the two
// need nothing from each other, so a batch-1 step runs 1 + H short blocks in
// parallel instead of one block walking the row and every head in turn (the
// prologue was 8.7 us of an MLA layer's ~45 at 8K, H100, one block).
// Cache row: the latent's sum of squares (one block reduction) and the row in
// the cache's column order in shared memory (latent values normed and rounded
// to T, as ops::rmsnorm stores them), then the rotate-half RoPE of its first
// 2 rot columns (rope_at's partial rotation), the other columns passed through,
// converted to TC. Query head: the same rotation of its first 2 rot columns
// (rounded to T, what rope_at stores), the rest copied. The weights (row_map,
// the norm, the frequencies) are read before the programmatic-launch wait:
// they do not come from the previous kernel. A bad position skips the cache
// write (deferred error), as kv_cache_write; a row_map entry past the sources
// reads zero (deferred error).
template <class T, class TC>
__global__ void __launch_bounds__(kMlaThreads) mla_prologue_kernel(const MlaPrologueArgs a) {
  extern __shared__ float mla_smem[];  // the row [D], then the kv_a sources [sources]
  __shared__ float scratch[32];
  const int half = a.rot;  // pairs (i, half + i)
  const int64_t r = blockIdx.x;
  const int head = static_cast<int>(blockIdx.y) - 1;  // -1: the cache row
  const int b = static_cast<int>(r / a.t_len);
  const T* src = static_cast<const T*>(a.packed) + r * a.width;
  // Constants first (not written by the previous kernel): this thread's
  // frequency (pair threadIdx.x) and, for the cache row, its columns' sources.
  const float freq = a.inv_freq && static_cast<int>(threadIdx.x) < half
                         ? ld(a.inv_freq, a.freq_dtype, threadIdx.x)
                         : 0.f;
  // cos / sin of pair i at position p, as rope_kernel: f32 position x f32 frequency.
  auto angle = [&](int64_t p, int i, float& c, float& sn) {
    sn = 0.f;
    c = 1.f;
    if (!a.inv_freq) return;
    const float f = i == static_cast<int>(threadIdx.x) ? freq : ld(a.inv_freq, a.freq_dtype, i);
    sincosf(static_cast<float>(p) * f, &sn, &c);
  };
  if (head >= 0) {  // ---- query head `head`: no cache, no norm
    pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
    pdl_trigger();
    const int64_t p = int64_t{a.pos[b]} + (r - int64_t{b} * a.t_len);
    const T* x = src + int64_t{head} * a.d;
    T* qo = static_cast<T*>(a.q) + (r * a.h + head) * a.d;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const float x1 = to_f<T>(x[i]), x2 = to_f<T>(x[i + half]);
      float c, sn;
      angle(p, i, c, sn);
      qo[i] = from_f<T>(x1 * c - x2 * sn);
      qo[i + half] = from_f<T>(x2 * c + x1 * sn);
    }
    for (int m = 2 * half + static_cast<int>(threadIdx.x); m < a.d; m += blockDim.x) qo[m] = x[m];
    return;
  }
  // ---- the cache row
  float* row = mla_smem;
  float* srcs = mla_smem + a.d;
  constexpr int kCols = 3;  // columns per thread held in registers (d <= 3 x 256)
  int sm[kCols];
  float nw[kCols];
#pragma unroll
  for (int u = 0; u < kCols; ++u) {
    const int m = threadIdx.x + u * kMlaThreads;
    sm[u] = m < a.d ? a.row_map[m] : -1;
    nw[u] = sm[u] >= 0 && sm[u] < a.latent ? ld(a.norm_w, a.norm_dtype, sm[u]) : 0.f;
  }
  pdl_wait();
  pdl_trigger();
  const int64_t p = int64_t{a.pos[b]} + (r - int64_t{b} * a.t_len);
  const bool in_cache = p >= 0 && p < a.smax;
  if (!in_cache && threadIdx.x == 0) report_device_error(a.err, kErrKvCachePosition, b, p, a.smax);
  const T* kva = src + int64_t{a.h} * a.d;
  float ss = 0.f;
  for (int j = threadIdx.x; j < a.sources; j += blockDim.x) {
    const float v = to_f<T>(kva[j]);
    srcs[j] = v;
    if (j < a.latent) ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss, scratch);  // (synchronises: srcs is complete after it)
  const float rstd = rsqrtf(ss / static_cast<float>(a.latent) + a.eps);
#pragma unroll
  for (int u = 0; u < kCols; ++u) {
    const int m = threadIdx.x + u * kMlaThreads, s = sm[u];
    if (m >= a.d) continue;
    float x = 0.f;
    if (s >= a.sources) {
      report_device_error(a.err, kErrMlaRowMap, m, s, a.sources);
    } else if (s >= 0) {
      x = srcs[s];
      if (s < a.latent) x = to_f<T>(from_f<T>(x * rstd * nw[u]));
    }
    row[m] = x;
  }
  __syncthreads();
  if (!in_cache) return;
  TC* kc = static_cast<TC*>(a.kc) + (int64_t{b} * a.smax + p) * a.d;
  TC* vc = a.vc ? static_cast<TC*>(a.vc) + (int64_t{b} * a.smax + p) * a.d : nullptr;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float c, sn;
    angle(p, i, c, sn);
    const float x1 = row[i], x2 = row[i + half];
    const float y1 = to_f<T>(from_f<T>(x1 * c - x2 * sn));
    const float y2 = to_f<T>(from_f<T>(x2 * c + x1 * sn));
    kc[i] = from_f<TC>(y1);
    kc[i + half] = from_f<TC>(y2);
    if (vc) {
      vc[i] = from_f<TC>(y1);
      vc[i + half] = from_f<TC>(y2);
    }
  }
  for (int m = 2 * half + static_cast<int>(threadIdx.x); m < a.d; m += blockDim.x) {
    kc[m] = from_f<TC>(row[m]);
    if (vc) vc[m] = from_f<TC>(row[m]);
  }
}

}  // namespace

void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                    Tensor& v_cache) {
  for (const Tensor* t : TensorPtrs{&k, &v, &k_cache, &v_cache}) {
    expect_cuda_float(*t, "kv_cache_write");
  }
  EL_CUDA_ENSURE(k.dtype() == v.dtype() && k_cache.dtype() == v_cache.dtype(),
                 "cuda kv_cache_write: k {} / v {} and caches {} / {} must pair their dtypes",
                 dtype_name(k.dtype()), dtype_name(v.dtype()), dtype_name(k_cache.dtype()),
                 dtype_name(v_cache.dtype()));
  EL_CUDA_ENSURE(k.ndim() == 4 && k.shape() == v.shape() && k_cache.ndim() == 4 &&
                     k_cache.shape() == v_cache.shape() && k.dim(0) == k_cache.dim(0) &&
                     k.dim(2) == k_cache.dim(2) && k.dim(3) == k_cache.dim(3) &&
                     k.dim(1) <= k_cache.dim(1),
                 "cuda kv_cache_write: k {} / v {} do not fit caches {} (expected [B, T, Hkv, D] "
                 "into [B, Smax, Hkv, D])",
                 shape_str(k.shape()), shape_str(v.shape()), shape_str(k_cache.shape()));
  expect_positions(positions, k.dim(0), "kv_cache_write");
  const int64_t b = k.dim(0), t = k.dim(1), smax = k_cache.dim(1), row = k.dim(2) * k.dim(3);
  if (b == 0 || t == 0 || row == 0) return;
  EL_CUDA_ENSURE(b * t <= INT32_MAX && smax <= INT32_MAX && row <= INT32_MAX,
                 "cuda kv_cache_write: k {} / cache {} too large", shape_str(k.shape()),
                 shape_str(k_cache.shape()));
  // The widest pack (<= 16 bytes of either dtype) that divides a row and that
  // every base pointer is aligned to (rows then stay aligned).
  const size_t ss = dtype_size(k.dtype()), ds = dtype_size(k_cache.dtype());
  int vec = 1;
  for (int cand : {8, 4}) {
    if (static_cast<size_t>(cand) * std::max(ss, ds) > 16 || row % cand != 0) continue;
    if (aligned_to(k.raw(), cand * ss) && aligned_to(v.raw(), cand * ss) &&
        aligned_to(k_cache.raw(), cand * ds) && aligned_to(v_cache.raw(), cand * ds)) {
      vec = cand;
      break;
    }
  }
  const int ti = static_cast<int>(t), si = static_cast<int>(smax);
  EL_DISPATCH_FLOAT(k.dtype(), TS, {
    EL_DISPATCH_FLOAT(k_cache.dtype(), TD, {
      if (vec == 8) {
        if constexpr (sizeof(TS) == 2 && sizeof(TD) == 2) {
          launch_kv_write<TS, TD, 8>(k, v, positions, k_cache, v_cache, b * t, ti, si, row);
        }
      } else if (vec == 4) {
        launch_kv_write<TS, TD, 4>(k, v, positions, k_cache, v_cache, b * t, ti, si, row);
      } else {
        launch_kv_write<TS, TD, 1>(k, v, positions, k_cache, v_cache, b * t, ti, si, row);
      }
    });
  });
  EL_CUDA_CHECK_LAUNCH("kv_write_kernel");
}

void qkv_rope_cache_write(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                          Tensor& q, Tensor& k_cache, Tensor& v_cache) {
  for (const Tensor* t : TensorPtrs{&packed, &q, &k_cache, &v_cache}) {
    expect_cuda_float(*t, "qkv_rope_cache_write");
  }
  EL_CUDA_ENSURE(q.dtype() == packed.dtype() && k_cache.dtype() == v_cache.dtype(),
                 "cuda qkv_rope_cache_write: packed {} / q {} and caches {} / {} must pair their "
                 "dtypes",
                 dtype_name(packed.dtype()), dtype_name(q.dtype()), dtype_name(k_cache.dtype()),
                 dtype_name(v_cache.dtype()));
  const bool shapes_ok = packed.ndim() == 4 && q.ndim() == 4 && k_cache.ndim() == 4 &&
                         k_cache.shape() == v_cache.shape();
  EL_CUDA_ENSURE(shapes_ok, "cuda qkv_rope_cache_write: packed {}, q {}, caches {}",
                 shape_str(packed.shape()), shape_str(q.shape()), shape_str(k_cache.shape()));
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3);
  const int64_t smax = k_cache.dim(1), hkv = k_cache.dim(2);
  EL_CUDA_ENSURE(d % 2 == 0 && packed.shape() == Shape({b, t, h + 2 * hkv, d}) &&
                     k_cache.dim(0) == b && k_cache.dim(3) == d && t <= smax,
                 "cuda qkv_rope_cache_write: packed {} does not hold q {} and a k/v row of caches "
                 "{} (expected [B, T, H + 2 Hkv, D], q [B, T, H, D], caches [B, Smax, Hkv, D])",
                 shape_str(packed.shape()), shape_str(q.shape()), shape_str(k_cache.shape()));
  expect_positions(positions, b, "qkv_rope_cache_write");
  if (inv_freq.defined()) {
    expect_cuda_float(inv_freq, "qkv_rope_cache_write (inv_freq)");
    EL_CUDA_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= d / 2,
                   "cuda qkv_rope_cache_write: inv_freq has {} values, head dim {} needs 1 to {}",
                   inv_freq.numel(), d, d / 2);
  }
  if (b == 0 || t == 0 || d == 0) return;
  if (inv_freq.defined() && inv_freq.numel() < d / 2) {
    // Partial rotary (GPT-NeoX): the kernel below rotates whole heads, so the
    // split with its rotation, then the cache write (the same roundings: k
    // and v in the packed dtype, then the cache's).
    Tensor k = Tensor::empty({b, t, hkv, d}, packed.dtype(), packed.device());
    Tensor v = Tensor::empty({b, t, hkv, d}, packed.dtype(), packed.device());
    split_qkv_rope_at(packed, inv_freq, positions, q, k, v);
    kv_cache_write(k, v, positions, k_cache, v_cache);
    return;
  }
  EL_CUDA_ENSURE(b * t <= INT32_MAX && smax <= INT32_MAX && (h + 2 * hkv) * d <= INT32_MAX,
                 "cuda qkv_rope_cache_write: packed {} / cache {} too large",
                 shape_str(packed.shape()), shape_str(k_cache.shape()));
  Context& cx = ctx();
  QkvCacheArgs a{};
  a.packed = packed.raw();
  a.inv_freq = inv_freq.defined() ? inv_freq.raw() : nullptr;
  a.freq_dtype = inv_freq.defined() ? inv_freq.dtype() : DType::f32;
  a.pos = positions.data<int32_t>();
  a.q = q.raw();
  a.kc = k_cache.raw();
  a.vc = v_cache.raw();
  a.t_len = static_cast<int>(t);
  a.h = static_cast<int>(h);
  a.hkv = static_cast<int>(hkv);
  a.d = static_cast<int>(d);
  a.smax = static_cast<int>(smax);
  a.err = cx.dev_error;
  // 16-byte items when both dtypes are 16-bit, half a head is whole items and
  // every base is aligned (all rows then are).
  const bool vec = dtype_size(packed.dtype()) == 2 && dtype_size(k_cache.dtype()) == 2 &&
                   (d / 2) % 8 == 0 && aligned16(packed.raw()) && aligned16(q.raw()) &&
                   aligned16(k_cache.raw()) && aligned16(v_cache.raw());
  EL_DISPATCH_FLOAT(packed.dtype(), T, {
    EL_DISPATCH_FLOAT(k_cache.dtype(), TC, {
      if constexpr (sizeof(T) == 2 && sizeof(TC) == 2) {
        if (vec) {
          launch_qkv_rope_cache<T, TC, 8>(a, b * t);
        } else {
          launch_qkv_rope_cache<T, TC, 1>(a, b * t);
        }
      } else {
        launch_qkv_rope_cache<T, TC, 1>(a, b * t);
      }
    });
  });
  EL_CUDA_CHECK_LAUNCH("qkv_rope_cache_kernel");
}

void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                         const Tensor& norm_w, float eps, const Tensor& inv_freq,
                         const Tensor& positions, Tensor& q, Tensor& k_cache, Tensor& v_cache) {
  for (const Tensor* t : TensorPtrs{&packed, &q, &k_cache, &v_cache, &norm_w}) {
    expect_cuda_float(*t, "mla_decode_prologue");
  }
  expect_cuda_dtype(row_map, DType::i32, "mla_decode_prologue (row_map)");
  EL_CUDA_ENSURE(q.dtype() == packed.dtype() && k_cache.dtype() == v_cache.dtype(),
                 "cuda mla_decode_prologue: packed {} / q {} and caches {} / {} must pair their "
                 "dtypes",
                 dtype_name(packed.dtype()), dtype_name(q.dtype()), dtype_name(k_cache.dtype()),
                 dtype_name(v_cache.dtype()));
  const bool shapes_ok = packed.ndim() == 3 && q.ndim() == 4 && k_cache.ndim() == 4 &&
                         k_cache.shape() == v_cache.shape() && k_cache.dim(2) == 1;
  EL_CUDA_ENSURE(shapes_ok, "cuda mla_decode_prologue: packed {}, q {}, caches {}",
                 shape_str(packed.shape()), shape_str(q.shape()), shape_str(k_cache.shape()));
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3);
  const int64_t smax = k_cache.dim(1), width = packed.dim(2), sources = width - h * d;
  EL_CUDA_ENSURE(d % 2 == 0 && packed.dim(0) == b && packed.dim(1) == t && k_cache.dim(0) == b &&
                     k_cache.dim(3) == d && t <= smax && latent > 0 && sources > latent &&
                     norm_w.numel() == latent && row_map.numel() == d,
                 "cuda mla_decode_prologue: packed {} does not hold q {} and {} latent values "
                 "for caches {} (norm_w {}, row_map {})",
                 shape_str(packed.shape()), shape_str(q.shape()), latent,
                 shape_str(k_cache.shape()), norm_w.numel(), row_map.numel());
  expect_positions(positions, b, "mla_decode_prologue");
  if (inv_freq.defined()) {
    expect_cuda_float(inv_freq, "mla_decode_prologue (inv_freq)");
    EL_CUDA_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= d / 2,
                   "cuda mla_decode_prologue: inv_freq has {} values for {} cache columns",
                   inv_freq.numel(), d);
  }
  if (b == 0 || t == 0) return;
  EL_CUDA_ENSURE(b * t <= INT32_MAX && smax <= INT32_MAX && width <= INT32_MAX,
                 "cuda mla_decode_prologue: packed {} / cache {} too large",
                 shape_str(packed.shape()), shape_str(k_cache.shape()));
  Context& cx = ctx();
  MlaPrologueArgs a{};
  a.packed = packed.raw();
  a.row_map = row_map.data<int32_t>();
  a.norm_w = norm_w.raw();
  a.norm_dtype = norm_w.dtype();
  a.inv_freq = inv_freq.defined() ? inv_freq.raw() : nullptr;
  a.freq_dtype = inv_freq.defined() ? inv_freq.dtype() : DType::f32;
  a.pos = positions.data<int32_t>();
  a.q = q.raw();
  a.kc = k_cache.raw();
  a.vc = v_cache.raw() == k_cache.raw() ? nullptr : v_cache.raw();
  a.eps = eps;
  a.t_len = static_cast<int>(t);
  a.h = static_cast<int>(h);
  a.d = static_cast<int>(d);
  a.latent = static_cast<int>(latent);
  a.sources = static_cast<int>(sources);
  a.smax = static_cast<int>(smax);
  a.rot = inv_freq.defined() ? static_cast<int>(inv_freq.numel()) : 0;
  a.width = width;
  a.err = cx.dev_error;
  // (a cache row's columns in registers: kCols per thread)
  const size_t smem = sizeof(float) * static_cast<size_t>(d + sources);
  EL_CUDA_ENSURE(d <= 3 * kMlaThreads && h < 65535 && smem <= 48 * 1024,
                 "cuda mla_decode_prologue: {} cache columns, {} heads, {} kv_a values (at most "
                 "{} columns, 65534 heads, 48 KiB of both as f32)",
                 d, h, sources, 3 * kMlaThreads);
  const dim3 grid(static_cast<unsigned>(b * t), static_cast<unsigned>(1 + h));
  EL_DISPATCH_FLOAT(packed.dtype(), T, {
    EL_DISPATCH_FLOAT(k_cache.dtype(), TC, {
      launch_kernel(mla_prologue_kernel<T, TC>, grid, kMlaThreads, smem, cx.stream, a);
    });
  });
  EL_CUDA_CHECK_LAUNCH("mla_prologue_kernel");
}

}  // namespace el::cuda
