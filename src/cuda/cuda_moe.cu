// cuda_moe.cu — the CUDA backend's mixture-of-experts launchers (contracts in
// ops/backend.h, "mixture of experts"), all but the grouped GEMM
// (cuda_moe_gemm.cu):
//
// * router: one warp per token; the E scores live in registers (kPerLane per
//   lane, so E <= kMaxExperts), top-k by k rounds of a warp arg-max (value
//   descending, index ascending on ties, as the CPU reference);
// * grouping: no host round trip and no sort. The slots are cut into chunks
//   of kChunk in priority order (choice j major, token minor); kernel 1
//   counts each chunk's slots per expert, kernel 2 (one block) scans the
//   counts into per-chunk bases and the per-expert offsets (capacity
//   applied), kernel 3 ranks each slot within its chunk (__match_any_sync per
//   warp + per-warp prefix sums in shared memory) and writes its row. Stable
//   and deterministic: the ranks do not depend on timing;
// * gather / combine / their backwards: element-parallel loops over rows,
//   16-byte vectors where the width allows; the weight gradients (dot
//   products) one warp per token with a fixed reduction order;
// * router losses: per-block partial sums in a fixed order, then one block
//   sums the partials; the scalars stay on the device.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kMaxExperts = 256;             // router / loss / grouping kernels
constexpr int kPerLane = kMaxExperts / 32;   // scores per lane
constexpr int kChunk = 1024;                 // slots per grouping block (32 warps)
constexpr int kWarpsPerBlock = 8;            // warp-per-token kernels: 256 threads

void check_experts(int64_t e, const char* what) {
  EL_CUDA_ENSURE(e >= 1 && e <= kMaxExperts,
                 "cuda {}: {} experts; the CUDA MoE kernels take 1 to {} (scores in registers)",
                 what, e, kMaxExperts);
}

int warp_grid(int64_t warps) {
  return grid_for(warps * 32, kWarpsPerBlock * 32);
}

// Scores of one token into registers: lane holds experts lane + 32 i.
// softmax (mx, sum over the warp) or sigmoid; entries past E are `pad`.
template <class T>
__device__ __forceinline__ void load_scores(const T* l, int e, bool sigmoid, float (&s)[kPerLane],
                                            float pad) {
  const int lane = threadIdx.x & 31;
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int c = lane + 32 * i;
    s[i] = c < e ? to_f<T>(l[c]) : -INFINITY;
    mx = fmaxf(mx, s[i]);
  }
  if (sigmoid) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      s[i] = lane + 32 * i < e ? 1.f / (1.f + expf(-s[i])) : pad;
    }
    return;
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    s[i] = lane + 32 * i < e ? expf(s[i] - mx) : 0.f;
    sum += s[i];
  }
  const float inv = 1.f / warp_sum(sum);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) s[i] = lane + 32 * i < e ? s[i] * inv : pad;
}

template <class T>
__global__ void router_forward_kernel(const T* logits, int64_t n, int e, int k, bool sigmoid,
                                      bool normalize, int32_t* ids, float* weights) {
  const int lane = threadIdx.x & 31;
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    float s[kPerLane];
    load_scores(logits + t * e, e, sigmoid, s, -INFINITY);
    float total = 0.f;
    for (int j = 0; j < k; ++j) {
      float bv = -INFINITY;
      int bi = 0x7fffffff;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {  // ascending index: strict > keeps the lowest
        if (s[i] > bv) {
          bv = s[i];
          bi = lane + 32 * i;
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
          bv = ov;
          bi = oi;
        }
      }
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        if (lane + 32 * i == bi) s[i] = -INFINITY;  // taken
      }
      total += bv;
      if (lane == 0) {
        ids[t * k + j] = bi;
        weights[t * k + j] = bv;
      }
    }
    if (normalize && lane == 0) {
      for (int j = 0; j < k; ++j) weights[t * k + j] /= total;
    }
  }
}

