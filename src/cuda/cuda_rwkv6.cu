// cuda_rwkv6.cu — RWKV-6 kernels (contracts in ops/backend.h, "RWKV-6"):
//
//  * tanh forward / backward: elementwise grid-stride passes;
//  * WKV-6 forward: one block of N threads per (batch row, head), N the head
//    size (a template parameter: 8, 16, 32, 64 or 128). Thread j keeps column
//    j of the N x N state in registers; each step the block stages r_t, k_t
//    and the decay d_t = exp(-exp(w_t)) in shared memory, and thread j writes
//    y_t[j] = (r_t . (u * k_t)) v_t[j] + sum_i r_t[i] S[i][j], then updates
//    its column. The state is never written per step: only the initial state
//    is read and the state after last[b] written (generation);
//  * WKV-6 backward: the same blocks, the algorithm of cpu_rwkv6.cpp (two
//    sweeps, each holding one N x N matrix; no stored states): a forward
//    sweep with state rows per thread (thread i: row i) writes dr and the
//    decay-gradient terms alpha (an f32 scratch [B, T, C]) and per-row
//    partials of du; a reverse sweep keeps the state gradient G both as
//    rows (thread i: dk, beta and the running sums that give dw) and as
//    columns (thread j: dv), 2 N registers per thread. du is summed over the
//    batch by launch_column_sum in a fixed order.
// Arithmetic is f32 with expf (not the fast intrinsics), as the CPU reference.
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void tanh_forward_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = from_f<T>(tanhf(to_f<T>(x[i])));
  }
}

template <class T>
__global__ void tanh_backward_kernel(const T* __restrict__ dout, const T* __restrict__ y,
                                     T* __restrict__ dx, int64_t n) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float t = to_f<T>(y[i]);
    dx[i] = from_f<T>(to_f<T>(dout[i]) * (1.f - t * t));
  }
}

__device__ __forceinline__ float decay_of(float w) { return expf(-expf(w)); }

// Grid: B H blocks of N threads; thread j owns state column j.
template <class T, int N>
__global__ void __launch_bounds__(N)
    wkv6_forward_kernel(const T* __restrict__ r, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ w, const T* __restrict__ u,
                        const int32_t* __restrict__ last, float* __restrict__ state,
                        T* __restrict__ y, int64_t steps, int64_t heads) {
  __shared__ float sr[N], sk[N], sd[N], su[N];
  const int j = threadIdx.x;
  const int64_t bh = blockIdx.x, b = bh / heads, h = bh % heads;
  const int64_t c = heads * N;
  su[j] = to_f<T>(u[h * N + j]);
  float s[N];
  float* st = state ? state + bh * N * N : nullptr;
#pragma unroll
  for (int i = 0; i < N; ++i) s[i] = st ? st[i * N + j] : 0.f;
  const int64_t keep = last ? last[b] : steps - 1;
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t o = (b * steps + t) * c + h * N;
    __syncthreads();  // the previous step's reads of sr / sk / sd are done
    sr[j] = to_f<T>(r[o + j]);
    sk[j] = to_f<T>(k[o + j]);
    sd[j] = decay_of(to_f<T>(w[o + j]));
    const float vj = to_f<T>(v[o + j]);
    __syncthreads();
    float bonus = 0.f, acc = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      bonus += sr[i] * su[i] * sk[i];
      acc += sr[i] * s[i];
      s[i] = sd[i] * s[i] + sk[i] * vj;
    }
    y[o + j] = from_f<T>(bonus * vj + acc);
    if (st && t == keep) {
#pragma unroll
      for (int i = 0; i < N; ++i) st[i * N + j] = s[i];
    }
  }
}

