// cuda_mamba.cu — the CUDA backend's Mamba-1 kernels other than the scan
// (cuda_mamba_scan.cu); contracts in ops/backend.h "Mamba-1": the causal
// depthwise conv with SiLU (forward, backward), the conv state update of
// generation, and the column copy of ops::split_columns.
//
// Width 4 (every Mamba checkpoint's d_conv) runs register-window kernels:
// one thread per channel walks 32 (forward) or 64 (backward) steps of one
// sequence with the last K - 1 inputs in registers, so each element is read
// once; the backward recomputes the pre-activation, keeps the next K - 1
// dpre = dout silu'(pre) values in registers for dx, and adds its chunk's
// dw / dbias with one f32 atomic each (H100, B 1 T 8192 I 4096 bf16:
// forward 0.273 ms and backward 0.686 ms before, with the kernels below).
// Other widths run the general kernels: a 2-D grid, x over 128 channels, y
// striding over the rows (b, t); forward K taps per output; backward one
// pass writing dpre into an f32 scratch [B, T, I], dx gathering K of them,
// dw and dbias per-block sums over 256 rows in shared memory, then one f32
// atomic per (block, channel, tap). Generation's state update is one thread
// per (b, d) walking the K - 1 entries upwards, so the in-place shift reads
// an entry before it is overwritten.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_mamba.cuh"

namespace el::cuda {
namespace {

constexpr int kConvThreads = 128;  // channels per block
constexpr int kConvRows = 256;     // rows per block of the dw kernel
constexpr int kMaxGridY = 65535;

dim3 row_grid(int64_t cols, int64_t rows, int threads) {
  return dim3(static_cast<unsigned>((cols + threads - 1) / threads),
              static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), kMaxGridY)));
}

template <class T>
__global__ void conv_fwd_kernel(const T* __restrict__ x, const void* w, DType w_dt,
                                const void* bias, DType b_dt, const float* __restrict__ state,
                                T* __restrict__ out, unsigned rows, unsigned T_len, int I, int K) {
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  if (d >= I) return;
  const float b0 = bias ? ld(bias, b_dt, d) : 0.f;
  for (unsigned r = blockIdx.y; r < rows; r += gridDim.y) {
    const unsigned bb = r / T_len, t = r - bb * T_len;
    float acc = b0;
    for (int k = 0; k < K; ++k) {
      const int tau = static_cast<int>(t) - K + 1 + k;
      float v = 0.f;
      if (tau >= 0) {
        v = to_f(x[(static_cast<long long>(r) - t + tau) * I + d]);
      } else if (state) {
        v = state[(static_cast<long long>(bb) * (K - 1) + K - 1 + tau) * I + d];
      }
      acc += ld(w, w_dt, static_cast<long long>(d) * K + k) * v;
    }
    out[static_cast<long long>(r) * I + d] = from_f<T>(mamba::silu(acc));
  }
}

// state[b, j] = input at time last[b] - (K - 2) + j (older ones from the old
// state), j ascending: the entry read, j + last[b] + 1, is above the one written.
template <class T>
__global__ void conv_state_kernel(const T* __restrict__ x, const int32_t* __restrict__ last,
                                  float* state, int B, int T_len, int I, int K) {
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<long long>(B) * I) return;
  const int b = static_cast<int>(idx / I), d = static_cast<int>(idx % I);
  const int l = last ? last[b] : T_len - 1;
  for (int j = 0; j < K - 1; ++j) {
    const int tau = l - (K - 2) + j;
    const float v = tau >= 0 ? to_f(x[(static_cast<long long>(b) * T_len + tau) * I + d])
                             : state[(static_cast<long long>(b) * (K - 1) + K - 1 + tau) * I + d];
    state[(static_cast<long long>(b) * (K - 1) + j) * I + d] = v;
  }
}

// dpre[r, d] = dout[r, d] silu'(pre[r, d]), the pre-activation recomputed.
template <class T>
__global__ void conv_dpre_kernel(const T* __restrict__ dout, const T* __restrict__ x,
                                 const void* w, DType w_dt, const void* bias, DType b_dt,
                                 float* __restrict__ dpre, unsigned rows, unsigned T_len, int I,
                                 int K) {
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  if (d >= I) return;
  const float b0 = bias ? ld(bias, b_dt, d) : 0.f;
  for (unsigned r = blockIdx.y; r < rows; r += gridDim.y) {
    const unsigned t = r % T_len;
    float pre = b0;
    for (int k = 0; k < K; ++k) {
      const int tau = static_cast<int>(t) - K + 1 + k;
      if (tau >= 0) {
        pre += ld(w, w_dt, static_cast<long long>(d) * K + k) *
               to_f(x[(static_cast<long long>(r) - t + tau) * I + d]);
      }
    }
    const long long e = static_cast<long long>(r) * I + d;
    dpre[e] = to_f(dout[e]) * mamba::silu_grad(pre);
  }
}