template <class T>
__global__ void router_backward_kernel(const float* dweights, const T* logits, const int32_t* ids,
                                       const float* weights, int64_t n, int e, int k, bool sigmoid,
                                       bool normalize, T* dlogits) {
  const int lane = threadIdx.x & 31;
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    float s[kPerLane];
    load_scores(logits + t * e, e, sigmoid, s, 0.f);
    const int32_t* id = ids + t * k;
    const float* g = dweights + t * k;
    const float* w = weights + t * k;
    // Sum of the chosen scores (normalize: w_j = s_j / S), each read from its lane.
    float wg = 0.f, chosen = 0.f;
    for (int j = 0; j < k; ++j) {
      wg += w[j] * g[j];
      const int c = id[j];
      float mine = 0.f;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) mine = lane + 32 * i == c ? s[i] : mine;
      chosen += __shfl_sync(0xffffffffu, mine, c & 31);
    }
    float ds[kPerLane];
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      ds[i] = 0.f;
      for (int j = 0; j < k; ++j) {
        if (id[j] == c) ds[i] = normalize ? (g[j] - wg) / chosen : g[j];
      }
      dot += ds[i] * s[i];
    }
    if (!sigmoid) dot = warp_sum(dot);
    T* out = dlogits + t * e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c >= e) continue;
      out[c] = from_f<T>(sigmoid ? ds[i] * s[i] * (1.f - s[i]) : s[i] * (ds[i] - dot));
    }
  }
}

// ---- grouping ---------------------------------------------------------------------------
// Priority position p -> slot: choice j = p / n major, token p % n minor.
__device__ __forceinline__ int64_t slot_of(int64_t p, int64_t n, int k) {
  return (p % n) * k + p / n;
}

__global__ void group_count_kernel(const int32_t* ids, int64_t n, int k, int e, int32_t* counts,
                                   DeviceErrorRecord* err) {
  __shared__ int sh[kMaxExperts];
  for (int i = threadIdx.x; i < e; i += blockDim.x) sh[i] = 0;
  __syncthreads();
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kChunk + threadIdx.x;
  if (p < n * k) {
    const int64_t s = slot_of(p, n, k);
    const int x = ids[s];
    if (x >= 0 && x < e) {
      atomicAdd(&sh[x], 1);
    } else {
      report_device_error(err, kErrMoeExpertId, s / k, x, e);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < e; i += blockDim.x) counts[blockIdx.x * static_cast<int64_t>(e) + i] = sh[i];
}

// One block: chunk bases per expert (exclusive over chunks) and the offsets
// of the kept rows.
__global__ void group_scan_kernel(int32_t* counts, int chunks, int e, int64_t capacity,
                                  int32_t* offsets) {
  __shared__ int kept[kMaxExperts];
  for (int x = threadIdx.x; x < e; x += blockDim.x) {
    int run = 0;
    for (int c = 0; c < chunks; ++c) {
      const int v = counts[static_cast<int64_t>(c) * e + x];
      counts[static_cast<int64_t>(c) * e + x] = run;  // now the chunk's base
      run += v;
    }
    kept[x] = capacity > 0 && run > capacity ? static_cast<int>(capacity) : run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    offsets[0] = 0;
    for (int x = 0; x < e; ++x) offsets[x + 1] = (acc += kept[x]);
  }
}

__global__ void __launch_bounds__(kChunk) group_place_kernel(const int32_t* ids, int64_t n, int k,
                                                             int e, const int32_t* bases,
                                                             const int32_t* offsets,
                                                             int32_t* sorted_slot,
                                                             int32_t* slot_row) {
  __shared__ int warp_count[kChunk / 32][kMaxExperts];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i = threadIdx.x; i < (kChunk / 32) * e; i += blockDim.x) warp_count[i / e][i % e] = 0;
  __syncthreads();
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kChunk + threadIdx.x;
  const bool in = p < n * k;
  const int64_t s = in ? slot_of(p, n, k) : 0;
  int x = in ? ids[s] : -1;
  if (x >= e) x = -1;  // reported by group_count_kernel
  const unsigned same = __match_any_sync(0xffffffffu, x);
  const int rank_in_warp = __popc(same & ((1u << lane) - 1u));
  if (x >= 0 && rank_in_warp == 0) warp_count[warp][x] = __popc(same);
  __syncthreads();
  for (int c = threadIdx.x; c < e; c += blockDim.x) {  // exclusive prefix over the warps
    int run = 0;
    for (int w = 0; w < kChunk / 32; ++w) {
      const int v = warp_count[w][c];
      warp_count[w][c] = run;
      run += v;
    }
  }
  __syncthreads();
  if (!in) return;
  if (x < 0) {
    slot_row[s] = -1;
    return;
  }
  const int rank = bases[static_cast<int64_t>(blockIdx.x) * e + x] + warp_count[warp][x] + rank_in_warp;
  if (rank < offsets[x + 1] - offsets[x]) {
    const int row = offsets[x] + rank;
    sorted_slot[row] = static_cast<int32_t>(s);
    slot_row[s] = row;
  } else {
    slot_row[s] = -1;  // over capacity
  }
}