// Grid: B H blocks of N threads; thread x is row x (key dim i) and, in the
// reverse sweep, also column x (value dim j) of G.
template <class T, int N>
__global__ void __launch_bounds__(N)
    wkv6_backward_kernel(const T* __restrict__ r, const T* __restrict__ k, const T* __restrict__ v,
                         const T* __restrict__ w, const T* __restrict__ u,
                         const T* __restrict__ dy, const float* __restrict__ state0,
                         float* __restrict__ alpha, T* __restrict__ dr, T* __restrict__ dk,
                         T* __restrict__ dv, T* __restrict__ dw, float* __restrict__ du_partial,
                         int64_t steps, int64_t heads) {
  __shared__ float sg[N], sv[N], sr[N], sk[N], sd[N], su[N];
  const int x = threadIdx.x;
  const int64_t bh = blockIdx.x, b = bh / heads, h = bh % heads;
  const int64_t c = heads * N;
  su[x] = to_f<T>(u[h * N + x]);
  const float ux = su[x];
  float row[N];
#pragma unroll
  for (int j = 0; j < N; ++j) row[j] = state0 ? state0[bh * N * N + x * N + j] : 0.f;
  float du_acc = 0.f;
  // Sweep 1: forward, row x of S_{t-1}.
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t o = (b * steps + t) * c + h * N;
    __syncthreads();
    sg[x] = to_f<T>(dy[o + x]);
    sv[x] = to_f<T>(v[o + x]);
    __syncthreads();
    const float rx = to_f<T>(r[o + x]), kx = to_f<T>(k[o + x]);
    const float dx = decay_of(to_f<T>(w[o + x]));
    float dyv = 0.f, sdy = 0.f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      dyv += sg[j] * sv[j];
      sdy += row[j] * sg[j];
      row[j] = dx * row[j] + kx * sv[j];
    }
    dr[o + x] = from_f<T>(ux * kx * dyv + sdy);
    alpha[o + x] = rx * sdy;
    du_acc += rx * kx * dyv;
  }
  du_partial[b * c + h * N + x] = du_acc;
  // Sweep 2: reverse, G_t as row x and as column x.
  float col[N];
#pragma unroll
  for (int j = 0; j < N; ++j) row[j] = col[j] = 0.f;
  float acc_alpha = 0.f, acc_beta = 0.f;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t o = (b * steps + t) * c + h * N;
    __syncthreads();
    sg[x] = to_f<T>(dy[o + x]);
    sv[x] = to_f<T>(v[o + x]);
    sr[x] = to_f<T>(r[o + x]);
    sk[x] = to_f<T>(k[o + x]);
    const float wx = to_f<T>(w[o + x]);
    const float ex = expf(wx);
    sd[x] = expf(-ex);
    __syncthreads();
    float dyv = 0.f, bonus = 0.f, gv = 0.f, gk = 0.f;
    const float gx = sg[x], rx = sr[x], kx = sk[x], dx = sd[x];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      dyv += sg[j] * sv[j];
      bonus += sr[j] * su[j] * sk[j];
      gv += row[j] * sv[j];   // (G_t v_t)[x]
      gk += col[j] * sk[j];   // (G_t^T k_t)[x], col[i] = G_t[i][x]
      row[j] = rx * sg[j] + dx * row[j];
      col[j] = sr[j] * gx + sd[j] * col[j];
    }
    dk[o + x] = from_f<T>(rx * ux * dyv + gv);
    dv[o + x] = from_f<T>(bonus * gx + gk);
    acc_beta += kx * gv;
    const float dlogd = acc_alpha - acc_beta;
    acc_alpha += alpha[o + x];
    dw[o + x] = from_f<T>(-dlogd * ex);
  }
}

struct Wkv6Dims {
  int64_t b, t, c, h, n;
};

Wkv6Dims wkv6_dims(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                   const Tensor& u, int64_t n, const Tensor& state, const char* what) {
  expect_cuda_float(k, what);
  for (const Tensor* t : TensorPtrs{&r, &v, &w, &u}) expect_cuda_dtype(*t, k.dtype(), what);
  EL_CUDA_ENSURE(k.ndim() == 3 && r.shape() == k.shape() && v.shape() == k.shape() &&
                     w.shape() == k.shape() && u.numel() == k.dim(2) && n > 0 &&
                     k.dim(2) % n == 0,
                 "cuda {}: r {}, k {}, v {}, w {}, u {}, head size {}", what,
                 shape_str(r.shape()), shape_str(k.shape()), shape_str(v.shape()),
                 shape_str(w.shape()), shape_str(u.shape()), n);
  EL_CUDA_ENSURE(n == 8 || n == 16 || n == 32 || n == 64 || n == 128,
                 "cuda {}: head size {} has no kernel (8, 16, 32, 64 or 128)", what, n);
  const int64_t h = k.dim(2) / n;
  if (state.defined()) {
    expect_cuda_dtype(state, DType::f32, what);
    EL_CUDA_ENSURE(state.numel() == k.dim(0) * h * n * n, "cuda {}: state {} for k {}", what,
                   shape_str(state.shape()), shape_str(k.shape()));
  }
  return {k.dim(0), k.dim(1), k.dim(2), h, n};
}

