// cuda_moe.cu — the CUDA backend's mixture-of-experts launchers (contracts in
// ops/backend.h, "mixture of experts"), all but the grouped GEMM
// (cuda_moe_gemm.cu) and the router losses (cuda_moe_loss.cu):
//
// * router: one warp per token; the E scores live in registers (kPerLane per
//   lane, so E <= kMaxExperts), top-k by k rounds of a warp arg-max (value
//   descending, index ascending on ties, as the CPU reference);
// * grouping: no host round trip and no sort, two launches. The slots are cut
//   into chunks of kChunk in priority order (choice j major, token minor);
//   kernel 1 counts each chunk's slots per expert, and its last block to
//   finish (arrival counter, cuda_moe.cuh) scans the counts into per-chunk
//   bases and the per-expert offsets (capacity applied); kernel 2 ranks each
//   slot within its chunk (__match_any_sync per warp + per-warp prefix sums
//   in shared memory), writes its row, and marks the unused rows. Stable and
//   deterministic: the ranks do not depend on timing;
// * gather / combine forward: element-parallel loops over rows, 16-byte
//   vectors where the width allows;
// * combine backward: one warp per token does all of it (dys rows, the weight
//   gradients as dot products with a fixed reduction order, the shared
//   expert's), 16-byte vectors where the width allows; each warp also zeroes
//   the unused dys rows among its token's k row indices.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_moe.cuh"