// dx[r, d] = sum_k w[d, k] dpre[r + K - 1 - k, d] over the outputs in the row's sequence.
template <class T>
__global__ void conv_dx_kernel(const float* __restrict__ dpre, const void* w, DType w_dt,
                               T* __restrict__ dx, unsigned rows, unsigned T_len, int I, int K) {
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  if (d >= I) return;
  for (unsigned r = blockIdx.y; r < rows; r += gridDim.y) {
    const unsigned tau = r % T_len;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) {
      const unsigned t = tau + K - 1 - k;  // the output whose tap k reads x[tau]
      if (t >= T_len) continue;
      acc += ld(w, w_dt, static_cast<long long>(d) * K + k) *
             dpre[(static_cast<long long>(r) + K - 1 - k) * I + d];
    }
    dx[static_cast<long long>(r) * I + d] = from_f<T>(acc);
  }
}

// dw[d, k] and dbias[d] over rows [blockIdx.y kConvRows, +kConvRows).
template <class T>
__global__ void conv_dw_kernel(const float* __restrict__ dpre, const T* __restrict__ x,
                               float* __restrict__ dw, float* __restrict__ dbias, unsigned rows,
                               unsigned T_len, int I, int K) {
  extern __shared__ float s_acc[];  // [K + 1][kConvThreads]
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  for (int k = 0; k <= K; ++k) s_acc[k * kConvThreads + threadIdx.x] = 0.f;
  if (d >= I) return;
  const unsigned r0 = blockIdx.y * kConvRows;
  const unsigned r1 = r0 + kConvRows < rows ? r0 + kConvRows : rows;
  for (unsigned r = r0; r < r1; ++r) {
    const unsigned t = r % T_len;
    const float g = dpre[static_cast<long long>(r) * I + d];
    for (int k = 0; k < K; ++k) {
      const int tau = static_cast<int>(t) - K + 1 + k;
      if (tau >= 0) {
        s_acc[k * kConvThreads + threadIdx.x] +=
            g * to_f(x[(static_cast<long long>(r) - t + tau) * I + d]);
      }
    }
    s_acc[K * kConvThreads + threadIdx.x] += g;
  }
  for (int k = 0; k < K; ++k) {
    atomicAdd(&dw[static_cast<long long>(d) * K + k], s_acc[k * kConvThreads + threadIdx.x]);
  }
  if (dbias) atomicAdd(&dbias[d], s_acc[K * kConvThreads + threadIdx.x]);
}

// ---- Register-window kernels for the common width (mamba_d_conv 4) ----------
// One thread per channel walks a chunk of kChunkRows steps of one sequence,
// keeping the last K - 1 inputs (and, backward, the next K - 1 dpre values)
// in registers: each x / dout element is read once plus a K - 1 halo per
// chunk, instead of K times, and the backward needs no f32 dpre scratch.
// Chunks never cross a sequence, so only a chunk's first steps look at the
// state (forward) or at zeros.
constexpr int kFwdChunk = 32;  // steps per thread, forward
constexpr int kBwdChunk = 64;  // steps per thread, backward (halves the dw/dbias atomics)

// The channel's K taps, in registers.
template <int K>
__device__ __forceinline__ void load_taps(const void* w, DType w_dt, int d, float (&wk)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) wk[k] = ld(w, w_dt, static_cast<long long>(d) * K + k);
}

// Chunk c of `steps` steps: its sequence and step range [t0, t1).
struct StepRange {
  long long seq;
  int t0, t1;
};
__device__ __forceinline__ StepRange chunk_steps(long long c, int per_seq, int steps, int T_len) {
  StepRange r;
  r.seq = c / per_seq;
  r.t0 = static_cast<int>(c - r.seq * per_seq) * steps;
  r.t1 = min(T_len, r.t0 + steps);
  return r;
}

