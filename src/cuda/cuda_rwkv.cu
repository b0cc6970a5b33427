// cuda_rwkv.cu — RWKV-4 kernels (contracts in ops/backend.h, "RWKV-4"):
//
//  * token shift + time mix: one elementwise pass over x[B, T, C] writing up
//    to three mixes; its backward writes dx the same way and sums dmix per
//    channel through fixed row-group partials (launch_column_sum), so the
//    result does not depend on timing;
//  * WKV forward: one thread per (batch row, channel) sweeping T with the
//    state (num, den, max) in registers, in transformers' stable form, as
//    the RWKV authors' kernel is organised (this one is written from the
//    equations). Adjacent threads are adjacent channels, so every load and
//    store of step t is one coalesced row. k and v are loaded kLoadAhead
//    steps at a time so the loads of a thread overlap (few warps per SM run
//    when B C is small). A decode step is the same kernel at T = 1, the state
//    updated in place;
//  * WKV backward: the same threads, first a forward sweep that writes
//    log D_t (the output's denominator) to an f32 scratch [B, T, C], then the
//    reverse sweep of cpu_rwkv.cpp (state adjoints and their decay
//    derivatives under one running maximum, every exponent <= 0), writing
//    dk, dv and per-(b, c) partials of dtime_decay / dtime_first that
//    launch_column_sum adds over the batch.
// Arithmetic is f32 with expf/logf (not the fast intrinsics), as the CPU
// reference computes it.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr float kNoState = -1e38f;  // the zero state's maximum (transformers')
constexpr int kMaxMix = 3;
constexpr int kThreads = 256;
constexpr int kWkvThreads = 64;  // small blocks: B C threads spread over more SMs
constexpr int kLoadAhead = 4;

struct MixPtrs {
  const void* mix[kMaxMix];
  void* out[kMaxMix];  // forward: the mixes; backward: dout per mix
  int m;
};

// out_j[b, t, c] = x * m_j + xs * (1 - m_j), xs = x[b, t - 1] or prev[b] (0).
template <class T>
__global__ void time_mix_forward_kernel(const T* __restrict__ x, const T* __restrict__ prev,
                                        MixPtrs a, int64_t steps, int64_t c, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t ch = i % c, row = i / c, t = row % steps;
    const float xv = to_f<T>(x[i]);
    const float xs = t > 0 ? to_f<T>(x[i - c]) : (prev ? to_f<T>(prev[(row / steps) * c + ch]) : 0.f);
    for (int j = 0; j < a.m; ++j) {
      const float m = to_f<T>(static_cast<const T*>(a.mix[j])[ch]);
      static_cast<T*>(a.out[j])[i] = from_f<T>(xv * m + xs * (1.f - m));
    }
  }
}

// dx[b, t] = sum_j dout_j[b, t] m_j + dout_j[b, t + 1] (1 - m_j).
template <class T>
__global__ void time_mix_dx_kernel(MixPtrs a, T* __restrict__ dx, int64_t steps, int64_t c,
                                   int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t ch = i % c, t = (i / c) % steps;
    float acc = 0.f;
    for (int j = 0; j < a.m; ++j) {
      const T* g = static_cast<const T*>(a.out[j]);
      const float m = to_f<T>(static_cast<const T*>(a.mix[j])[ch]);
      acc += to_f<T>(g[i]) * m;
      if (t + 1 < steps) acc += to_f<T>(g[i + c]) * (1.f - m);
    }
    dx[i] = from_f<T>(acc);
  }
}

