// cuda_norm.cu — RMSNorm and LayerNorm over the last dimension of x[N, C].
//
// RMSNorm fast path (x, y, dy, dx and the weight of one dtype, C a multiple
// of the 16-byte vector and at most 32 x 8 vectors): one warp per row, the
// row held in registers between the statistic and the output, 16-byte loads,
// warp shuffles only (no block barrier per row). The backward keeps each
// warp's dw partial in registers across its rows.
// General path (any C, mixed dtypes, LayerNorm): one block per row forward;
// the backward is a persistent grid of G blocks with shared-memory partials.
// LayerNorm uses the two-pass variance like the CPU reference (no
// cancellation for rows with a large mean).
// Both backward paths store per-block dw (and db) partials to a [G, C] f32
// buffer that a second kernel adds in block order: no atomics, so dw/db are
// the same bits on every run. dx may get the gradient x already had added
// (dx_add, which may alias dx: each element is read before it is written by
// the same thread).
// x, y, dy, dx may each be f32/bf16/f16 (x/y and dy/dx templated, weights
// read by run-time dtype); statistics (rstd, mean) are written as their
// tensors' dtype, f32 in practice.
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

int row_threads(int64_t c) { return c >= 2048 ? 512 : (c >= 512 ? 256 : 128); }

struct Weights {
  const void* w;
  DType tw;
  const void* b;  // LayerNorm bias (nullptr for RMSNorm)
  DType tb;
};

template <class TX, class TY>
__global__ void rmsnorm_forward_kernel(const TX* __restrict__ x, Weights wt, float eps,
                                       TY* __restrict__ y, void* rstd, DType trstd, int64_t c) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const TX* xr = x + row * c;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float v = to_f<TX>(xr[j]);
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss, scratch);
  const float r = rsqrtf(ss / static_cast<float>(c) + eps);
  if (threadIdx.x == 0) st(rstd, trstd, row, r);
  TY* yr = y + row * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    yr[j] = from_f<TY>(to_f<TX>(xr[j]) * r * ld(wt.w, wt.tw, j));
  }
}

template <class TX, class TY>
__global__ void layernorm_forward_kernel(const TX* __restrict__ x, Weights wt, float eps,
                                         TY* __restrict__ y, void* mean, DType tmean, void* rstd,
                                         DType trstd, int64_t c) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const TX* xr = x + row * c;
  const float inv_c = 1.f / static_cast<float>(c);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += to_f<TX>(xr[j]);
  const float mu = block_sum(s, scratch) * inv_c;
  float var = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float d = to_f<TX>(xr[j]) - mu;
    var = fmaf(d, d, var);
  }
  const float r = rsqrtf(block_sum(var, scratch) * inv_c + eps);
  if (threadIdx.x == 0) {
    st(mean, tmean, row, mu);
    st(rstd, trstd, row, r);
  }
  TY* yr = y + row * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    yr[j] = from_f<TY>((to_f<TX>(xr[j]) - mu) * r * ld(wt.w, wt.tw, j) + ld(wt.b, wt.tb, j));
  }
}