template <class T, int K>
__global__ void conv_fwd_window_kernel(const T* __restrict__ x, const void* w, DType w_dt,
                                       const void* bias, DType b_dt,
                                       const float* __restrict__ state, T* __restrict__ out,
                                       long long chunks, int chunks_per_seq, int T_len, int I) {
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  if (d >= I) return;
  float wk[K];
  load_taps<K>(w, w_dt, d, wk);
  const float b0 = bias ? ld(bias, b_dt, d) : 0.f;
  for (long long c = blockIdx.y; c < chunks; c += gridDim.y) {
    const auto [bb, t0, t1] = chunk_steps(c, chunks_per_seq, kFwdChunk, T_len);
    const T* xs = x + bb * T_len * I + d;  // this channel of sequence bb
    float h[K];  // h[k] = the input at t - K + 1 + k (h[K - 1] filled per step)
#pragma unroll
    for (int k = 0; k < K - 1; ++k) {
      const int tau = t0 - K + 1 + k;
      h[k] = tau >= 0 ? to_f(xs[static_cast<long long>(tau) * I])
             : state  ? state[(bb * (K - 1) + K - 1 + tau) * I + d]
                      : 0.f;
    }
    T* os = out + bb * T_len * I + d;
    for (int t = t0; t < t1; ++t) {
      h[K - 1] = to_f(xs[static_cast<long long>(t) * I]);
      float acc = b0;
#pragma unroll
      for (int k = 0; k < K; ++k) acc = fmaf(wk[k], h[k], acc);
      os[static_cast<long long>(t) * I] = from_f<T>(mamba::silu(acc));
#pragma unroll
      for (int k = 0; k < K - 1; ++k) h[k] = h[k + 1];
    }
  }
}

// Per chunk [t0, t1): dpre(t) = dout(t) silu'(pre(t)) for t in [t0, t1 + K - 1)
// (0 past the sequence), dw / dbias summed over the chunk's own t, and
// dx(tau) = sum_k w[k] dpre(tau + K - 1 - k) emitted K - 1 steps behind.
// Inputs before the sequence count as 0 (the training path has no state).
template <class T, int K>
__global__ void conv_bwd_window_kernel(const T* __restrict__ dout, const T* __restrict__ x,
                                       const void* w, DType w_dt, const void* bias, DType b_dt,
                                       T* __restrict__ dx, float* __restrict__ dw,
                                       float* __restrict__ dbias, long long chunks,
                                       int chunks_per_seq, int T_len, int I) {
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  if (d >= I) return;
  float wk[K];
  load_taps<K>(w, w_dt, d, wk);
  const float b0 = bias ? ld(bias, b_dt, d) : 0.f;
  for (long long c = blockIdx.y; c < chunks; c += gridDim.y) {
    const auto [bb, t0, t1] = chunk_steps(c, chunks_per_seq, kBwdChunk, T_len);
    const long long base = bb * T_len * I + d;
    float h[K];   // inputs t - K + 1 .. t
    float g[K];   // dpre at t - K + 1 .. t
    float gw[K], gb = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      gw[k] = 0.f;
      g[k] = 0.f;
    }
#pragma unroll
    for (int k = 0; k < K - 1; ++k) {
      const int tau = t0 - K + 1 + k;
      h[k] = tau >= 0 ? to_f(x[base + static_cast<long long>(tau) * I]) : 0.f;
    }
    for (int t = t0; t < t1 + K - 1; ++t) {
      float dp = 0.f;
      if (t < T_len) {
        h[K - 1] = to_f(x[base + static_cast<long long>(t) * I]);
        float pre = b0;
#pragma unroll
        for (int k = 0; k < K; ++k) pre = fmaf(wk[k], h[k], pre);
        dp = to_f(dout[base + static_cast<long long>(t) * I]) * mamba::silu_grad(pre);
        if (t < t1) {
#pragma unroll
          for (int k = 0; k < K; ++k) gw[k] = fmaf(dp, h[k], gw[k]);
          gb += dp;
        }
      }
      g[K - 1] = dp;
      const int tau = t - (K - 1);  // its dx is complete now
      if (tau >= t0) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < K; ++k) acc = fmaf(wk[k], g[K - 1 - k], acc);
        dx[base + static_cast<long long>(tau) * I] = from_f<T>(acc);
      }
#pragma unroll
      for (int k = 0; k < K - 1; ++k) {
        h[k] = h[k + 1];
        g[k] = g[k + 1];
      }
    }
#pragma unroll
    for (int k = 0; k < K; ++k) atomicAdd(&dw[static_cast<long long>(d) * K + k], gw[k]);
    if (dbias) atomicAdd(&dbias[d], gb);
  }
}