// partial[(j G + g) C + ch] = sum over rows r = g, g + G, ... of
// dout_j[r, ch] * (x[r, ch] - xs[r, ch]); block g, threads over channels.
template <class T>
__global__ void time_mix_dmix_partials_kernel(MixPtrs a, const T* __restrict__ x,
                                              const T* __restrict__ prev,
                                              float* __restrict__ partial, int64_t rows,
                                              int64_t steps, int64_t c) {
  const int64_t groups = gridDim.x;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    float acc[kMaxMix] = {0.f, 0.f, 0.f};
    for (int64_t r = blockIdx.x; r < rows; r += groups) {
      const int64_t t = r % steps, i = r * c + ch;
      const float xs = t > 0 ? to_f<T>(x[i - c]) : (prev ? to_f<T>(prev[(r / steps) * c + ch]) : 0.f);
      const float diff = to_f<T>(x[i]) - xs;
      for (int j = 0; j < a.m; ++j) acc[j] += to_f<T>(static_cast<const T*>(a.out[j])[i]) * diff;
    }
    for (int j = 0; j < a.m; ++j) partial[(j * groups + blockIdx.x) * c + ch] = acc[j];
  }
}

// k and v of steps t0 .. t0 + kLoadAhead - 1 of one (b, c) column (base: its
// element at t = 0), all loads issued before any is used; 0 past the end.
template <class T>
__device__ __forceinline__ void load_ahead(const T* __restrict__ k, const T* __restrict__ v,
                                           int64_t base, int64_t t0, int64_t steps, int64_t c,
                                           float (&kk)[kLoadAhead], float (&vv)[kLoadAhead]) {
#pragma unroll
  for (int e = 0; e < kLoadAhead; ++e) {
    const bool in = t0 + e < steps;
    kk[e] = in ? to_f<T>(k[base + (t0 + e) * c]) : 0.f;
    vv[e] = in ? to_f<T>(v[base + (t0 + e) * c]) : 0.f;
  }
}

// The state after one more token: decayed by w, plus e^k (v, 1), rescaled to
// the new running maximum.
__device__ __forceinline__ void advance_state(float& num, float& den, float& mx, float kk,
                                              float vv, float w) {
  const float m = fmaxf(mx + w, kk);
  const float e1 = expf(mx + w - m), e2 = expf(kk - m);
  num = e1 * num + e2 * vv;
  den = e1 * den + e2;
  mx = m;
}

// One (b, c) pair per thread: y over T and, with a state, the state after
// step last[b] (T - 1 without last).
template <class T>
__global__ void __launch_bounds__(kWkvThreads)
    wkv_forward_kernel(const T* __restrict__ td, const T* __restrict__ tf,
                       const T* __restrict__ k, const T* __restrict__ v,
                       const int32_t* __restrict__ last, float* __restrict__ state,
                       T* __restrict__ y, int64_t batch, int64_t steps, int64_t c) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= batch * c) return;
  const int64_t b = idx / c, ch = idx % c;
  const float w = -expf(to_f<T>(td[ch])), u = to_f<T>(tf[ch]);
  float* st = state ? state + b * 3 * c + ch : nullptr;
  float num = st ? st[0] : 0.f, den = st ? st[c] : 0.f, mx = st ? st[2 * c] : kNoState;
  const int64_t keep = last ? last[b] : steps - 1;
  float kept_num = num, kept_den = den, kept_mx = mx;
  const int64_t base = b * steps * c + ch;
  for (int64_t t0 = 0; t0 < steps; t0 += kLoadAhead) {
    float kk[kLoadAhead], vv[kLoadAhead];
    load_ahead(k, v, base, t0, steps, c, kk, vv);
#pragma unroll
    for (int e = 0; e < kLoadAhead; ++e) {
      const int64_t t = t0 + e;
      if (t >= steps) break;
      const float m = fmaxf(mx, kk[e] + u);
      const float e1 = expf(mx - m), e2 = expf(kk[e] + u - m);
      y[base + t * c] = from_f<T>((e1 * num + e2 * vv[e]) / (e1 * den + e2));
      advance_state(num, den, mx, kk[e], vv[e], w);
      if (t == keep) kept_num = num, kept_den = den, kept_mx = mx;
    }
  }
  if (st) {
    st[0] = kept_num;
    st[c] = kept_den;
    st[2 * c] = kept_mx;
  }
}