// LAYER = false: RMSNorm (mean unused, partial holds dw); true: LayerNorm
// (partial holds dw in [0, G) and db in [G, 2G)).
template <bool LAYER, class TX, class TG>
__global__ void norm_backward_kernel(const TG* __restrict__ dy, const TX* __restrict__ x,
                                     Weights wt, const void* mean, DType tmean, const void* rstd,
                                     DType trstd, const TG* dx_add, TG* dx,
                                     float* __restrict__ partial, int64_t n, int64_t c) {
  extern __shared__ float acc[];  // [C] dw partial (+ [C] db partial for LayerNorm)
  __shared__ float scratch[32];
  for (int64_t j = threadIdx.x; j < (LAYER ? 2 : 1) * c; j += blockDim.x) acc[j] = 0.f;
  __syncthreads();  // acc[c + j] was zeroed by another thread when C % blockDim != 0
  const float inv_c = 1.f / static_cast<float>(c);
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const TX* xr = x + row * c;
    const TG* gr = dy + row * c;
    const float r = ld(rstd, trstd, row);
    const float mu = LAYER ? ld(mean, tmean, row) : 0.f;
    float s1 = 0.f, s2 = 0.f;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      const float g = to_f<TG>(gr[j]) * ld(wt.w, wt.tw, j);
      const float xv = to_f<TX>(xr[j]);
      if (LAYER) {
        s1 += g;
        s2 = fmaf(g, (xv - mu) * r, s2);
      } else {
        s2 = fmaf(g, xv, s2);
      }
    }
    if (LAYER) s1 = block_sum(s1, scratch);
    s2 = block_sum(s2, scratch);
    TG* dxr = dx + row * c;
    const TG* addr = dx_add ? dx_add + row * c : nullptr;
    if (LAYER) {
      // xhat = (x - mu) r; g = dy w;  dx = r (g - mean(g) - xhat mean(g xhat))
      const float mg = s1 * inv_c, mgx = s2 * inv_c;
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
        const float d = to_f<TG>(gr[j]);
        const float xhat = (to_f<TX>(xr[j]) - mu) * r;
        dxr[j] = from_f<TG>(r * (d * ld(wt.w, wt.tw, j) - mg - xhat * mgx));
        acc[j] = fmaf(d, xhat, acc[j]);
        acc[c + j] += d;
      }
    } else {
      // y = x r w  =>  dx = r (dy w) - x r^3 / C * sum(dy w x)
      const float k = s2 * r * r * r * inv_c;
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
        const float d = to_f<TG>(gr[j]);
        const float xv = to_f<TX>(xr[j]);
        const float prior = addr ? to_f<TG>(addr[j]) : 0.f;
        dxr[j] = from_f<TG>(r * d * ld(wt.w, wt.tw, j) - xv * k + prior);
        acc[j] = fmaf(d, xv * r, acc[j]);
      }
    }
  }
  const int64_t g = gridDim.x;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    partial[blockIdx.x * c + j] = acc[j];
    if (LAYER) partial[(g + blockIdx.x) * c + j] = acc[c + j];
  }
}

}  // namespace

// out[j] = sum over blocks b < g of partial[b, j]: 32 columns per block,
// 8 thread rows each summing every 8th partial, then the 8 in a fixed order.
constexpr int kColRows = 8;
__global__ void column_sum_kernel(const float* __restrict__ partial, int64_t g, int64_t c,
                                  void* out, DType tout) {
  __shared__ float part[kColRows][33];
  const int64_t j = int64_t{blockIdx.x} * 32 + threadIdx.x;
  float s = 0.f;
  if (j < c) {
    for (int64_t b = threadIdx.y; b < g; b += kColRows) s += partial[b * c + j];
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < c) {
    float t = 0.f;
#pragma unroll
    for (int r = 0; r < kColRows; ++r) t += part[r][threadIdx.x];
    st(out, tout, j, t);
  }
}

void launch_column_sum(const float* partial, int64_t g, int64_t c, Tensor& out) {
  const dim3 block(32, kColRows);
  column_sum_kernel<<<static_cast<unsigned>((c + 31) / 32), block, 0, ctx().stream>>>(
      partial, g, c, out.raw(), out.dtype());
  EL_CUDA_CHECK_LAUNCH("column_sum_kernel");
}

namespace {

// ---- RMSNorm fast path: one warp per row, NV 16-byte vectors per lane ----------
constexpr int kMaxLaneVectors = 8;

// ADD: the normalised row is sum = x + branch (rounded to T, and stored).
template <class T, int NV, bool ADD>
__global__ void rmsnorm_forward_warp_kernel(const T* __restrict__ x, const T* __restrict__ branch,
                                            const T* __restrict__ w, float eps,
                                            T* __restrict__ sum, T* __restrict__ y,
                                            float* __restrict__ rstd, int64_t n, int c) {
  constexpr int V = Vec<T>::kN;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x >> 5) + (threadIdx.x >> 5);
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  if (row >= n) return;
  const int nvec = c / V;
  const Vec<T>* xr = reinterpret_cast<const Vec<T>*>(x + row * c);
  const Vec<T>* br = ADD ? reinterpret_cast<const Vec<T>*>(branch + row * c) : nullptr;
  const Vec<T>* wr = reinterpret_cast<const Vec<T>*>(w);
  // Every load (x, branch, w) is issued before any is used: one memory round
  // trip per row, which is the whole cost at decode (a single row).
  Vec<T> xv[NV], bv[ADD ? NV : 1], wv[NV];
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int j = lane + 32 * k;
    if (j < nvec) {
      xv[k] = xr[j];
      if constexpr (ADD) bv[k] = br[j];
      wv[k] = wr[j];
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int j = lane + 32 * k;
    if (j < nvec) {
      if constexpr (ADD) {
#pragma unroll
        for (int e = 0; e < V; ++e) xv[k].v[e] = from_f<T>(to_f<T>(xv[k].v[e]) + to_f<T>(bv[k].v[e]));
        reinterpret_cast<Vec<T>*>(sum + row * c)[j] = xv[k];
      }
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float f = to_f<T>(xv[k].v[e]);
        ss = fmaf(f, f, ss);
      }
    }
  }
  const float r = rsqrtf(warp_sum(ss) / static_cast<float>(c) + eps);
  if (lane == 0) rstd[row] = r;
  Vec<T>* yr = reinterpret_cast<Vec<T>*>(y + row * c);
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int j = lane + 32 * k;
    if (j < nvec) {
      Vec<T> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = from_f<T>(to_f<T>(xv[k].v[e]) * r * to_f<T>(wv[k].v[e]));
      yr[j] = o;
    }
  }
}

