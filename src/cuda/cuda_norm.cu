// cuda_norm.cu — RMSNorm and LayerNorm over the last dimension of x[N, C].
//
// Forward: one block per row; the row is read once for the statistic(s) and
// again (from L1/L2) to write y. LayerNorm uses the two-pass variance like
// the CPU reference (no cancellation for rows with a large mean).
// Backward: a persistent grid of G blocks strides over the rows; each block
// writes dx for its rows and keeps its dw (and db) partial sums in shared
// memory, then stores them to a [G, C] f32 buffer; a second kernel adds the G
// partials of each column in block order. No atomics, so dw/db are the same
// bits on every run.
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
                                     DType trstd, TG* __restrict__ dx, float* __restrict__ partial,
                                     int64_t n, int64_t c) {
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
        dxr[j] = from_f<TG>(r * d * ld(wt.w, wt.tw, j) - xv * k);
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

// out[j] = sum over blocks b < g of partial[b, j], in block order.
__global__ void column_sum_kernel(const float* __restrict__ partial, int64_t g, int64_t c,
                                  void* out, DType tout) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= c) return;
  float s = 0.f;
  for (int64_t b = 0; b < g; ++b) s += partial[b * c + j];
  st(out, tout, j, s);
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
                   const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor* db, int64_t n, int64_t c,
                   const char* what) {
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
          dy.data<TG>(), x.data<TX>(), wt, mp, mt, rstd.raw(), rstd.dtype(), dx.data<TG>(),
          partial.data<float>(), n, c);
    });
  });
  EL_CUDA_CHECK_LAUNCH("norm_backward_kernel");
  const unsigned cgrid = static_cast<unsigned>((c + 255) / 256);
  column_sum_kernel<<<cgrid, 256, 0, cx.stream>>>(partial.data<float>(), g, c, dw.raw(),
                                                  dw.dtype());
  if (LAYER) {
    column_sum_kernel<<<cgrid, 256, 0, cx.stream>>>(partial.data<float>() + g * c, g, c, db->raw(),
                                                    db->dtype());
  }
  EL_CUDA_CHECK_LAUNCH("column_sum_kernel");
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
  const Weights wt{w.raw(), w.dtype(), nullptr, DType::f32};
  EL_DISPATCH_FLOAT(x.dtype(), TX, {
    EL_DISPATCH_FLOAT(y.dtype(), TY, {
      rmsnorm_forward_kernel<TX, TY><<<static_cast<unsigned>(n), row_threads(c), 0, cx.stream>>>(
          x.data<TX>(), wt, eps, y.data<TY>(), rstd.raw(), rstd.dtype(), c);
    });
  });
  EL_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw) {
  for (const Tensor* t : TensorPtrs{&dy, &x, &w, &rstd, &dx, &dw}) {
    expect_cuda_float(*t, "rmsnorm_backward");
  }
  int64_t n = 0, c = 0;
  check_rows(x, w, "rmsnorm_backward", n, c);
  EL_CUDA_ENSURE(
      dy.numel() == x.numel() && dx.numel() == x.numel() && rstd.numel() == n && dw.numel() == c,
      "cuda rmsnorm_backward: dy {} dx {} rstd {} dw {} for x {}", shape_str(dy.shape()),
      shape_str(dx.shape()), shape_str(rstd.shape()), shape_str(dw.shape()), shape_str(x.shape()));
  norm_backward<false>(dy, x, w, nullptr, rstd, dx, dw, nullptr, n, c, "rmsnorm_backward");
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
  norm_backward<true>(dy, x, w, &mean, rstd, dx, dw, &db, n, c, "layernorm_backward");
}

}  // namespace el::cuda