// The backward of one (b, c) pair (cpu_rwkv.cpp has the derivation):
// log_den is this pair's f32 scratch column; pw / pu [B, C] get dL/dw * w
// and dL/du of this batch row.
template <class T>
__global__ void __launch_bounds__(kWkvThreads)
    wkv_backward_kernel(const T* __restrict__ td, const T* __restrict__ tf,
                        const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ y, const T* __restrict__ dy,
                        const float* __restrict__ state0, float* __restrict__ log_den,
                        T* __restrict__ dk, T* __restrict__ dv, float* __restrict__ pw,
                        float* __restrict__ pu, int64_t batch, int64_t steps, int64_t c) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= batch * c) return;
  const int64_t b = idx / c, ch = idx % c;
  const float w = -expf(to_f<T>(td[ch])), u = to_f<T>(tf[ch]);
  const float* st = state0 ? state0 + b * 3 * c + ch : nullptr;
  const float num0 = st ? st[0] : 0.f, den0 = st ? st[c] : 0.f, mx0 = st ? st[2 * c] : kNoState;
  const int64_t base = b * steps * c + ch;
  // 1. log D_t from the recomputed stable state.
  float num = num0, den = den0, mx = mx0;
  for (int64_t t0 = 0; t0 < steps; t0 += kLoadAhead) {
    float kk[kLoadAhead], vv[kLoadAhead];
    load_ahead(k, v, base, t0, steps, c, kk, vv);
#pragma unroll
    for (int e = 0; e < kLoadAhead; ++e) {
      const int64_t t = t0 + e;
      if (t >= steps) break;
      const float m = fmaxf(mx, kk[e] + u);
      log_den[base + t * c] = m + logf(expf(mx - m) * den + expf(kk[e] + u - m));
      advance_state(num, den, mx, kk[e], vv[e], w);
    }
  }
  // 2. Reverse sweep: (a, bb, a1, b1) e^n are alpha, beta, alpha', beta' of step t + 1.
  float a = 0.f, bb = 0.f, a1 = 0.f, b1 = 0.f, n = kNoState, gw = 0.f, gu = 0.f;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t i = base + t * c;
    const float kk = to_f<T>(k[i]), vv = to_f<T>(v[i]), yy = to_f<T>(y[i]);
    const float g = to_f<T>(dy[i]), ld = log_den[i];
    const float cur = g * expf(u + kk - ld);
    const float es = expf(kk + n);
    gu += cur * (vv - yy);
    gw += es * (vv * a1 + b1);
    dk[i] = from_f<T>(cur * (vv - yy) + es * (vv * a + bb));
    dv[i] = from_f<T>(cur + es * a);
    const float nn = fmaxf(w + n, -ld);
    const float f1 = expf(w + n - nn), f2 = expf(-ld - nn);
    a1 = f1 * (a1 + a);
    b1 = f1 * (b1 + bb);
    a = f1 * a + f2 * g;
    bb = f1 * bb - f2 * g * yy;
    n = nn;
  }
  if (st) gw += expf(mx0 + n) * (num0 * a1 + den0 * b1);
  pw[idx] = gw * w;  // w = -exp(time_decay): dw / dtime_decay = w
  pu[idx] = gu;
}

MixPtrs mix_ptrs(const std::vector<Tensor>& mix, const std::vector<Tensor>& per_mix,
                 const Tensor& x, const char* what) {
  EL_CUDA_ENSURE(!mix.empty() && mix.size() <= kMaxMix && per_mix.size() == mix.size(),
                 "cuda {}: {} mix vectors and {} tensors per mix (1 to {})", what, mix.size(),
                 per_mix.size(), kMaxMix);
  MixPtrs a{};
  a.m = static_cast<int>(mix.size());
  for (size_t j = 0; j < mix.size(); ++j) {
    expect_cuda_dtype(mix[j], x.dtype(), what);
    expect_cuda_dtype(per_mix[j], x.dtype(), what);
    EL_CUDA_ENSURE(mix[j].numel() == x.dim(-1) && per_mix[j].numel() == x.numel(),
                   "cuda {}: mix {} / {} for x {}", what, shape_str(mix[j].shape()),
                   shape_str(per_mix[j].shape()), shape_str(x.shape()));
    a.mix[j] = mix[j].raw();
    a.out[j] = per_mix[j].raw();
  }
  return a;
}