// ---- gather / combine -----------------------------------------------------------------
// Rows of C elements moved V at a time (V = 16 bytes of T when the width and
// the pointers allow, else 1): f(row, j) for the j-th V-vector of each row,
// grid-stride.
template <int V, class F>
__device__ __forceinline__ void for_each_vec(int64_t rows, int64_t c, F&& f) {
  const int64_t per_row = c / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * per_row;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    f(i / per_row, i % per_row);
  }
}

template <class T, int V>
__device__ __forceinline__ Pack<T, V> zeros_pack() {
  Pack<T, V> v;
#pragma unroll
  for (int q = 0; q < V; ++q) v.v[q] = from_f<T>(0.f);
  return v;
}

template <class T, int V>
__global__ void gather_forward_kernel(const T* x, const int32_t* sorted, int64_t m, int64_t c,
                                      int k, T* out) {
  using P = Pack<T, V>;
  for_each_vec<V>(m, c, [&](int64_t r, int64_t j) {
    const int s = sorted[r];
    reinterpret_cast<P*>(out + r * c)[j] =
        s >= 0 ? reinterpret_cast<const P*>(x + (s / k) * c)[j] : zeros_pack<T, V>();
  });
}

// out[t] = sum over kept j of weights[t, j] ys[row] (weights null: 1, the
// gather's backward) + sigmoid(gate[t]) shared[t] when shared is given.
template <class T, class W, int V>
__global__ void combine_forward_kernel(const T* ys, const W* weights, const int32_t* slot_row,
                                       const T* shared, const T* gate, int64_t n, int64_t c,
                                       int k, T* out) {
  using P = Pack<T, V>;
  for_each_vec<V>(n, c, [&](int64_t t, int64_t j) {
    float acc[V] = {};
    for (int q = 0; q < k; ++q) {
      const int r = slot_row[t * k + q];
      if (r < 0) continue;
      const float w = weights ? to_f<W>(weights[t * k + q]) : 1.f;
      const P v = reinterpret_cast<const P*>(ys + r * c)[j];
#pragma unroll
      for (int u = 0; u < V; ++u) acc[u] += w * to_f<T>(v.v[u]);
    }
    if (shared) {
      const float sg = 1.f / (1.f + expf(-to_f<T>(gate[t])));
      const P v = reinterpret_cast<const P*>(shared + t * c)[j];
#pragma unroll
      for (int u = 0; u < V; ++u) acc[u] += sg * to_f<T>(v.v[u]);
    }
    P o;
#pragma unroll
    for (int u = 0; u < V; ++u) o.v[u] = from_f<T>(acc[u]);
    reinterpret_cast<P*>(out + t * c)[j] = o;
  });
}

// dys[r] = weights[s] dout[s / k] (unused rows 0).
template <class T, class W, int V>
__global__ void combine_dys_kernel(const T* dout, const W* weights, const int32_t* sorted,
                                   int64_t m, int64_t c, int k, T* dys) {
  using P = Pack<T, V>;
  for_each_vec<V>(m, c, [&](int64_t r, int64_t j) {
    const int s = sorted[r];
    P o = zeros_pack<T, V>();
    if (s >= 0) {
      const float w = to_f<W>(weights[s]);
      const P v = reinterpret_cast<const P*>(dout + (s / k) * c)[j];
#pragma unroll
      for (int u = 0; u < V; ++u) o.v[u] = from_f<T>(w * to_f<T>(v.v[u]));
    }
    reinterpret_cast<P*>(dys + r * c)[j] = o;
  });
}