// Calls f(std::integral_constant<int, N>{}) for the head size.
template <class F>
void dispatch_head(int64_t n, F&& f) {
  switch (n) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    default: return f(std::integral_constant<int, 128>{});
  }
}

}  // namespace

void tanh_forward(const Tensor& x, Tensor& out) {
  const char* what = "tanh_forward";
  expect_cuda_float(x, what);
  expect_cuda_dtype(out, x.dtype(), what);
  const int64_t n = x.numel();
  if (n == 0) return;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    tanh_forward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, ctx().stream>>>(
        x.data<T>(), out.data<T>(), n);
  });
  EL_CUDA_CHECK_LAUNCH("tanh_forward_kernel");
}

void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx) {
  const char* what = "tanh_backward";
  expect_cuda_float(out, what);
  for (const Tensor* t : TensorPtrs{&dout, &dx}) expect_cuda_dtype(*t, out.dtype(), what);
  const int64_t n = out.numel();
  if (n == 0) return;
  EL_DISPATCH_FLOAT(out.dtype(), T, {
    tanh_backward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, ctx().stream>>>(
        dout.data<T>(), out.data<T>(), dx.data<T>(), n);
  });
  EL_CUDA_CHECK_LAUNCH("tanh_backward_kernel");
}

void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                       const Tensor& u, int64_t head_size, const Tensor& last, Tensor& state,
                       Tensor& y) {
  const char* what = "rwkv6_wkv_forward";
  const Wkv6Dims d = wkv6_dims(r, k, v, w, u, head_size, state, what);
  expect_cuda_dtype(y, k.dtype(), what);
  if (last.defined()) expect_positions(last, d.b, what);
  if (d.b * d.c == 0 || d.t == 0) return;
  const unsigned grid = static_cast<unsigned>(d.b * d.h);
  dispatch_head(d.n, [&](auto nc) {
    constexpr int N = decltype(nc)::value;
    EL_DISPATCH_FLOAT(k.dtype(), T, {
      wkv6_forward_kernel<T, N><<<grid, N, 0, ctx().stream>>>(
          r.data<T>(), k.data<T>(), v.data<T>(), w.data<T>(), u.data<T>(),
          last.defined() ? last.data<int32_t>() : nullptr,
          state.defined() ? state.data<float>() : nullptr, y.data<T>(), d.t, d.h);
    });
  });
  EL_CUDA_CHECK_LAUNCH("wkv6_forward_kernel");
}

void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                        const Tensor& u, int64_t head_size, const Tensor& dy,
                        const Tensor& state0, Tensor& dr, Tensor& dk, Tensor& dv, Tensor& dw,
                        Tensor& du) {
  const char* what = "rwkv6_wkv_backward";
  const Wkv6Dims d = wkv6_dims(r, k, v, w, u, head_size, state0, what);
  for (const Tensor* t : TensorPtrs{&dy, &dr, &dk, &dv, &dw, &du}) {
    expect_cuda_dtype(*t, k.dtype(), what);
  }
  if (d.b * d.c == 0) return;
  if (d.t == 0) {
    fill(du, 0.f);
    return;
  }
  Tensor alpha = Tensor::empty(k.shape(), DType::f32, k.device());
  Tensor partial = Tensor::empty({d.b, d.c}, DType::f32, k.device());
  const unsigned grid = static_cast<unsigned>(d.b * d.h);
  dispatch_head(d.n, [&](auto nc) {
    constexpr int N = decltype(nc)::value;
    EL_DISPATCH_FLOAT(k.dtype(), T, {
      wkv6_backward_kernel<T, N><<<grid, N, 0, ctx().stream>>>(
          r.data<T>(), k.data<T>(), v.data<T>(), w.data<T>(), u.data<T>(), dy.data<T>(),
          state0.defined() ? state0.data<float>() : nullptr, alpha.data<float>(), dr.data<T>(),
          dk.data<T>(), dv.data<T>(), dw.data<T>(), partial.data<float>(), d.t, d.h);
    });
  });
  EL_CUDA_CHECK_LAUNCH("wkv6_backward_kernel");
  launch_column_sum(partial.data<float>(), d.b, d.c, du);
}

}  // namespace el::cuda
