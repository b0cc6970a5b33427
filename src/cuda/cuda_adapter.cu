// cuda_adapter.cu — the arithmetic LoRA and DoRA add to a model: the
// row-broadcast product x[N, C] * v[C], its gradient with respect to v
// (per-block column partials, then the fixed-order column sum shared with the
// norms, so the result does not depend on timing), and dropout with the mask
// hashed from (seed, index) exactly as the CPU does (ops/backend.h).
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "ops/backend.h"

namespace el::cuda {
namespace {

// out = x * v per row; a row block (row_block) of threads, V columns each.
template <class T, class TV, int V>
__global__ void mul_lastdim_kernel(const T* __restrict__ x, const TV* __restrict__ v,
                                   const TV* __restrict__ b, T* __restrict__ out, int64_t rows,
                                   int64_t c) {
  struct alignas(sizeof(T) * V) P { T e[V]; };
  const int64_t cv = c / V;
  for (int64_t r = int64_t{blockIdx.x} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.x} * blockDim.y) {
    for (int64_t k = threadIdx.x; k < cv; k += blockDim.x) {
      const P xv = *reinterpret_cast<const P*>(x + r * c + k * V);
      P o;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float shift = b ? to_f<TV>(b[k * V + e]) : 0.f;
        o.e[e] = from_f<T>(fmaf(to_f<T>(xv.e[e]), to_f<TV>(v[k * V + e]), shift));
      }
      *reinterpret_cast<P*>(out + r * c + k * V) = o;
    }
  }
}

// partial[b, j] = sum over rows r = b, b + G, ... of dy[r, j] * x[r, j].
template <class T>
__global__ void mul_lastdim_partials_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                            float* __restrict__ partial, int64_t rows, int64_t c) {
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float s = 0.f;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
      s += to_f<T>(dy[r * c + j]) * to_f<T>(x[r * c + j]);
    }
    partial[int64_t{blockIdx.x} * c + j] = s;
  }
}

template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n, float p,
                               float keep_scale, uint64_t seed) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = dropout_keep(seed, static_cast<uint64_t>(i), p) ? from_f<T>(to_f<T>(x[i]) * keep_scale)
                                                             : from_f<T>(0.f);
  }
}

// One warp per row: out[r] = 1 / sqrt(sum of squares), f32 sums.
template <class T>
__global__ void inv_row_norms_kernel(const T* __restrict__ x, float* __restrict__ out, int64_t n,
                                     int64_t c) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  float ss = 0.f;
  for (int64_t j = lane; j < c; j += 32) {
    const float v = to_f<T>(x[row * c + j]);
    ss += v * v;
  }
  ss = warp_sum(ss);
  if (lane == 0) out[row] = 1.f / sqrtf(ss);
}

void lastdim_dims(const Tensor& x, const Tensor& v, const char* what, int64_t& rows, int64_t& c) {
  EL_CUDA_ENSURE(x.ndim() >= 1 && v.ndim() == 1 && v.dim(0) == x.dim(-1),
                 "cuda {}: v {} does not match x {}", what, shape_str(v.shape()),
                 shape_str(x.shape()));
  c = x.dim(-1);
  rows = c == 0 ? 0 : x.numel() / c;
}

}  // namespace