// One warp per token: dweights[t, j] = <dout[t], ys[row]>, and with a shared
// expert dshared = sigmoid(g) dout, dgate = sigmoid'(g) <dout, shared>.
template <class T, class W>
__global__ void combine_token_backward_kernel(const T* dout, const T* ys, const int32_t* slot_row,
                                              const T* shared, const T* gate, int64_t n,
                                              int64_t c, int k, W* dweights, T* dshared,
                                              T* dgate) {
  const int lane = threadIdx.x & 31;
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    const T* g = dout + t * c;
    for (int q = 0; q < k; ++q) {
      const int r = slot_row[t * k + q];
      float dot = 0.f;
      if (r >= 0) {
        for (int64_t i = lane; i < c; i += 32) dot += to_f<T>(g[i]) * to_f<T>(ys[r * c + i]);
      }
      dot = warp_sum(dot);
      if (lane == 0) dweights[t * k + q] = from_f<W>(dot);
    }
    if (!shared) continue;
    const float sg = 1.f / (1.f + expf(-to_f<T>(gate[t])));
    float dot = 0.f;
    for (int64_t i = lane; i < c; i += 32) {
      const float gi = to_f<T>(g[i]);
      dot += gi * to_f<T>(shared[t * c + i]);
      dshared[t * c + i] = from_f<T>(sg * gi);
    }
    dot = warp_sum(dot);
    if (lane == 0) dgate[t] = from_f<T>(dot * sg * (1.f - sg));
  }
}

// f(std::integral_constant<int, V>, grid) with V = 16 bytes of T when the row
// width c and every pointer allow 16-byte vectors, else V = 1; grid covers
// rows * c / V items.
template <class T, class F>
void with_vec(int64_t rows, int64_t c, std::initializer_list<const void*> ptrs, F&& f) {
  constexpr int v = 16 / sizeof(T);
  bool ok = c % v == 0;
  for (const void* p : ptrs) ok = ok && (p == nullptr || aligned16(p));
  if (ok) {
    f(std::integral_constant<int, v>{}, grid_for(rows * c / v, 256));
  } else {
    f(std::integral_constant<int, 1>{}, grid_for(rows * c, 256));
  }
}

// ---- router losses --------------------------------------------------------------------
// Per-block partial sums of the score distribution over the block's tokens
// (fixed order: each warp its tokens in turn, then the warps in order).
template <class T>
__global__ void balance_partial_kernel(const T* logits, int64_t n, int e, bool sigmoid,
                                       float* partial) {
  __shared__ float sh[kWarpsPerBlock][kMaxExperts];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float acc[kPerLane] = {};
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; t < n;
       t += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    float s[kPerLane];
    load_scores(logits + t * e, e, sigmoid, s, 0.f);
    if (sigmoid) {
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) sum += s[i];
      const float inv = 1.f / warp_sum(sum);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) s[i] *= inv;
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] += s[i];
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    if (lane + 32 * i < e) sh[warp][lane + 32 * i] = acc[i];
  }
  __syncthreads();
  for (int x = threadIdx.x; x < e; x += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < kWarpsPerBlock; ++w) v += sh[w][x];
    partial[blockIdx.x * static_cast<int64_t>(e) + x] = v;
  }
}

// One block: the expert counts of ids[n, k] (int atomics: exact).
__global__ void count_ids_kernel(const int32_t* ids, int64_t slots, int e, int* counts) {
  __shared__ int sh[kMaxExperts];
  for (int x = threadIdx.x; x < e; x += blockDim.x) sh[x] = 0;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    const int x = ids[s];
    if (x >= 0 && x < e) atomicAdd(&sh[x], 1);
  }
  __syncthreads();
  for (int x = threadIdx.x; x < e; x += blockDim.x) counts[x] = sh[x];
}

// One block: loss = E sum_e (count_e / n) (P_e / n).
__global__ void balance_finish_kernel(const float* partial, int blocks, const int* counts,
                                      int64_t n, int e, float* loss) {
  __shared__ double scratch[32];
  double term = 0.0;
  for (int x = threadIdx.x; x < e; x += blockDim.x) {
    double p = 0.0;
    for (int b = 0; b < blocks; ++b) p += partial[static_cast<int64_t>(b) * e + x];
    term += static_cast<double>(counts[x]) * p;
  }
  term = block_sum_d(term, scratch);
  if (threadIdx.x == 0) {
    const double nn = static_cast<double>(n);
    loss[0] = static_cast<float>(static_cast<double>(e) * term / (nn * nn));
  }
}