void check_prev(const Tensor& prev, const Tensor& x, const char* what) {
  if (!prev.defined()) return;
  expect_cuda_dtype(prev, x.dtype(), what);
  EL_CUDA_ENSURE(prev.numel() == x.dim(0) * x.dim(2), "cuda {}: prev {} for x {}", what,
                 shape_str(prev.shape()), shape_str(x.shape()));
}

struct WkvDims {
  int64_t b, t, c;
};

WkvDims wkv_dims(const Tensor& td, const Tensor& tf, const Tensor& k, const Tensor& v,
                 const Tensor& state, const char* what) {
  expect_cuda_float(k, what);
  for (const Tensor* t : TensorPtrs{&td, &tf, &v}) expect_cuda_dtype(*t, k.dtype(), what);
  EL_CUDA_ENSURE(k.ndim() == 3 && v.shape() == k.shape() && td.numel() == k.dim(2) &&
                     tf.numel() == k.dim(2),
                 "cuda {}: k {}, v {}, time_decay {}, time_first {}", what, shape_str(k.shape()),
                 shape_str(v.shape()), shape_str(td.shape()), shape_str(tf.shape()));
  if (state.defined()) {
    expect_cuda_dtype(state, DType::f32, what);
    EL_CUDA_ENSURE(state.numel() == k.dim(0) * 3 * k.dim(2), "cuda {}: state {} for k {}", what,
                   shape_str(state.shape()), shape_str(k.shape()));
  }
  return {k.dim(0), k.dim(1), k.dim(2)};
}

unsigned wkv_grid(const WkvDims& d) {
  return static_cast<unsigned>((d.b * d.c + kWkvThreads - 1) / kWkvThreads);
}

}  // namespace

void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev, const std::vector<Tensor>& mix,
                           std::vector<Tensor>& outs) {
  const char* what = "rwkv_time_mix_forward";
  expect_cuda_float(x, what);
  EL_CUDA_ENSURE(x.ndim() == 3, "cuda {}: x {} (expected [B, T, C])", what, shape_str(x.shape()));
  check_prev(prev, x, what);
  const MixPtrs a = mix_ptrs(mix, outs, x, what);
  const int64_t n = x.numel();
  if (n == 0) return;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    time_mix_forward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, ctx().stream>>>(
        x.data<T>(), prev.defined() ? prev.data<T>() : nullptr, a, x.dim(1), x.dim(2), n);
  });
  EL_CUDA_CHECK_LAUNCH("time_mix_forward_kernel");
}