// Chunks of `steps` per sequence and the 2-D grid over (channels, chunks).
struct ChunkGrid {
  long long chunks;
  int per_seq;
  dim3 grid;
};
ChunkGrid chunk_grid(int64_t B, int64_t T, int64_t I, int steps) {
  ChunkGrid c;
  c.per_seq = static_cast<int>((T + steps - 1) / steps);
  c.chunks = B * c.per_seq;
  c.grid = dim3(static_cast<unsigned>((I + kConvThreads - 1) / kConvThreads),
                static_cast<unsigned>(std::min<long long>(std::max<long long>(c.chunks, 1), kMaxGridY)));
  return c;
}

template <class E>
__global__ void copy_columns_kernel(const E* __restrict__ src, int64_t cs, int64_t sc,
                                    E* __restrict__ dst, int64_t cd, int64_t dc, long long rows,
                                    int64_t cols) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
    dst[r * cd + dc + j] = src[r * cs + sc + j];
  }
}

void zero(Tensor& t) {
  if (t.defined() && t.numel() > 0) {
    EL_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), ctx().stream));
  }
}

// rows and T of x[B, T, I] as the kernels' 32-bit row counters.
void check_rows(const Tensor& x, const char* what) {
  EL_CUDA_ENSURE(x.dim(0) * x.dim(1) < (int64_t{1} << 31) && x.dim(2) < (int64_t{1} << 31),
                 "{}: x {} has too many rows for the conv kernels", what, shape_str(x.shape()));
}

}  // namespace

void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& last,
                          Tensor& state, Tensor& out) {
  const char* what = "cuda mamba_conv1d_forward";
  expect_cuda_float(x, what);
  expect_cuda_dtype(out, x.dtype(), what);
  expect_cuda_float(w, what);
  EL_CUDA_ENSURE(x.ndim() == 3 && out.shape() == x.shape() && w.numel() % x.dim(2) == 0,
                 "{}: x {} w {} out {}", what, shape_str(x.shape()), shape_str(w.shape()),
                 shape_str(out.shape()));
  check_rows(x, what);
  const int64_t B = x.dim(0), T = x.dim(1), I = x.dim(2), K = w.numel() / std::max<int64_t>(I, 1);
  if (bias.defined()) expect_cuda_float(bias, what);
  if (state.defined()) {
    expect_cuda_dtype(state, DType::f32, what);
    EL_CUDA_ENSURE(state.numel() == B * (K - 1) * I, "{}: state {} for B {} K {} I {}", what,
                   shape_str(state.shape()), B, K, I);
  }
  if (last.defined()) expect_positions(last, B, what);
  if (x.numel() == 0) return;
  const cudaStream_t stream = ctx().stream;
  const unsigned rows = static_cast<unsigned>(B * T);
  const ChunkGrid cg = chunk_grid(B, T, I, kFwdChunk);
  EL_DISPATCH_FLOAT(x.dtype(), T_, ({
    if (K == 4) {
      conv_fwd_window_kernel<T_, 4><<<cg.grid, kConvThreads, 0, stream>>>(
          x.data<T_>(), w.raw(), w.dtype(), bias.defined() ? bias.raw() : nullptr,
          bias.defined() ? bias.dtype() : DType::f32,
          state.defined() ? state.data<float>() : nullptr, out.data<T_>(), cg.chunks, cg.per_seq,
          static_cast<int>(T), static_cast<int>(I));
    } else {
    conv_fwd_kernel<T_><<<row_grid(I, rows, kConvThreads), kConvThreads, 0, stream>>>(
        x.data<T_>(), w.raw(), w.dtype(), bias.defined() ? bias.raw() : nullptr,
        bias.defined() ? bias.dtype() : DType::f32, state.defined() ? state.data<float>() : nullptr,
        out.data<T_>(), rows, static_cast<unsigned>(T), static_cast<int>(I), static_cast<int>(K));
    }
    mamba::check_launch(what);
    if (state.defined() && K > 1) {  // after the outputs read the old state (stream order)
      const long long n = B * I;
      conv_state_kernel<T_><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
          x.data<T_>(), last.defined() ? last.data<int32_t>() : nullptr, state.data<float>(),
          static_cast<int>(B), static_cast<int>(T), static_cast<int>(I), static_cast<int>(K));
      mamba::check_launch(what);
    }
  }));
}