// dlogits for dq[e] = dloss E count_e / n^2 (the same for every token).
template <class T>
__global__ void balance_backward_kernel(const float* dloss, const int* counts, const T* logits,
                                        int64_t n, int e, bool sigmoid, T* dlogits) {
  const int lane = threadIdx.x & 31;
  const float scale = dloss[0] * static_cast<float>(e) / (static_cast<float>(n) * n);
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    float s[kPerLane], g[kPerLane];
    load_scores(logits + t * e, e, sigmoid, s, 0.f);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      g[i] = c < e ? scale * static_cast<float>(counts[c]) : 0.f;
      sum += s[i];
    }
    // q = s (softmax) or s / S (sigmoid): dl = (g - <g, q>) / norm * (s or s (1 - s)).
    const float norm = sigmoid ? warp_sum(sum) : 1.f;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) dot += g[i] * s[i] / norm;
    dot = warp_sum(dot);
    T* out = dlogits + t * e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c >= e) continue;
      const float d = (g[i] - dot) / norm;
      out[c] = from_f<T>(sigmoid ? d * s[i] * (1.f - s[i]) : d * s[i]);
    }
  }
}

template <class T>
__device__ __forceinline__ float row_lse(const T* l, int e) {
  const int lane = threadIdx.x & 31;
  float mx = -INFINITY;
  for (int i = lane; i < e; i += 32) mx = fmaxf(mx, to_f<T>(l[i]));
  mx = warp_max(mx);
  float sum = 0.f;
  for (int i = lane; i < e; i += 32) sum += expf(to_f<T>(l[i]) - mx);
  return mx + logf(warp_sum(sum));
}

template <class T>
__global__ void z_partial_kernel(const T* logits, int64_t n, int e, float* partial) {
  __shared__ float sh[kWarpsPerBlock];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float acc = 0.f;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; t < n;
       t += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float lse = row_lse(logits + t * e, e);
    acc += lse * lse;
  }
  if (lane == 0) sh[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float v = 0.f;
    for (int w = 0; w < kWarpsPerBlock; ++w) v += sh[w];
    partial[blockIdx.x] = v;
  }
}

__global__ void z_finish_kernel(const float* partial, int blocks, int64_t n, float* loss) {
  if (threadIdx.x != 0) return;
  double v = 0.0;
  for (int b = 0; b < blocks; ++b) v += partial[b];
  loss[0] = static_cast<float>(v / static_cast<double>(n));
}

template <class T>
__global__ void z_backward_kernel(const float* dloss, const T* logits, int64_t n, int e,
                                  T* dlogits) {
  const int lane = threadIdx.x & 31;
  const float scale = 2.f * dloss[0] / static_cast<float>(n);
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    const T* l = logits + t * e;
    const float lse = row_lse(l, e);
    for (int i = lane; i < e; i += 32) {
      dlogits[t * e + i] = from_f<T>(scale * lse * expf(to_f<T>(l[i]) - lse));
    }
  }
}

}  // namespace

void moe_router_forward(const Tensor& logits, MoeScore score, bool normalize, Tensor& ids,
                        Tensor& weights) {
  expect_cuda_float(logits, "moe_router_forward (logits)");
  expect_cuda_dtype(ids, DType::i32, "moe_router_forward (ids)");
  expect_cuda_dtype(weights, DType::f32, "moe_router_forward (weights)");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  check_experts(e, "moe_router_forward");
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    router_forward_kernel<T><<<warp_grid(n), kWarpsPerBlock * 32, 0, ctx().stream>>>(
        logits.data<T>(), n, static_cast<int>(e), static_cast<int>(k),
        score == MoeScore::sigmoid, normalize, ids.data<int32_t>(), weights.data<float>());
  });
  EL_CUDA_CHECK_LAUNCH("router_forward_kernel");
}