// Rows are strided over all warps of the grid; each block writes the sum of
// its warps' dw partials (in warp order) to partial[blockIdx.x, C].
template <class T, int NV>
__global__ void rmsnorm_backward_warp_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                             const T* __restrict__ w,
                                             const float* __restrict__ rstd, const T* dx_add,
                                             T* dx, float* __restrict__ partial, int64_t n,
                                             int c) {
  extern __shared__ float warp_partial[];  // [warps][C]
  constexpr int V = Vec<T>::kN;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int nvec = c / V;
  const float inv_c = 1.f / static_cast<float>(c);
  // The weight is re-read per row (16-byte loads that hit L1) rather than
  // kept in registers: fewer registers, more warps in flight per SM.
  float acc[NV][V];
  const Vec<T>* wr = reinterpret_cast<const Vec<T>*>(w);
#pragma unroll
  for (int k = 0; k < NV; ++k) {
#pragma unroll
    for (int e = 0; e < V; ++e) acc[k][e] = 0.f;
  }
  const int64_t row_stride = int64_t{gridDim.x} * warps;
  for (int64_t row = int64_t{blockIdx.x} * warps + warp; row < n; row += row_stride) {
    const Vec<T>* xr = reinterpret_cast<const Vec<T>*>(x + row * c);
    const Vec<T>* gr = reinterpret_cast<const Vec<T>*>(dy + row * c);
    const Vec<T>* ar = dx_add ? reinterpret_cast<const Vec<T>*>(dx_add + row * c) : nullptr;
    // Every load of the row is issued before the reduction (one memory round
    // trip per row, not two): x, dy and the gradient to add.
    Vec<T> xv[NV], gv[NV], pv[NV];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int j = lane + 32 * k;
      if (j < nvec) {
        xv[k] = xr[j];
        gv[k] = gr[j];
        if (ar) pv[k] = ar[j];
        const Vec<T> wv = wr[j];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          s = fmaf(to_f<T>(gv[k].v[e]) * to_f<T>(wv.v[e]), to_f<T>(xv[k].v[e]), s);
        }
      }
    }
    s = warp_sum(s);
    const float r = rstd[row];
    // y = x r w  =>  dx = r (dy w) - x r^3 / C * sum(dy w x)
    const float kx = s * r * r * r * inv_c;
    Vec<T>* dr = reinterpret_cast<Vec<T>*>(dx + row * c);
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int j = lane + 32 * k;
      if (j < nvec) {
        const Vec<T> wv = wr[j];
        Vec<T> o;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float d = to_f<T>(gv[k].v[e]), xf = to_f<T>(xv[k].v[e]);
          const float add = ar ? to_f<T>(pv[k].v[e]) : 0.f;
          o.v[e] = from_f<T>(r * d * to_f<T>(wv.v[e]) - xf * kx + add);
          acc[k][e] = fmaf(d, xf * r, acc[k][e]);
        }
        dr[j] = o;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int j = lane + 32 * k;
    if (j < nvec) {
#pragma unroll
      for (int e = 0; e < V; ++e) warp_partial[warp * c + j * V + e] = acc[k][e];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < c; i += blockDim.x) {
    float t = 0.f;
    for (int q = 0; q < warps; ++q) t += warp_partial[q * c + i];
    partial[int64_t{blockIdx.x} * c + i] = t;
  }
}