namespace el::cuda {
namespace {

using moe::check_experts;
using moe::kMaxExperts;
using moe::kPerLane;
using moe::kWarpsPerBlock;
using moe::load_scores;
using moe::warp_grid;

constexpr int kChunk = 1024;  // slots per grouping block (32 warps)

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

// Kernel 1: each block counts its chunk's slots per expert into counts[chunk,
// e]; the last block turns them into the chunk's bases per expert (exclusive
// over the chunks) and writes the offsets of the kept rows.
__global__ void __launch_bounds__(kChunk) group_count_kernel(const int32_t* ids, int64_t n, int k,
                                                             int e, int64_t capacity,
                                                             int32_t* counts, int32_t* offsets,
                                                             int* arrivals,
                                                             DeviceErrorRecord* err) {
  __shared__ int sh[kMaxExperts];
  for (int i = threadIdx.x; i < e; i += blockDim.x) sh[i] = 0;
  __syncthreads();
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kChunk + threadIdx.x;
  int x = -1;
  if (p < n * k) {
    const int64_t s = slot_of(p, n, k);
    x = ids[s];
    if (x < 0 || x >= e) {
      report_device_error(err, kErrMoeExpertId, s / k, x, e);
      x = -1;
    }
  }
  moe::count_id_warp(x, e, sh);
  __syncthreads();
  for (int i = threadIdx.x; i < e; i += blockDim.x) counts[blockIdx.x * static_cast<int64_t>(e) + i] = sh[i];
  if (!moe::last_block_arrives(arrivals)) return;
  // The scan: one thread per expert walks the chunks (sh now holds the kept rows).
  const int chunks = static_cast<int>(gridDim.x);
  for (int c = threadIdx.x; c < e; c += blockDim.x) {
    int run = 0;
    for (int ch = 0; ch < chunks; ++ch) {
      int32_t* q = counts + static_cast<int64_t>(ch) * e + c;
      const int v = __ldcg(q);
      *q = run;  // now the chunk's base
      run += v;
    }
    sh[c] = capacity > 0 && run > capacity ? static_cast<int>(capacity) : run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    offsets[0] = 0;
    for (int c = 0; c < e; ++c) offsets[c + 1] = (acc += sh[c]);
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
  if (x < 0 || x >= e) x = -1;  // reported by group_count_kernel
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
  // The unused rows [offsets[E], M) get slot -1 (the grid covers M threads).
  const int64_t unused = offsets[e] + p;
  if (unused < n * k) sorted_slot[unused] = -1;
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
// grid-stride. 32-bit index arithmetic when the item count allows (a 64-bit
// division per item costs more than the memory-bound body can hide).
template <int V, class F>
__device__ __forceinline__ void for_each_vec(int64_t rows, int64_t c, F&& f) {
  const int64_t per_row = c / V, total = rows * per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (total + stride <= 0xffffffffll) {
    const uint32_t pr = static_cast<uint32_t>(per_row);
    for (uint32_t i = static_cast<uint32_t>(first); i < static_cast<uint32_t>(total);
         i += static_cast<uint32_t>(stride)) {
      const uint32_t r = i / pr;
      f(static_cast<int64_t>(r), static_cast<int64_t>(i - r * pr));
    }
    return;
  }
  for (int64_t i = first; i < total; i += stride) f(i / per_row, i % per_row);
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

// One lane's share of a row of per_row packs: d = w g, and the partial sum of
// <g, y> over the packs j = lane, lane + 32, ... in order.
template <class T, int V>
__device__ __forceinline__ float scale_and_dot(const Pack<T, V>* g, const Pack<T, V>* y, float w,
                                               Pack<T, V>* d, int64_t per_row, int lane) {
  float dot = 0.f;
#pragma unroll 2
  for (int64_t j = lane; j < per_row; j += 32) {
    const Pack<T, V> gv = g[j], yv = y[j];
    Pack<T, V> o;
#pragma unroll
    for (int u = 0; u < V; ++u) {
      const float gf = to_f<T>(gv.v[u]);
      dot += gf * to_f<T>(yv.v[u]);
      o.v[u] = from_f<T>(w * gf);
    }
    d[j] = o;
  }
  return dot;
}

// The combine's backward, one warp per token t, V elements of T at a time:
// for each of its slots s = t k + q kept in row r, dys[r] = weights[s]
// dout[t] and dweights[s] = <dout[t], ys[r]> (0 when dropped); row s of dys
// is zeroed when it is unused (sorted[s] < 0: no slot writes it, so no other
// warp does either); with a shared expert dshared = sigmoid(g) dout, dgate =
// sigmoid'(g) <dout, shared>. Each lane sums its vectors in order, then the
// warp's butterfly: a fixed reduction order.
template <class T, class W, int V>
__global__ void combine_backward_kernel(const T* dout, const T* ys, const W* weights,
                                        const int32_t* sorted, const int32_t* slot_row,
                                        const T* shared, const T* gate, int64_t n, int64_t c,
                                        int k, T* dys, W* dweights, T* dshared, T* dgate) {
  using P = Pack<T, V>;
  const int lane = threadIdx.x & 31;
  const int64_t per_row = c / V;
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    const P* g = reinterpret_cast<const P*>(dout + t * c);
    for (int q = 0; q < k; ++q) {
      const int64_t s = t * k + q;
      const int r = slot_row[s];
      float dot = 0.f;
      if (r >= 0) {
        dot = scale_and_dot(g, reinterpret_cast<const P*>(ys + r * c), to_f<W>(weights[s]),
                            reinterpret_cast<P*>(dys + r * c), per_row, lane);
      }
      dot = warp_sum(dot);
      if (lane == 0) dweights[s] = from_f<W>(dot);
      if (sorted[s] < 0) {
        P* d = reinterpret_cast<P*>(dys + s * c);
        for (int64_t j = lane; j < per_row; j += 32) d[j] = zeros_pack<T, V>();
      }
    }
    if (!shared) continue;
    const float sg = 1.f / (1.f + expf(-to_f<T>(gate[t])));
    const float dot = warp_sum(scale_and_dot(g, reinterpret_cast<const P*>(shared + t * c), sg,
                                             reinterpret_cast<P*>(dshared + t * c), per_row, lane));
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
  const int ie = static_cast<int>(e), ik = static_cast<int>(k);
  group_count_kernel<<<chunks, kChunk, 0, cx.stream>>>(ids.data<int32_t>(), n, ik, ie, capacity,
                                                       bases.data<int32_t>(),
                                                       offsets.data<int32_t>(), cx.counters,
                                                       cx.dev_error);
  EL_CUDA_CHECK_LAUNCH("group_count_kernel");
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
  EL_CUDA_ENSURE(sorted_slot.numel() == m && slot_row.numel() == n * k && m == n * k,
                 "cuda moe_combine_backward: ys {} rows, {} tokens of k {}, sorted_slot {}, "
                 "slot_row {}", m, n, k, sorted_slot.numel(), slot_row.numel());
  const bool sh = shared.defined();
  EL_DISPATCH_FLOAT(ys.dtype(), T, {
    with_weight_type<T>(weights, ys.dtype(), [&](auto* wtag) {
      using W = std::remove_pointer_t<decltype(wtag)>;
      const T* shp = sh ? shared.data<T>() : nullptr;
      T* dshp = sh ? dshared.data<T>() : nullptr;
      with_vec<T>(n, c, {dout.raw(), ys.raw(), dys.raw(), shp, dshp}, [&](auto v, int) {
        combine_backward_kernel<T, W, decltype(v)::value>
            <<<warp_grid(n), kWarpsPerBlock * 32, 0, ctx().stream>>>(
                dout.data<T>(), ys.data<T>(), weights.data<W>(), sorted_slot.data<int32_t>(),
                slot_row.data<int32_t>(), shp, sh ? shared_gate.data<T>() : nullptr, n, c, k,
                dys.data<T>(), dweights.data<W>(), dshp, sh ? dgate.data<T>() : nullptr);
      });
    });
  });
  EL_CUDA_CHECK_LAUNCH("combine_backward_kernel");
}

}  // namespace el::cuda