void moe_router_backward(const Tensor& dweights, const Tensor& logits, const Tensor& ids,
                         const Tensor& weights, MoeScore score, bool normalize, Tensor& dlogits) {
  expect_cuda_dtype(dweights, DType::f32, "moe_router_backward (dweights)");
  expect_cuda_dtype(weights, DType::f32, "moe_router_backward (weights)");
  expect_cuda_dtype(dlogits, logits.dtype(), "moe_router_backward (dlogits)");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  check_experts(e, "moe_router_backward");
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    router_backward_kernel<T><<<warp_grid(n), kWarpsPerBlock * 32, 0, ctx().stream>>>(
        dweights.data<float>(), logits.data<T>(), ids.data<int32_t>(), weights.data<float>(), n,
        static_cast<int>(e), static_cast<int>(k), score == MoeScore::sigmoid, normalize,
        dlogits.data<T>());
  });
  EL_CUDA_CHECK_LAUNCH("router_backward_kernel");
}

void moe_group(const Tensor& ids, int64_t capacity, Tensor& sorted_slot, Tensor& slot_row,
               Tensor& offsets) {
  for (const Tensor* t : TensorPtrs{&ids, &sorted_slot, &slot_row, &offsets}) {
    expect_cuda_dtype(*t, DType::i32, "moe_group");
  }
  const int64_t n = ids.dim(0), k = ids.dim(1), m = n * k, e = offsets.numel() - 1;
  check_experts(e, "moe_group");
  EL_CUDA_ENSURE(m < (int64_t{1} << 31), "cuda moe_group: {} slots exceed the i32 row indices", m);
  Context& cx = ctx();
  const int chunks = static_cast<int>((m + kChunk - 1) / kChunk);
  Tensor bases = Tensor::empty({int64_t{chunks} * e}, DType::i32, ids.device());
  EL_CUDA_CHECK(cudaMemsetAsync(sorted_slot.raw(), 0xff, sorted_slot.nbytes(), cx.stream));  // -1
  const int ie = static_cast<int>(e), ik = static_cast<int>(k);
  group_count_kernel<<<chunks, kChunk, 0, cx.stream>>>(ids.data<int32_t>(), n, ik, ie,
                                                       bases.data<int32_t>(), cx.dev_error);
  EL_CUDA_CHECK_LAUNCH("group_count_kernel");
  group_scan_kernel<<<1, kMaxExperts, 0, cx.stream>>>(bases.data<int32_t>(), chunks, ie, capacity,
                                                       offsets.data<int32_t>());
  EL_CUDA_CHECK_LAUNCH("group_scan_kernel");
  group_place_kernel<<<chunks, kChunk, 0, cx.stream>>>(
      ids.data<int32_t>(), n, ik, ie, bases.data<int32_t>(), offsets.data<int32_t>(),
      sorted_slot.data<int32_t>(), slot_row.data<int32_t>());
  EL_CUDA_CHECK_LAUNCH("group_place_kernel");
}

void moe_gather_forward(const Tensor& x, const Tensor& sorted_slot, int64_t k, Tensor& out) {
  expect_cuda_float(x, "moe_gather_forward (x)");
  expect_cuda_dtype(out, x.dtype(), "moe_gather_forward (out)");
  const int64_t m = out.dim(0), c = out.dim(1);
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    with_vec<T>(m, c, {x.raw(), out.raw()}, [&](auto v, int grid) {
      gather_forward_kernel<T, decltype(v)::value><<<grid, 256, 0, ctx().stream>>>(
          x.data<T>(), sorted_slot.data<int32_t>(), m, c, static_cast<int>(k), out.data<T>());
    });
  });
  EL_CUDA_CHECK_LAUNCH("gather_forward_kernel");
}

void moe_gather_backward(const Tensor& dout, const Tensor& slot_row, Tensor& dx) {
  expect_cuda_float(dout, "moe_gather_backward (dout)");
  expect_cuda_dtype(dx, dout.dtype(), "moe_gather_backward (dx)");
  const int64_t n = dx.dim(0), c = dx.dim(1);
  const int k = static_cast<int>(slot_row.numel() / n);
  EL_DISPATCH_FLOAT(dout.dtype(), T, {
    // dx[t] = sum over the token's kept rows: the combine with unit weights.
    with_vec<T>(n, c, {dout.raw(), dx.raw()}, [&](auto v, int grid) {
      combine_forward_kernel<T, float, decltype(v)::value><<<grid, 256, 0, ctx().stream>>>(
          dout.data<T>(), nullptr, slot_row.data<int32_t>(), nullptr, nullptr, n, c, k,
          dx.data<T>());
    });
  });
  EL_CUDA_CHECK_LAUNCH("combine_forward_kernel (gather backward)");
}

