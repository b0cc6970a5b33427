// cuda_decode_step.cu — the small kernels around a decode step: greedy
// argmax over the logits rows and the device-side positions increment (so a
// captured step replays while the rows advance; see cuda_infer.cu).
#include <algorithm>
#include <climits>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

// ---- argmax_rows -------------------------------------------------------------------
constexpr int kArgmaxMaxThreads = 1024;
constexpr int kNoIndex = INT_MAX;  // no candidate yet (empty or all-NaN so far)

// Candidate (av, ai) beats (bv, bi): larger value, then smaller index.
__device__ __forceinline__ bool argmax_better(float av, int ai, float bv, int bi) {
  return ai != kNoIndex && (bi == kNoIndex || av > bv || (av == bv && ai < bi));
}

__device__ __forceinline__ void argmax_warp(float& best, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (argmax_better(ov, oi, best, bi)) {
      best = ov;
      bi = oi;
    }
  }
}

// One block per row; each thread scans packs of V strided by the block, in
// increasing index order (so a strict > keeps the first of equal values).
template <class T, int V>
__global__ void __launch_bounds__(kArgmaxMaxThreads)
    argmax_kernel(const T* __restrict__ x, int64_t cols, int32_t* __restrict__ out) {
  __shared__ float s_val[32];
  __shared__ int s_idx[32];
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const T* xr = x + int64_t{blockIdx.x} * cols;
  float best = -INFINITY;
  int bi = kNoIndex;
  for (int64_t c0 = int64_t{threadIdx.x} * V; c0 < cols; c0 += int64_t{blockDim.x} * V) {
    const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(xr + c0);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float val = to_f<T>(p.v[e]);
      if (!isnan(val) && (bi == kNoIndex || val > best)) {
        best = val;
        bi = static_cast<int>(c0 + e);
      }
    }
  }
  argmax_warp(best, bi);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    s_val[warp] = best;
    s_idx[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int nwarps = blockDim.x >> 5;
    best = lane < nwarps ? s_val[lane] : -INFINITY;
    bi = lane < nwarps ? s_idx[lane] : kNoIndex;
    argmax_warp(best, bi);
    if (lane == 0) out[blockIdx.x] = bi == kNoIndex ? 0 : bi;
  }
}

template <class T, int V>
void launch_argmax(const Tensor& x, int64_t rows, int64_t cols, Tensor& out) {
  const int64_t packs = (cols + V - 1) / V;
  const int threads =
      static_cast<int>(std::clamp<int64_t>((packs + 31) / 32 * 32, 32, kArgmaxMaxThreads));
  launch_kernel(argmax_kernel<T, V>, static_cast<unsigned>(rows), threads, 0, ctx().stream,
                x.data<T>(), cols, out.data<int32_t>());
}

__global__ void increment_kernel(int32_t* __restrict__ x, int64_t n, int32_t delta) {
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride)
    x[i] += delta;
}

}  // namespace

void argmax_rows(const Tensor& x, Tensor& out) {
  expect_cuda_float(x, "argmax_rows (x)");
  expect_cuda_dtype(out, DType::i32, "argmax_rows (out)");
  const int64_t rows = out.numel();
  if (rows == 0) return;
  EL_CUDA_ENSURE(x.numel() % rows == 0 && x.numel() / rows <= INT32_MAX && rows <= INT32_MAX,
                 "cuda argmax_rows: x {} does not split into {} rows (of at most 2^31 - 1)",
                 shape_str(x.shape()), rows);
  const int64_t cols = x.numel() / rows;
  const size_t es = dtype_size(x.dtype());
  const bool vec = aligned16(x.raw()) && (static_cast<size_t>(cols) * es) % 16 == 0;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    if (vec) {
      launch_argmax<T, 16 / sizeof(T)>(x, rows, cols, out);
    } else {
      launch_argmax<T, 1>(x, rows, cols, out);
    }
  });
  EL_CUDA_CHECK_LAUNCH("argmax_kernel");
}

void increment_i32(Tensor& x, int32_t delta) {
  expect_cuda_dtype(x, DType::i32, "increment_i32");
  const int64_t n = x.numel();
  if (n == 0) return;
  launch_kernel(increment_kernel, grid_for(n, 256), 256, 0, ctx().stream, x.data<int32_t>(), n,
                delta);
  EL_CUDA_CHECK_LAUNCH("increment_kernel");
}

}  // namespace el::cuda