void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x, const Tensor& prev,
                            const std::vector<Tensor>& mix, Tensor& dx,
                            std::vector<Tensor>& dmix) {
  const char* what = "rwkv_time_mix_backward";
  expect_cuda_float(x, what);
  expect_cuda_dtype(dx, x.dtype(), what);
  EL_CUDA_ENSURE(x.ndim() == 3 && dx.numel() == x.numel() && dmix.size() == mix.size(),
                 "cuda {}: x {}, dx {}, {} dmix for {} mix", what, shape_str(x.shape()),
                 shape_str(dx.shape()), dmix.size(), mix.size());
  check_prev(prev, x, what);
  const MixPtrs a = mix_ptrs(mix, douts, x, what);
  const int64_t n = x.numel(), steps = x.dim(1), c = x.dim(2), rows = x.dim(0) * steps;
  if (c == 0) return;
  if (rows == 0) {
    for (Tensor& d : dmix) fill(d, 0.f);
    return;
  }
  // A fixed number of row groups (it depends only on the size), so the sums
  // do not depend on timing.
  const int64_t groups = std::min<int64_t>(rows, int64_t{ctx().sm_count} * 4);
  Tensor partial = Tensor::empty({a.m, groups, c}, DType::f32, x.device());
  cudaStream_t s = ctx().stream;
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    time_mix_dx_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(a, dx.data<T>(), steps, c, n);
    EL_CUDA_CHECK_LAUNCH("time_mix_dx_kernel");
    time_mix_dmix_partials_kernel<T><<<static_cast<unsigned>(groups), kThreads, 0, s>>>(
        a, x.data<T>(), prev.defined() ? prev.data<T>() : nullptr, partial.data<float>(), rows,
        steps, c);
    EL_CUDA_CHECK_LAUNCH("time_mix_dmix_partials_kernel");
  });
  for (size_t j = 0; j < dmix.size(); ++j) {
    expect_cuda_dtype(dmix[j], x.dtype(), what);
    launch_column_sum(partial.data<float>() + static_cast<int64_t>(j) * groups * c, groups, c,
                      dmix[j]);
  }
}

void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                      const Tensor& v, const Tensor& last, Tensor& state, Tensor& y) {
  const char* what = "rwkv_wkv_forward";
  const WkvDims d = wkv_dims(time_decay, time_first, k, v, state, what);
  expect_cuda_dtype(y, k.dtype(), what);
  if (last.defined()) expect_positions(last, d.b, what);
  if (d.b * d.c == 0 || d.t == 0) return;
  EL_DISPATCH_FLOAT(k.dtype(), T, {
    wkv_forward_kernel<T><<<wkv_grid(d), kWkvThreads, 0, ctx().stream>>>(
        time_decay.data<T>(), time_first.data<T>(), k.data<T>(), v.data<T>(),
        last.defined() ? last.data<int32_t>() : nullptr,
        state.defined() ? state.data<float>() : nullptr, y.data<T>(), d.b, d.t, d.c);
  });
  EL_CUDA_CHECK_LAUNCH("wkv_forward_kernel");
}

void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                       const Tensor& v, const Tensor& y, const Tensor& dy, const Tensor& state0,
                       Tensor& dtime_decay, Tensor& dtime_first, Tensor& dk, Tensor& dv) {
  const char* what = "rwkv_wkv_backward";
  const WkvDims d = wkv_dims(time_decay, time_first, k, v, state0, what);
  for (const Tensor* t : TensorPtrs{&y, &dy, &dk, &dv, &dtime_decay, &dtime_first}) {
    expect_cuda_dtype(*t, k.dtype(), what);
  }
  if (d.b * d.c == 0) return;
  if (d.t == 0) {
    fill(dtime_decay, 0.f);
    fill(dtime_first, 0.f);
    return;
  }
  Tensor log_den = Tensor::empty(k.shape(), DType::f32, k.device());
  Tensor partial = Tensor::empty({2, d.b, d.c}, DType::f32, k.device());
  float* pw = partial.data<float>();
  float* pu = pw + d.b * d.c;
  EL_DISPATCH_FLOAT(k.dtype(), T, {
    wkv_backward_kernel<T><<<wkv_grid(d), kWkvThreads, 0, ctx().stream>>>(
        time_decay.data<T>(), time_first.data<T>(), k.data<T>(), v.data<T>(), y.data<T>(),
        dy.data<T>(), state0.defined() ? state0.data<float>() : nullptr, log_den.data<float>(),
        dk.data<T>(), dv.data<T>(), pw, pu, d.b, d.t, d.c);
  });
  EL_CUDA_CHECK_LAUNCH("wkv_backward_kernel");
  launch_column_sum(pw, d.b, d.c, dtime_decay);
  launch_column_sum(pu, d.b, d.c, dtime_first);
}

}  // namespace el::cuda