namespace {

// f32 weights (the router's) or weights of the activation dtype.
template <class T, class F>
void with_weight_type(const Tensor& weights, DType act, F&& f) {
  if (weights.dtype() == DType::f32) {
    f(static_cast<float*>(nullptr));
  } else {
    EL_CUDA_ENSURE(weights.dtype() == act, "cuda moe_combine: weights {} for ys {}",
                   dtype_name(weights.dtype()), dtype_name(act));
    f(static_cast<T*>(nullptr));
  }
}

}  // namespace

void moe_combine_forward(const Tensor& ys, const Tensor& weights, const Tensor& slot_row,
                         const Tensor& shared, const Tensor& shared_gate, Tensor& out) {
  expect_cuda_float(ys, "moe_combine_forward (ys)");
  expect_cuda_dtype(out, ys.dtype(), "moe_combine_forward (out)");
  const int64_t n = out.dim(0), c = out.dim(1);
  const int k = static_cast<int>(weights.dim(1));
  EL_DISPATCH_FLOAT(ys.dtype(), T, {
    with_weight_type<T>(weights, ys.dtype(), [&](auto* wtag) {
      using W = std::remove_pointer_t<decltype(wtag)>;
      const T* sh = shared.defined() ? shared.data<T>() : nullptr;
      const T* g = shared.defined() ? shared_gate.data<T>() : nullptr;
      with_vec<T>(n, c, {ys.raw(), out.raw(), sh}, [&](auto v, int grid) {
        combine_forward_kernel<T, W, decltype(v)::value><<<grid, 256, 0, ctx().stream>>>(
            ys.data<T>(), weights.data<W>(), slot_row.data<int32_t>(), sh, g, n, c, k,
            out.data<T>());
      });
    });
  });
  EL_CUDA_CHECK_LAUNCH("combine_forward_kernel");
}

void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& weights,
                          const Tensor& sorted_slot, const Tensor& slot_row, const Tensor& shared,
                          const Tensor& shared_gate, Tensor& dys, Tensor& dweights,
                          Tensor& dshared, Tensor& dgate) {
  expect_cuda_float(dout, "moe_combine_backward (dout)");
  expect_cuda_dtype(dys, ys.dtype(), "moe_combine_backward (dys)");
  expect_cuda_dtype(dweights, weights.dtype(), "moe_combine_backward (dweights)");
  const int64_t n = dout.dim(0), c = dout.dim(1), m = ys.dim(0);
  const int k = static_cast<int>(weights.dim(1));
  EL_DISPATCH_FLOAT(ys.dtype(), T, {
    with_weight_type<T>(weights, ys.dtype(), [&](auto* wtag) {
      using W = std::remove_pointer_t<decltype(wtag)>;
      with_vec<T>(m, c, {dout.raw(), dys.raw()}, [&](auto v, int grid) {
        combine_dys_kernel<T, W, decltype(v)::value><<<grid, 256, 0, ctx().stream>>>(
            dout.data<T>(), weights.data<W>(), sorted_slot.data<int32_t>(), m, c, k,
            dys.data<T>());
      });
      EL_CUDA_CHECK_LAUNCH("combine_dys_kernel");
      const bool sh = shared.defined();
      combine_token_backward_kernel<T, W><<<warp_grid(n), kWarpsPerBlock * 32, 0, ctx().stream>>>(
          dout.data<T>(), ys.data<T>(), slot_row.data<int32_t>(), sh ? shared.data<T>() : nullptr,
          sh ? shared_gate.data<T>() : nullptr, n, c, k, dweights.data<W>(),
          sh ? dshared.data<T>() : nullptr, sh ? dgate.data<T>() : nullptr);
    });
  });
  EL_CUDA_CHECK_LAUNCH("combine_token_backward_kernel");
}