// Vectors per lane for the fast path, 0 when it does not apply.
int lane_vectors(const Tensor& x, int64_t c, std::initializer_list<const Tensor*> same) {
  const int v = 16 / static_cast<int>(dtype_size(x.dtype()));
  if (c <= 0 || c % v != 0) return 0;
  for (const Tensor* t : same) {
    if (t->dtype() != x.dtype() || !aligned16(t->raw())) return 0;
  }
  // Exact up to 4 (C = 768 bf16 is 3 a lane: no registers for an idle 4th).
  const int64_t per_lane = (c / v + 31) / 32;
  if (per_lane <= 4) return static_cast<int>(per_lane);
  return per_lane <= kMaxLaneVectors ? kMaxLaneVectors : 0;
}

#define EL_DISPATCH_LANE_VECTORS(nv, NV, ...) \
  switch (nv) {                               \
    case 1: {                                 \
      constexpr int NV = 1;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 2: {                                 \
      constexpr int NV = 2;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 3: {                                 \
      constexpr int NV = 3;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 4: {                                 \
      constexpr int NV = 4;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    default: {                                \
      constexpr int NV = 8;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
  }

void check_rows(const Tensor& x, const Tensor& w, const char* what, int64_t& n, int64_t& c) {
  EL_CUDA_ENSURE(x.ndim() >= 1, "cuda {}: x must have at least one dimension", what);
  c = x.dim(-1);
  EL_CUDA_ENSURE(w.numel() == c, "cuda {}: weight {} for x {}", what, shape_str(w.shape()),
                 shape_str(x.shape()));
  n = c == 0 ? 0 : x.numel() / c;
}

template <bool LAYER>
void norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor* mean,
                   const Tensor& rstd, const Tensor* dx_add, Tensor& dx, Tensor& dw, Tensor* db,
                   int64_t n, int64_t c, const char* what) {
  if (c == 0) return;
  if (n == 0) {
    fill(dw, 0.f);
    if (db) fill(*db, 0.f);
    return;
  }
  Context& cx = ctx();
  const size_t smem = sizeof(float) * static_cast<size_t>((LAYER ? 2 : 1) * c);
  int max_smem = 0;
  EL_CUDA_CHECK(
      cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, cx.device));
  EL_CUDA_ENSURE(smem + 1024 <= static_cast<size_t>(max_smem),
                 "cuda {}: {} channels need {} bytes of shared memory, the GPU has {}", what, c,
                 smem, max_smem);
  const int threads = row_threads(c);
  const int64_t g = std::min<int64_t>(n, int64_t{cx.sm_count} * 2);
  Tensor partial = Tensor::empty({(LAYER ? 2 : 1) * g, c}, DType::f32, x.device());
  const Weights wt{w.raw(), w.dtype(), nullptr, DType::f32};
  const void* mp = mean ? mean->raw() : nullptr;
  const DType mt = mean ? mean->dtype() : DType::f32;
  EL_DISPATCH_FLOAT(x.dtype(), TX, {
    EL_DISPATCH_FLOAT(dy.dtype(), TG, {
      EL_CUDA_ENSURE(dx.dtype() == dy.dtype(), "cuda {}: dx is {}, dy is {}", what,
                     dtype_name(dx.dtype()), dtype_name(dy.dtype()));
      auto kernel = norm_backward_kernel<LAYER, TX, TG>;
      if (smem > 48 * 1024) {
        EL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
      }
      kernel<<<static_cast<unsigned>(g), threads, smem, cx.stream>>>(
          dy.data<TG>(), x.data<TX>(), wt, mp, mt, rstd.raw(), rstd.dtype(),
          dx_add ? dx_add->data<TG>() : nullptr, dx.data<TG>(), partial.data<float>(), n, c);
    });
  });
  EL_CUDA_CHECK_LAUNCH("norm_backward_kernel");
  launch_column_sum(partial.data<float>(), g, c, dw);
  if (LAYER) launch_column_sum(partial.data<float>() + g * c, g, c, *db);
}

// The fast RMSNorm backward; false when it does not apply (general path).
bool rmsnorm_backward_fast(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor* dx_add, Tensor& dx, Tensor& dw, int64_t n, int64_t c) {
  const int nv = dx_add ? lane_vectors(x, c, {&dy, &w, &dx, dx_add}) : lane_vectors(x, c, {&dy, &w, &dx});
  if (nv == 0 || rstd.dtype() != DType::f32 || c > INT32_MAX / 64) return false;
  Context& cx = ctx();
  constexpr int kWarps = 4;
  const size_t smem = sizeof(float) * static_cast<size_t>(kWarps * c);
  if (smem > 48 * 1024) return false;
  int per_sm = 0;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    EL_DISPATCH_LANE_VECTORS(nv, NV, {
      auto kernel = rmsnorm_backward_warp_kernel<T, NV>;
      EL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem));
      const int64_t g = std::max<int64_t>(
          1, std::min<int64_t>((n + kWarps - 1) / kWarps, int64_t{cx.sm_count} * std::max(per_sm, 1)));
      Tensor partial = Tensor::empty({g, c}, DType::f32, x.device());
      kernel<<<static_cast<unsigned>(g), kWarps * 32, smem, cx.stream>>>(
          dy.data<T>(), x.data<T>(), w.data<T>(), rstd.data<float>(),
          dx_add ? dx_add->data<T>() : nullptr, dx.data<T>(), partial.data<float>(), n,
          static_cast<int>(c));
      EL_CUDA_CHECK_LAUNCH("rmsnorm_backward_warp_kernel");
      launch_column_sum(partial.data<float>(), g, c, dw);
    });
  });
  return true;
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  for (const Tensor* t : TensorPtrs{&x, &w, &y, &rstd}) {
    expect_cuda_float(*t, "rmsnorm_forward");
  }
  int64_t n = 0, c = 0;
  check_rows(x, w, "rmsnorm_forward", n, c);
  EL_CUDA_ENSURE(y.numel() == x.numel() && rstd.numel() == n,
                 "cuda rmsnorm_forward: y {} / rstd {} for x {}", shape_str(y.shape()),
                 shape_str(rstd.shape()), shape_str(x.shape()));
  if (n == 0) return;
  Context& cx = ctx();
  const int nv = lane_vectors(x, c, {&w, &y});
  if (nv > 0 && rstd.dtype() == DType::f32 && c <= INT32_MAX / 64) {
    constexpr int kWarps = 8;
    const unsigned grid = static_cast<unsigned>((n + kWarps - 1) / kWarps);
    EL_DISPATCH_FLOAT(x.dtype(), T, {
      EL_DISPATCH_LANE_VECTORS(nv, NV, {
        launch_kernel(rmsnorm_forward_warp_kernel<T, NV, false>, grid, kWarps * 32, 0, cx.stream,
            x.data<T>(), nullptr, w.data<T>(), eps, nullptr, y.data<T>(), rstd.data<float>(), n,
            static_cast<int>(c));
      });
    });
    EL_CUDA_CHECK_LAUNCH("rmsnorm_forward_warp_kernel");
    return;
  }
  const Weights wt{w.raw(), w.dtype(), nullptr, DType::f32};
  EL_DISPATCH_FLOAT(x.dtype(), TX, {
    EL_DISPATCH_FLOAT(y.dtype(), TY, {
      rmsnorm_forward_kernel<TX, TY><<<static_cast<unsigned>(n), row_threads(c), 0, cx.stream>>>(
          x.data<TX>(), wt, eps, y.data<TY>(), rstd.raw(), rstd.dtype(), c);
    });
  });
  EL_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& branch, const Tensor& w, float eps,
                         Tensor& sum, Tensor& y, Tensor& rstd) {
  for (const Tensor* t : TensorPtrs{&x, &branch, &w, &sum, &y, &rstd}) {
    expect_cuda_float(*t, "add_rmsnorm_forward");
  }
  int64_t n = 0, c = 0;
  check_rows(x, w, "add_rmsnorm_forward", n, c);
  EL_CUDA_ENSURE(branch.numel() == x.numel() && sum.numel() == x.numel() &&
                     y.numel() == x.numel() && rstd.numel() == n,
                 "cuda add_rmsnorm_forward: branch {} sum {} y {} rstd {} for x {}",
                 shape_str(branch.shape()), shape_str(sum.shape()), shape_str(y.shape()),
                 shape_str(rstd.shape()), shape_str(x.shape()));
  if (n == 0) return;
  const int nv = lane_vectors(x, c, {&branch, &w, &sum, &y});
  if (nv == 0 || rstd.dtype() != DType::f32 || c > INT32_MAX / 64) {
    add(x, branch, sum);  // general path: the two kernels
    rmsnorm_forward(sum, w, eps, y, rstd);
    return;
  }
  Context& cx = ctx();
  constexpr int kWarps = 8;
  const unsigned grid = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    EL_DISPATCH_LANE_VECTORS(nv, NV, {
      launch_kernel(rmsnorm_forward_warp_kernel<T, NV, true>, grid, kWarps * 32, 0, cx.stream,
          x.data<T>(), branch.data<T>(), w.data<T>(), eps, sum.data<T>(), y.data<T>(),
          rstd.data<float>(), n, static_cast<int>(c));
    });
  });
  EL_CUDA_CHECK_LAUNCH("rmsnorm_forward_warp_kernel (add)");
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx_add, Tensor& dx, Tensor& dw) {
  for (const Tensor* t : TensorPtrs{&dy, &x, &w, &rstd, &dx, &dw}) {
    expect_cuda_float(*t, "rmsnorm_backward");
  }
  const Tensor* add = dx_add.defined() ? &dx_add : nullptr;
  if (add) {
    expect_cuda_float(*add, "rmsnorm_backward (dx_add)");
    EL_CUDA_ENSURE(add->numel() == dx.numel() && add->dtype() == dx.dtype(),
                   "cuda rmsnorm_backward: dx_add {} {} for dx {} {}", dtype_name(add->dtype()),
                   shape_str(add->shape()), dtype_name(dx.dtype()), shape_str(dx.shape()));
  }
  int64_t n = 0, c = 0;
  check_rows(x, w, "rmsnorm_backward", n, c);
  EL_CUDA_ENSURE(
      dy.numel() == x.numel() && dx.numel() == x.numel() && rstd.numel() == n && dw.numel() == c,
      "cuda rmsnorm_backward: dy {} dx {} rstd {} dw {} for x {}", shape_str(dy.shape()),
      shape_str(dx.shape()), shape_str(rstd.shape()), shape_str(dw.shape()), shape_str(x.shape()));
  if (n > 0 && rmsnorm_backward_fast(dy, x, w, rstd, add, dx, dw, n, c)) return;
  norm_backward<false>(dy, x, w, nullptr, rstd, add, dx, dw, nullptr, n, c, "rmsnorm_backward");
}

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                       Tensor& mean, Tensor& rstd) {
  for (const Tensor* t : TensorPtrs{&x, &w, &b, &y, &mean, &rstd}) {
    expect_cuda_float(*t, "layernorm_forward");
  }
  int64_t n = 0, c = 0;
  check_rows(x, w, "layernorm_forward", n, c);
  EL_CUDA_ENSURE(b.numel() == c && y.numel() == x.numel() && mean.numel() == n && rstd.numel() == n,
                 "cuda layernorm_forward: b {} y {} mean {} rstd {} for x {}", shape_str(b.shape()),
                 shape_str(y.shape()), shape_str(mean.shape()), shape_str(rstd.shape()),
                 shape_str(x.shape()));
  if (n == 0) return;
  Context& cx = ctx();
  const Weights wt{w.raw(), w.dtype(), b.raw(), b.dtype()};
  EL_DISPATCH_FLOAT(x.dtype(), TX, {
    EL_DISPATCH_FLOAT(y.dtype(), TY, {
      layernorm_forward_kernel<TX, TY><<<static_cast<unsigned>(n), row_threads(c), 0, cx.stream>>>(
          x.data<TX>(), wt, eps, y.data<TY>(), mean.raw(), mean.dtype(), rstd.raw(), rstd.dtype(),
          c);
    });
  });
  EL_CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) {
  for (const Tensor* t : TensorPtrs{&dy, &x, &w, &mean, &rstd, &dx, &dw, &db}) {
    expect_cuda_float(*t, "layernorm_backward");
  }
  int64_t n = 0, c = 0;
  check_rows(x, w, "layernorm_backward", n, c);
  EL_CUDA_ENSURE(dy.numel() == x.numel() && dx.numel() == x.numel() && mean.numel() == n &&
                     rstd.numel() == n && dw.numel() == c && db.numel() == c,
                 "cuda layernorm_backward: dy {} dx {} mean {} rstd {} dw {} db {} for x {}",
                 shape_str(dy.shape()), shape_str(dx.shape()), shape_str(mean.shape()),
                 shape_str(rstd.shape()), shape_str(dw.shape()), shape_str(db.shape()),
                 shape_str(x.shape()));
  norm_backward<true>(dy, x, w, &mean, rstd, nullptr, dx, dw, &db, n, c, "layernorm_backward");
}

}  // namespace el::cuda