void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out) {
  expect_cuda_float(x, "mul_lastdim (x)");
  expect_cuda_float(v, "mul_lastdim (v)");
  if (b.defined()) {
    expect_cuda_dtype(b, v.dtype(), "mul_lastdim (b)");
    EL_CUDA_ENSURE(b.numel() == v.numel(), "cuda mul_lastdim: b {} for v {}", shape_str(b.shape()),
                   shape_str(v.shape()));
  }
  expect_cuda_dtype(out, x.dtype(), "mul_lastdim (out)");
  int64_t rows = 0, c = 0;
  lastdim_dims(x, v, "mul_lastdim", rows, c);
  EL_CUDA_ENSURE(out.numel() == x.numel(), "cuda mul_lastdim: out {} for x {}",
                 shape_str(out.shape()), shape_str(x.shape()));
  if (rows == 0) return;
  constexpr int kThreads = 256;
  cudaStream_t s = ctx().stream;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    EL_DISPATCH_FLOAT(v.dtype(), TV, {
      constexpr int V = Vec<T>::kN;
      const bool vec = c % V == 0 && aligned16(x.raw()) && aligned16(out.raw());
      const dim3 block = row_block(vec ? c / V : c, kThreads);
      const int grid = grid_for((rows + block.y - 1) / block.y * kThreads, kThreads);
      if (vec) {
        mul_lastdim_kernel<T, TV, V><<<grid, block, 0, s>>>(
            x.data<T>(), v.data<TV>(), b.defined() ? b.data<TV>() : nullptr, out.data<T>(), rows, c);
      } else {
        mul_lastdim_kernel<T, TV, 1><<<grid, block, 0, s>>>(
            x.data<T>(), v.data<TV>(), b.defined() ? b.data<TV>() : nullptr, out.data<T>(), rows, c);
      }
    });
  });
  EL_CUDA_CHECK_LAUNCH("mul_lastdim_kernel");
}

void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv) {
  expect_cuda_float(dy, "mul_lastdim_grad_v (dy)");
  expect_cuda_dtype(x, dy.dtype(), "mul_lastdim_grad_v (x)");
  expect_cuda_float(dv, "mul_lastdim_grad_v (dv)");
  int64_t rows = 0, c = 0;
  lastdim_dims(x, dv, "mul_lastdim_grad_v", rows, c);
  EL_CUDA_ENSURE(dy.numel() == x.numel(), "cuda mul_lastdim_grad_v: dy {} for x {}",
                 shape_str(dy.shape()), shape_str(x.shape()));
  if (c == 0) return;
  if (rows == 0) {
    fill(dv, 0.f);
    return;
  }
  Context& cx = ctx();
  // A fixed number of row groups (depends only on the size), so the sums do
  // not depend on timing.
  const int64_t g = std::min<int64_t>(rows, int64_t{cx.sm_count} * 4);
  Tensor partial = Tensor::empty({g, c}, DType::f32, dy.device());
  EL_DISPATCH_FLOAT(dy.dtype(), T, {
    mul_lastdim_partials_kernel<T><<<static_cast<unsigned>(g), 256, 0, cx.stream>>>(
        dy.data<T>(), x.data<T>(), partial.data<float>(), rows, c);
  });
  EL_CUDA_CHECK_LAUNCH("mul_lastdim_partials_kernel");
  launch_column_sum(partial.data<float>(), g, c, dv);
}

void inv_row_norms(const Tensor& x, Tensor& out) {
  expect_cuda_float(x, "inv_row_norms (x)");
  expect_cuda_dtype(out, DType::f32, "inv_row_norms (out)");
  EL_CUDA_ENSURE(x.ndim() == 2 && out.numel() == x.dim(0), "cuda inv_row_norms: out {} for x {}",
                 shape_str(out.shape()), shape_str(x.shape()));
  const int64_t n = x.dim(0), c = x.dim(1);
  if (n == 0) return;
  constexpr int kWarps = 8;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    inv_row_norms_kernel<T><<<static_cast<unsigned>((n + kWarps - 1) / kWarps), kWarps * 32, 0,
                              ctx().stream>>>(x.data<T>(), out.data<float>(), n, c);
  });
  EL_CUDA_CHECK_LAUNCH("inv_row_norms_kernel");
}

void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out) {
  expect_cuda_float(x, "dropout (x)");
  expect_cuda_dtype(out, x.dtype(), "dropout (out)");
  EL_CUDA_ENSURE(out.numel() == x.numel(), "cuda dropout: out {} for x {}",
                 shape_str(out.shape()), shape_str(x.shape()));
  EL_CUDA_ENSURE(p >= 0.f && p < 1.f, "cuda dropout: p {} outside [0, 1)", p);
  const int64_t n = x.numel();
  if (n == 0) return;
  constexpr int kThreads = 256;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    dropout_kernel<T><<<grid_for(n, kThreads), kThreads, 0, ctx().stream>>>(
        x.data<T>(), out.data<T>(), n, p, 1.f / (1.f - p), seed);
  });
  EL_CUDA_CHECK_LAUNCH("dropout_kernel");
}

}  // namespace el::cuda