void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                           const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias) {
  const char* what = "cuda mamba_conv1d_backward";
  expect_cuda_float(x, what);
  for (const Tensor* t : TensorPtrs{&dout, &dx}) expect_cuda_dtype(*t, x.dtype(), what);
  expect_cuda_dtype(dw, DType::f32, what);
  const int64_t B = x.dim(0), T = x.dim(1), I = x.dim(2), K = w.numel() / std::max<int64_t>(I, 1);
  EL_CUDA_ENSURE(dout.shape() == x.shape() && dx.shape() == x.shape() && dw.numel() == I * K &&
                     K <= 64 && (!bias.defined() || (dbias.defined() && dbias.numel() == I)),
                 "{}: dout {} x {} dx {} dw {}", what, shape_str(dout.shape()),
                 shape_str(x.shape()), shape_str(dx.shape()), shape_str(dw.shape()));
  check_rows(x, what);
  if (bias.defined()) expect_cuda_dtype(dbias, DType::f32, what);
  zero(dw);
  if (bias.defined()) zero(dbias);
  if (x.numel() == 0) return;
  const cudaStream_t stream = ctx().stream;
  const void* bp = bias.defined() ? bias.raw() : nullptr;
  const DType bdt = bias.defined() ? bias.dtype() : DType::f32;
  const unsigned rows = static_cast<unsigned>(B * T), tl = static_cast<unsigned>(T);
  const int i32 = static_cast<int>(I), k32 = static_cast<int>(K);
  if (K == 4) {
    const ChunkGrid cg = chunk_grid(B, T, I, kBwdChunk);
    EL_DISPATCH_FLOAT(x.dtype(), T_, ({
      conv_bwd_window_kernel<T_, 4><<<cg.grid, kConvThreads, 0, stream>>>(
          dout.data<T_>(), x.data<T_>(), w.raw(), w.dtype(), bp, bdt, dx.data<T_>(),
          dw.data<float>(), bias.defined() ? dbias.data<float>() : nullptr, cg.chunks, cg.per_seq,
          static_cast<int>(T), i32);
      mamba::check_launch(what);
    }));
    return;
  }
  Tensor dpre = Tensor::empty(x.shape(), DType::f32, x.device());
  const dim3 grid = row_grid(I, rows, kConvThreads);
  const dim3 dw_grid(grid.x, static_cast<unsigned>((rows + kConvRows - 1) / kConvRows));
  EL_DISPATCH_FLOAT(x.dtype(), T_, ({
    conv_dpre_kernel<T_><<<grid, kConvThreads, 0, stream>>>(dout.data<T_>(), x.data<T_>(),
                                                            w.raw(), w.dtype(), bp, bdt,
                                                            dpre.data<float>(), rows, tl, i32,
                                                            k32);
    mamba::check_launch(what);
    conv_dx_kernel<T_><<<grid, kConvThreads, 0, stream>>>(dpre.data<float>(), w.raw(), w.dtype(),
                                                          dx.data<T_>(), rows, tl, i32, k32);
    mamba::check_launch(what);
    conv_dw_kernel<T_><<<dw_grid, kConvThreads, (K + 1) * kConvThreads * sizeof(float), stream>>>(
        dpre.data<float>(), x.data<T_>(), dw.data<float>(),
        bias.defined() ? dbias.data<float>() : nullptr, rows, tl, i32, k32);
    mamba::check_launch(what);
  }));
}

void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t cols) {
  const char* what = "cuda copy_columns";
  expect_cuda(src, what);
  expect_cuda_dtype(dst, src.dtype(), what);
  const int64_t cs = src.dim(-1), cd = dst.dim(-1);
  const long long rows = cs > 0 ? src.numel() / cs : 0;
  EL_CUDA_ENSURE(src_col >= 0 && dst_col >= 0 && cols >= 0 && src_col + cols <= cs &&
                     dst_col + cols <= cd && (cd > 0 ? dst.numel() / cd : 0) == rows,
                 "{}: columns [{}, +{}) of {} into [{}, +{}) of {}", what, src_col, cols,
                 shape_str(src.shape()), dst_col, cols, shape_str(dst.shape()));
  if (rows == 0 || cols == 0) return;
  const dim3 grid = row_grid(cols, rows, 256);
  const cudaStream_t stream = ctx().stream;
  switch (dtype_size(src.dtype())) {
    case 2:
      copy_columns_kernel<uint16_t><<<grid, 256, 0, stream>>>(
          src.data<uint16_t>(), cs, src_col, dst.data<uint16_t>(), cd, dst_col, rows, cols);
      break;
    case 4:
      copy_columns_kernel<uint32_t><<<grid, 256, 0, stream>>>(
          src.data<uint32_t>(), cs, src_col, dst.data<uint32_t>(), cd, dst_col, rows, cols);
      break;
    default:
      EL_CUDA_ENSURE(false, "{}: dtype {} is not 2 or 4 bytes", what, dtype_name(src.dtype()));
  }
  mamba::check_launch(what);
}

}  // namespace el::cuda