void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                              Tensor& loss) {
  expect_cuda_float(logits, "moe_balance_loss_forward (logits)");
  expect_cuda_dtype(loss, DType::f32, "moe_balance_loss_forward (loss)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  check_experts(e, "moe_balance_loss_forward");
  Context& cx = ctx();
  const int blocks = static_cast<int>(std::min<int64_t>((n + kWarpsPerBlock - 1) / kWarpsPerBlock,
                                                        int64_t{cx.sm_count} * 4));
  Tensor partial = Tensor::empty({int64_t{blocks} * e}, DType::f32, logits.device());
  Tensor counts = Tensor::empty({e}, DType::i32, logits.device());
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    balance_partial_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, cx.stream>>>(
        logits.data<T>(), n, static_cast<int>(e), score == MoeScore::sigmoid,
        partial.data<float>());
  });
  EL_CUDA_CHECK_LAUNCH("balance_partial_kernel");
  count_ids_kernel<<<1, 1024, 0, cx.stream>>>(ids.data<int32_t>(), ids.numel(),
                                              static_cast<int>(e), counts.data<int32_t>());
  EL_CUDA_CHECK_LAUNCH("count_ids_kernel");
  balance_finish_kernel<<<1, 256, 0, cx.stream>>>(partial.data<float>(), blocks,
                                                  counts.data<int32_t>(), n, static_cast<int>(e),
                                                  loss.data<float>());
  EL_CUDA_CHECK_LAUNCH("balance_finish_kernel");
}

void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits, const Tensor& ids,
                               MoeScore score, Tensor& dlogits) {
  expect_cuda_dtype(dloss, DType::f32, "moe_balance_loss_backward (dloss)");
  expect_cuda_dtype(dlogits, logits.dtype(), "moe_balance_loss_backward (dlogits)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  check_experts(e, "moe_balance_loss_backward");
  Context& cx = ctx();
  Tensor counts = Tensor::empty({e}, DType::i32, logits.device());
  count_ids_kernel<<<1, 1024, 0, cx.stream>>>(ids.data<int32_t>(), ids.numel(),
                                              static_cast<int>(e), counts.data<int32_t>());
  EL_CUDA_CHECK_LAUNCH("count_ids_kernel");
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    balance_backward_kernel<T><<<warp_grid(n), kWarpsPerBlock * 32, 0, cx.stream>>>(
        dloss.data<float>(), counts.data<int32_t>(), logits.data<T>(), n, static_cast<int>(e),
        score == MoeScore::sigmoid, dlogits.data<T>());
  });
  EL_CUDA_CHECK_LAUNCH("balance_backward_kernel");
}

void moe_z_loss_forward(const Tensor& logits, Tensor& loss) {
  expect_cuda_float(logits, "moe_z_loss_forward (logits)");
  expect_cuda_dtype(loss, DType::f32, "moe_z_loss_forward (loss)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  Context& cx = ctx();
  const int blocks = static_cast<int>(std::min<int64_t>((n + kWarpsPerBlock - 1) / kWarpsPerBlock,
                                                        int64_t{cx.sm_count} * 4));
  Tensor partial = Tensor::empty({blocks}, DType::f32, logits.device());
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    z_partial_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, cx.stream>>>(
        logits.data<T>(), n, static_cast<int>(e), partial.data<float>());
  });
  EL_CUDA_CHECK_LAUNCH("z_partial_kernel");
  z_finish_kernel<<<1, 32, 0, cx.stream>>>(partial.data<float>(), blocks, n, loss.data<float>());
  EL_CUDA_CHECK_LAUNCH("z_finish_kernel");
}

void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits) {
  expect_cuda_dtype(dloss, DType::f32, "moe_z_loss_backward (dloss)");
  expect_cuda_dtype(dlogits, logits.dtype(), "moe_z_loss_backward (dlogits)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    z_backward_kernel<T><<<warp_grid(n), kWarpsPerBlock * 32, 0, ctx().stream>>>(
        dloss.data<float>(), logits.data<T>(), n, static_cast<int>(e), dlogits.data<T>());
  });
  EL_CUDA_CHECK_LAUNCH("z_backward_kernel");
}

}  // namespace el::cuda
