// cuda_mamba.cu — the CUDA backend's Mamba-1 kernels (contracts in
// ops/backend.h "Mamba-1"): the fused selective scan forward and backward,
// the causal depthwise conv with SiLU, the conv state update of generation,
// and the column copy of ops::split_columns.
//
// Selective scan. A block owns kChannels = 16 channels of one batch row; a
// half warp (kLanes = 16 lanes) owns one channel and lane l holds the states
// n = l, l + 16, ... (NPT = ceil(N / 16) each) in registers. Time runs in
// groups of kGroup = 16 steps: the block stages the group's dt (bias +
// softplus applied once per element), u, z, B and C in shared memory with
// coalesced loads, every lane advances its states 16 steps (exp2 of dt A
// pre-scaled by log2 e: one MUFU op per state and step, the kernel's bound),
// keeping its partial sum of C_t . h_t per step, and one 15-shuffle
// reduce-scatter over the half warp (reduce_scatter16) leaves step t0 + l's
// total in lane l, which applies D and the gate and stages y for a coalesced
// store. No [B, T, I, N] tensor exists: the states live in registers; the
// forward writes the state at every kChunk = 128 steps (f32 [B, I, T/128,
// N], Backend::mamba_scan_chunk) when the backward will follow.
// Backward, per block and chunk, last chunk first: restart from the chunk's
// checkpoint and run forward to each group's start (kept in a small global
// workspace [B, I, 8, N]); then per group, last first: recompute its 16
// states into registers, and walk back through them with dh, accumulating
// dA in registers, du / ddelta through two reduce-scatters, and dB / dC (sums
// over channels) in shared memory, flushed by f32 atomics into the f32
// outputs. Cost: the forward's exps three times (chunk pass, group pass,
// reverse) and ~T N I (B I / 16 blocks) atomics of dB and dC per call.
//
// Conv: one thread per output element (K taps, reads stay in L1/L2); the
// backward recomputes the pre-activation (dx: K^2 taps per element; dw and
// dbias: a block per 128 channels and 256 rows accumulating in shared memory,
// then f32 atomics). Generation's state update is one thread per (b, d)
// walking the K - 1 entries upwards, so the in-place shift reads an entry
// before it is overwritten.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kLanes = 16;                      // lanes per channel (a half warp)
constexpr int kChannels = 16;                   // channels per block
constexpr int kThreads = kLanes * kChannels;    // 256
constexpr int kGroup = 16;                      // steps per reduce-scatter
constexpr int kChunkGroups = 8;
constexpr int kChunk = kGroup * kChunkGroups;   // checkpoint interval (128 steps)
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kConvRows = 256;                  // rows per block of the conv's dw kernel
constexpr int kConvThreads = 128;

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float silu_f(float x) { return x * sigmoid_f(x); }
__device__ __forceinline__ float silu_grad_f(float x) {
  const float s = sigmoid_f(x);
  return s * (1.f + x * (1.f - s));
}

// v[i] summed over the 16 lanes of this half warp lands in lane i: a butterfly
// that halves the values each lane keeps at every level (8 + 4 + 2 + 1
// shuffles), instead of 16 separate 4-shuffle reductions.
__device__ __forceinline__ float reduce_scatter16(float (&v)[kGroup], int l) {
#pragma unroll
  for (int w = 8; w >= 1; w >>= 1) {
    const bool hi = (l & w) != 0;
#pragma unroll
    for (int i = 0; i < w; ++i) {
      const float send = hi ? v[i] : v[i + w];
      const float keep = hi ? v[i + w] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, w);
    }
  }
  return v[0];
}

// Sum over the 16 lanes of a half warp (every lane gets it).
__device__ __forceinline__ float half_warp_sum(float x) {
#pragma unroll
  for (int w = 8; w >= 1; w >>= 1) x += __shfl_xor_sync(0xffffffffu, x, w);
  return x;
}

struct ScanParams {
  const void* A_log;
  DType a_dt;
  const void* D;
  DType d_dt;
  const void* bias;
  DType b_dt;
  int T, I, N;
};

// The group's tiles: dt (softplus(delta + bias)), the raw argument, u, z and
// an extra per-channel tensor (dy in the backward; null: zeros) as
// [kGroup][kChannels], B and C as [kGroup][N]. One element per thread for
// the channel tiles (kGroup * kChannels == kThreads). Callers sync around it.
template <class T>
__device__ void load_group(const ScanParams& p, int b, int d0, int t0, const T* u, const T* delta,
                           const T* z, const T* extra, const T* Bm, const T* Cm, float* s_dt,
                           float* s_raw, float* s_u, float* s_z, float* s_x, float* s_B,
                           float* s_C) {
  const int tid = threadIdx.x, i = tid / kChannels, cc = tid % kChannels;
  const int t = t0 + i, dd = d0 + cc;
  float raw = 0.f, dtv = 0.f, uv = 0.f, zv = 0.f, xv = 0.f;
  if (t < p.T && dd < p.I) {
    const long long e = (static_cast<long long>(b) * p.T + t) * p.I + dd;
    raw = to_f(delta[e]) + ld(p.bias, p.b_dt, dd);
    dtv = softplus_f(raw);
    uv = to_f(u[e]);
    if (z) zv = to_f(z[e]);
    if (extra) xv = to_f(extra[e]);
  }
  s_dt[tid] = dtv;
  if (s_raw) s_raw[tid] = raw;
  s_u[tid] = uv;
  if (s_z) s_z[tid] = zv;
  if (s_x) s_x[tid] = xv;
  for (int k = tid; k < kGroup * p.N; k += kThreads) {
    const int tt = t0 + k / p.N;
    const long long e = (static_cast<long long>(b) * p.T + tt) * p.N + k % p.N;
    s_B[k] = tt < p.T ? to_f(Bm[e]) : 0.f;
    if (s_C) s_C[k] = tt < p.T ? to_f(Cm[e]) : 0.f;
  }
}

// Stores a [kGroup][kChannels] tile into out[b, t0 + i, d0 + c].
template <class T>
__device__ void store_group(const ScanParams& p, int b, int d0, int t0, const float* s, T* out) {
  const int tid = threadIdx.x, i = tid / kChannels, cc = tid % kChannels;
  const int t = t0 + i, dd = d0 + cc;
  if (t < p.T && dd < p.I) {
    out[(static_cast<long long>(b) * p.T + t) * p.I + dd] = from_f<T>(s[tid]);
  }
}

// The states' setup: A2 = A log2 e (A = -exp(A_log)), A, n, validity.
template <int NPT>
struct Lane {
  float A[NPT], A2[NPT];
  bool valid[NPT];
  __device__ Lane(const ScanParams& p, int d, int l, bool live) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = l + kLanes * j;
      valid[j] = live && n < p.N;
      A[j] = valid[j] ? -expf(ld(p.A_log, p.a_dt, static_cast<long long>(d) * p.N + n)) : 0.f;
      A2[j] = A[j] * kLog2e;
    }
  }
};

template <class T, int NPT>
__global__ void __launch_bounds__(kThreads)
    scan_fwd_kernel(ScanParams p, const T* __restrict__ u, const T* __restrict__ delta,
                    const T* __restrict__ Bm, const T* __restrict__ Cm, const T* __restrict__ z,
                    const int32_t* __restrict__ last, float* state, T* __restrict__ y,
                    float* __restrict__ ckpt) {
  extern __shared__ float smem[];
  float* s_dt = smem;
  float* s_u = s_dt + kThreads;
  float* s_z = s_u + kThreads;
  float* s_y = s_z + kThreads;
  float* s_B = s_y + kThreads;
  float* s_C = s_B + kGroup * p.N;
  const int tid = threadIdx.x, c = tid / kLanes, l = tid % kLanes;
  const int b = blockIdx.y, d0 = blockIdx.x * kChannels, d = d0 + c;
  const bool live = d < p.I;
  const Lane<NPT> ln(p, d, l, live);
  const long long row = static_cast<long long>(b) * p.I + d;  // (b, d)
  float h[NPT], hsave[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    h[j] = ln.valid[j] && state ? state[row * p.N + l + kLanes * j] : 0.f;
    hsave[j] = h[j];
  }
  const float Dd = live ? ld(p.D, p.d_dt, d) : 0.f;
  const int stop = last ? last[b] : p.T - 1;
  const int nchunks = (p.T + kChunk - 1) / kChunk;
  for (int t0 = 0; t0 < p.T; t0 += kGroup) {
    if (ckpt && t0 % kChunk == 0) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        if (ln.valid[j]) ckpt[(row * nchunks + t0 / kChunk) * p.N + l + kLanes * j] = h[j];
      }
    }
    __syncthreads();  // the previous group's tiles are no longer read
    load_group<T>(p, b, d0, t0, u, delta, z, nullptr, Bm, Cm, s_dt, nullptr, s_u, s_z, nullptr,
                  s_B, s_C);
    __syncthreads();
    float part[kGroup];
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      const float dtv = s_dt[i * kChannels + c], uv = s_u[i * kChannels + c];
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = l + kLanes * j;
        if (n < p.N) {
          const float a = exp2f(dtv * ln.A2[j]);
          h[j] = a * h[j] + (dtv * s_B[i * p.N + n]) * uv;
          acc += s_C[i * p.N + n] * h[j];
        }
      }
      part[i] = acc;
      if (t0 + i == stop) {
#pragma unroll
        for (int j = 0; j < NPT; ++j) hsave[j] = h[j];
      }
    }
    const float s = reduce_scatter16(part, l);  // C . h at step t0 + l
    const int k = l * kChannels + c;
    s_y[k] = (s + Dd * s_u[k]) * silu_f(s_z[k]);
    __syncthreads();
    store_group<T>(p, b, d0, t0, s_y, y);
  }
  if (state) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      if (ln.valid[j]) state[row * p.N + l + kLanes * j] = hsave[j];
    }
  }
}

template <class T, int NPT>
__global__ void __launch_bounds__(kThreads)
    scan_bwd_kernel(ScanParams p, const T* __restrict__ dy, const T* __restrict__ u,
                    const T* __restrict__ delta, const T* __restrict__ Bm,
                    const T* __restrict__ Cm, const T* __restrict__ z,
                    const float* __restrict__ ckpt, float* __restrict__ ws, T* __restrict__ du,
                    T* __restrict__ ddelta, T* __restrict__ dz, float* __restrict__ dA_log,
                    float* __restrict__ dB, float* __restrict__ dC, float* __restrict__ dD,
                    float* __restrict__ dbias) {
  extern __shared__ float smem[];
  float* s_dt = smem;
  float* s_raw = s_dt + kThreads;
  float* s_u = s_raw + kThreads;
  float* s_z = s_u + kThreads;
  float* s_g = s_z + kThreads;    // dy, then gy = dy silu(z)
  float* s_du = s_g + kThreads;
  float* s_ddt = s_du + kThreads;
  float* s_dz = s_ddt + kThreads;
  float* s_B = s_dz + kThreads;
  float* s_C = s_B + kGroup * p.N;
  float* s_dB = s_C + kGroup * p.N;
  float* s_dC = s_dB + kGroup * p.N;
  const int tid = threadIdx.x, c = tid / kLanes, l = tid % kLanes;
  const int b = blockIdx.y, d0 = blockIdx.x * kChannels, d = d0 + c;
  const bool live = d < p.I;
  const Lane<NPT> ln(p, d, l, live);
  const long long row = static_cast<long long>(b) * p.I + d;
  const float Dd = live ? ld(p.D, p.d_dt, d) : 0.f;
  const int nchunks = (p.T + kChunk - 1) / kChunk;
  float dh[NPT], dA[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) dh[j] = dA[j] = 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;
  for (int chunk = nchunks - 1; chunk >= 0; --chunk) {
    const int c0 = chunk * kChunk;
    const int ngroups = ((p.T - c0 < kChunk ? p.T - c0 : kChunk) + kGroup - 1) / kGroup;
    // Pass 1: the state at each group's start, from the chunk's checkpoint.
    float h[NPT];
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      h[j] = ln.valid[j] ? ckpt[(row * nchunks + chunk) * p.N + l + kLanes * j] : 0.f;
    }
    for (int g = 0; g < ngroups; ++g) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        if (ln.valid[j]) ws[(row * kChunkGroups + g) * p.N + l + kLanes * j] = h[j];
      }
      if (g + 1 == ngroups) break;
      __syncthreads();
      load_group<T>(p, b, d0, c0 + g * kGroup, u, delta, nullptr, nullptr, Bm, nullptr, s_dt,
                    nullptr, s_u, nullptr, nullptr, s_B, nullptr);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kGroup; ++i) {
        const float dtv = s_dt[i * kChannels + c], uv = s_u[i * kChannels + c];
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          const int n = l + kLanes * j;
          if (n < p.N) h[j] = exp2f(dtv * ln.A2[j]) * h[j] + (dtv * s_B[i * p.N + n]) * uv;
        }
      }
    }
    // Pass 2: the groups, last first.
    for (int g = ngroups - 1; g >= 0; --g) {
      const int t0 = c0 + g * kGroup;
      __syncthreads();  // the previous group's tiles and flushes are done
      load_group<T>(p, b, d0, t0, u, delta, z, dy, Bm, Cm, s_dt, s_raw, s_u, s_z, s_g, s_B, s_C);
      for (int k = tid; k < kGroup * p.N; k += kThreads) s_dB[k] = s_dC[k] = 0.f;
      __syncthreads();
      float h0[NPT], hs[kGroup][NPT], part[kGroup];
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        h0[j] = ln.valid[j] ? ws[(row * kChunkGroups + g) * p.N + l + kLanes * j] : 0.f;
      }
      // Recompute the group's states (hs[i] = h after step i) and C . h.
#pragma unroll
      for (int i = 0; i < kGroup; ++i) {
        const float dtv = s_dt[i * kChannels + c], uv = s_u[i * kChannels + c];
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          const int n = l + kLanes * j;
          const float prev = i > 0 ? hs[i - 1][j] : h0[j];
          hs[i][j] = n < p.N ? exp2f(dtv * ln.A2[j]) * prev + (dtv * s_B[i * p.N + n]) * uv : 0.f;
          if (n < p.N) acc += s_C[i * p.N + n] * hs[i][j];
        }
        part[i] = acc;
      }
      {
        // Lane l's step t0 + l: dz, and gy = dy silu(z) for the walk back.
        const float s = reduce_scatter16(part, l);
        const int k = l * kChannels + c;
        const float zv = s_z[k], uv = s_u[k], gv = s_g[k];
        s_dz[k] = gv * (s + Dd * uv) * silu_grad_f(zv);
        const float gy = gv * silu_f(zv);
        dD_acc += gy * uv;
        __syncwarp();
        s_g[k] = gy;  // (this half warp's channel only: read below by the same lanes)
        __syncwarp();
      }
      float pdu[kGroup], pddt[kGroup];
#pragma unroll
      for (int i = kGroup - 1; i >= 0; --i) {
        const float dtv = s_dt[i * kChannels + c], uv = s_u[i * kChannels + c];
        const float gy = s_g[i * kChannels + c];
        float du_p = 0.f, ddt_p = 0.f;
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          const int n = l + kLanes * j;
          if (n < p.N) {
            const float Bn = s_B[i * p.N + n], Cn = s_C[i * p.N + n];
            const float prev = i > 0 ? hs[i - 1][j] : h0[j];
            const float a = exp2f(dtv * ln.A2[j]);
            const float dhn = dh[j] + gy * Cn;  // dL/dh_t
            atomicAdd(&s_dC[i * p.N + n], gy * hs[i][j]);
            atomicAdd(&s_dB[i * p.N + n], dhn * dtv * uv);
            du_p += dhn * dtv * Bn;
            ddt_p += dhn * (ln.A[j] * a * prev + Bn * uv);
            dA[j] += dhn * a * prev * dtv;
            dh[j] = dhn * a;
          }
        }
        pdu[i] = du_p;
        pddt[i] = ddt_p;
      }
      {
        const float dus = reduce_scatter16(pdu, l), ddts = reduce_scatter16(pddt, l);
        const int k = l * kChannels + c;
        const float raw = s_raw[k];
        const float dd = ddts * (raw > 20.f ? 1.f : sigmoid_f(raw));
        s_du[k] = dus + s_g[k] * Dd;
        s_ddt[k] = dd;
        dbias_acc += dd;
      }
      __syncthreads();
      store_group<T>(p, b, d0, t0, s_du, du);
      store_group<T>(p, b, d0, t0, s_ddt, ddelta);
      store_group<T>(p, b, d0, t0, s_dz, dz);
      for (int k = tid; k < kGroup * p.N; k += kThreads) {
        const int t = t0 + k / p.N;
        if (t >= p.T) continue;
        const long long e = (static_cast<long long>(b) * p.T + t) * p.N + k % p.N;
        atomicAdd(&dB[e], s_dB[k]);
        atomicAdd(&dC[e], s_dC[k]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < NPT; ++j) {  // A = -exp(A_log): dA_log = dA A
    if (ln.valid[j]) {
      atomicAdd(&dA_log[static_cast<long long>(d) * p.N + l + kLanes * j], dA[j] * ln.A[j]);
    }
  }
  dD_acc = half_warp_sum(dD_acc);
  dbias_acc = half_warp_sum(dbias_acc);
  if (live && l == 0) {
    atomicAdd(&dD[d], dD_acc);
    atomicAdd(&dbias[d], dbias_acc);
  }
}

// States per lane for N states: 1, 2, 4, 8 or 16 (N <= 256, the card's limit).
int states_per_lane(int64_t N) {
  int npt = 1;
  while (npt * kLanes < N) npt *= 2;
  return npt;
}

template <class F>
void with_npt(int npt, F&& f) {
  switch (npt) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: f(std::integral_constant<int, 16>{}); break;
  }
}

ScanParams scan_params(const Tensor& u, const Tensor& A_log, const Tensor& D,
                       const Tensor& bias, const char* what) {
  EL_CUDA_ENSURE(u.ndim() == 3 && A_log.ndim() == 2 && A_log.dim(0) == u.dim(2) &&
                     A_log.dim(1) >= 1 && A_log.dim(1) <= 256 && u.dim(1) < (int64_t{1} << 31) &&
                     u.dim(2) < (int64_t{1} << 31),
                 "{}: u {} and A_log {} (expected u[B, T, I], A_log[I, N], N <= 256)", what,
                 shape_str(u.shape()), shape_str(A_log.shape()));
  for (const Tensor* t : TensorPtrs{&A_log, &D, &bias}) expect_cuda_float(*t, what);
  return ScanParams{A_log.data<void>(), A_log.dtype(), D.data<void>(), D.dtype(),
                    bias.data<void>(), bias.dtype(),   static_cast<int>(u.dim(1)),
                    static_cast<int>(u.dim(2)),        static_cast<int>(A_log.dim(1))};
}

void check_launch(const char* what) {
  const cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) throw Exception(cuda_error(rc, what, __FILE__, __LINE__));
}

// ---- conv ------------------------------------------------------------------------------

template <class T>
__global__ void conv_fwd_kernel(const T* __restrict__ x, const void* w, DType w_dt,
                                const void* bias, DType b_dt, const float* __restrict__ state,
                                T* __restrict__ out, long long total, int T_len, int I, int K) {
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % I);
    const long long bt = e / I;
    const int t = static_cast<int>(bt % T_len);
    const long long b = bt / T_len;
    float acc = bias ? ld(bias, b_dt, d) : 0.f;
    for (int k = 0; k < K; ++k) {
      const int tau = t - K + 1 + k;
      float v = 0.f;
      if (tau >= 0) {
        v = to_f(x[(bt - t + tau) * I + d]);
      } else if (state) {
        v = state[(b * (K - 1) + K - 1 + tau) * I + d];
      }
      acc += ld(w, w_dt, static_cast<long long>(d) * K + k) * v;
    }
    out[e] = from_f<T>(silu_f(acc));
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

// silu'(pre) dout at (b, t, d), the pre-activation recomputed from x.
template <class T>
__device__ __forceinline__ float conv_dpre(const T* x, const T* dout, const void* w, DType w_dt,
                                           const void* bias, DType b_dt, long long bt, int t,
                                           int d, int I, int K) {
  float pre = bias ? ld(bias, b_dt, d) : 0.f;
  for (int k = 0; k < K; ++k) {
    const int tau = t - K + 1 + k;
    if (tau >= 0) {
      pre += ld(w, w_dt, static_cast<long long>(d) * K + k) * to_f(x[(bt - t + tau) * I + d]);
    }
  }
  return to_f(dout[bt * I + d]) * silu_grad_f(pre);
}

template <class T>
__global__ void conv_dx_kernel(const T* __restrict__ dout, const T* __restrict__ x, const void* w,
                               DType w_dt, const void* bias, DType b_dt, T* __restrict__ dx,
                               long long total, int T_len, int I, int K) {
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % I);
    const long long btau = e / I;
    const int tau = static_cast<int>(btau % T_len);
    float acc = 0.f;
    for (int k = 0; k < K; ++k) {
      const int t = tau + K - 1 - k;  // the output whose tap k reads x[tau]
      if (t >= T_len) continue;
      acc += ld(w, w_dt, static_cast<long long>(d) * K + k) *
             conv_dpre(x, dout, w, w_dt, bias, b_dt, btau - tau + t, t, d, I, K);
    }
    dx[e] = from_f<T>(acc);
  }
}

// dw[d, k] and dbias[d] over rows [blockIdx.y kConvRows, +kConvRows) of B T.
template <class T>
__global__ void conv_dw_kernel(const T* __restrict__ dout, const T* __restrict__ x, const void* w,
                               DType w_dt, const void* bias, DType b_dt, float* __restrict__ dw,
                               float* __restrict__ dbias, long long rows, int T_len, int I,
                               int K) {
  extern __shared__ float s_acc[];  // [K + 1][kConvThreads]
  const int d = blockIdx.x * kConvThreads + threadIdx.x;
  for (int k = 0; k <= K; ++k) s_acc[k * kConvThreads + threadIdx.x] = 0.f;
  if (d >= I) return;
  const long long r0 = static_cast<long long>(blockIdx.y) * kConvRows;
  const long long r1 = r0 + kConvRows < rows ? r0 + kConvRows : rows;
  for (long long r = r0; r < r1; ++r) {
    const int t = static_cast<int>(r % T_len);
    const float g = conv_dpre(x, dout, w, w_dt, bias, b_dt, r, t, d, I, K);
    for (int k = 0; k < K; ++k) {
      const int tau = t - K + 1 + k;
      if (tau >= 0) s_acc[k * kConvThreads + threadIdx.x] += g * to_f(x[(r - t + tau) * I + d]);
    }
    s_acc[K * kConvThreads + threadIdx.x] += g;
  }
  for (int k = 0; k < K; ++k) {
    atomicAdd(&dw[static_cast<long long>(d) * K + k], s_acc[k * kConvThreads + threadIdx.x]);
  }
  if (dbias) atomicAdd(&dbias[d], s_acc[K * kConvThreads + threadIdx.x]);
}

template <class E>
__global__ void copy_columns_kernel(const E* __restrict__ src, int64_t cs, int64_t sc,
                                    E* __restrict__ dst, int64_t cd, int64_t dc, long long rows,
                                    int64_t cols) {
  const long long total = rows * cols;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = e / cols, j = e % cols;
    dst[r * cd + dc + j] = src[r * cs + sc + j];
  }
}

void zero(Tensor& t) {
  if (t.defined() && t.numel() > 0) {
    EL_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), ctx().stream));
  }
}

}  // namespace

int64_t mamba_scan_chunk() { return kChunk; }

void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& last,
                          Tensor& state, Tensor& out) {
  const char* what = "cuda mamba_conv1d_forward";
  expect_cuda_float(x, what);
  expect_cuda_dtype(out, x.dtype(), what);
  expect_cuda_float(w, what);
  EL_CUDA_ENSURE(x.ndim() == 3 && out.shape() == x.shape() && w.numel() % x.dim(2) == 0,
                 "{}: x {} w {} out {}", what, shape_str(x.shape()), shape_str(w.shape()),
                 shape_str(out.shape()));
  const int64_t B = x.dim(0), T = x.dim(1), I = x.dim(2), K = w.numel() / std::max<int64_t>(I, 1);
  if (bias.defined()) expect_cuda_float(bias, what);
  if (state.defined()) {
    expect_cuda_dtype(state, DType::f32, what);
    EL_CUDA_ENSURE(state.numel() == B * (K - 1) * I, "{}: state {} for B {} K {} I {}", what,
                   shape_str(state.shape()), B, K, I);
  }
  if (last.defined()) expect_positions(last, B, what);
  const long long total = x.numel();
  if (total == 0) return;
  const cudaStream_t stream = ctx().stream;
  EL_DISPATCH_FLOAT(x.dtype(), T_, ({
    conv_fwd_kernel<T_><<<grid_for(total, 256), 256, 0, stream>>>(
        x.data<T_>(), w.raw(), w.dtype(), bias.defined() ? bias.raw() : nullptr,
        bias.defined() ? bias.dtype() : DType::f32, state.defined() ? state.data<float>() : nullptr,
        out.data<T_>(), total, static_cast<int>(T), static_cast<int>(I), static_cast<int>(K));
    check_launch(what);
    if (state.defined() && K > 1) {  // after the outputs read the old state (stream order)
      const long long n = B * I;
      conv_state_kernel<T_><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
          x.data<T_>(), last.defined() ? last.data<int32_t>() : nullptr, state.data<float>(),
          static_cast<int>(B), static_cast<int>(T), static_cast<int>(I), static_cast<int>(K));
      check_launch(what);
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
  if (bias.defined()) expect_cuda_dtype(dbias, DType::f32, what);
  zero(dw);
  if (bias.defined()) zero(dbias);
  const long long total = x.numel();
  if (total == 0) return;
  const cudaStream_t stream = ctx().stream;
  const void* bp = bias.defined() ? bias.raw() : nullptr;
  const DType bdt = bias.defined() ? bias.dtype() : DType::f32;
  const long long rows = B * T;
  const dim3 dw_grid(static_cast<unsigned>((I + kConvThreads - 1) / kConvThreads),
                     static_cast<unsigned>((rows + kConvRows - 1) / kConvRows));
  EL_DISPATCH_FLOAT(x.dtype(), T_, ({
    conv_dx_kernel<T_><<<grid_for(total, 256), 256, 0, stream>>>(
        dout.data<T_>(), x.data<T_>(), w.raw(), w.dtype(), bp, bdt, dx.data<T_>(), total,
        static_cast<int>(T), static_cast<int>(I), static_cast<int>(K));
    check_launch(what);
    conv_dw_kernel<T_><<<dw_grid, kConvThreads, (K + 1) * kConvThreads * sizeof(float), stream>>>(
        dout.data<T_>(), x.data<T_>(), w.raw(), w.dtype(), bp, bdt, dw.data<float>(),
        bias.defined() ? dbias.data<float>() : nullptr, rows, static_cast<int>(T),
        static_cast<int>(I), static_cast<int>(K));
    check_launch(what);
  }));
}

void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                        const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                        const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints) {
  const char* what = "cuda mamba_scan_forward";
  expect_cuda_float(u, what);
  for (const Tensor* t : TensorPtrs{&delta, &B, &C, &z, &y}) expect_cuda_dtype(*t, u.dtype(), what);
  const ScanParams p = scan_params(u, A_log, D, delta_bias, what);
  const int64_t Bn = u.dim(0);
  EL_CUDA_ENSURE(delta.shape() == u.shape() && z.shape() == u.shape() && y.shape() == u.shape() &&
                     B.numel() == Bn * p.T * p.N && C.numel() == B.numel() && D.numel() == p.I &&
                     delta_bias.numel() == p.I,
                 "{}: shapes do not match u {}", what, shape_str(u.shape()));
  if (state.defined()) {
    expect_cuda_dtype(state, DType::f32, what);
    EL_CUDA_ENSURE(state.numel() == Bn * p.I * p.N, "{}: state {}", what, shape_str(state.shape()));
  }
  if (checkpoints.defined()) {
    expect_cuda_dtype(checkpoints, DType::f32, what);
    EL_CUDA_ENSURE(checkpoints.numel() == Bn * p.I * ((p.T + kChunk - 1) / kChunk) * p.N,
                   "{}: checkpoints {}", what, shape_str(checkpoints.shape()));
  }
  if (last.defined()) expect_positions(last, Bn, what);
  if (u.numel() == 0) return;
  const dim3 grid(static_cast<unsigned>((p.I + kChannels - 1) / kChannels),
                  static_cast<unsigned>(Bn));
  const size_t smem = (4 * kThreads + 2 * kGroup * p.N) * sizeof(float);
  const cudaStream_t stream = ctx().stream;
  with_npt(states_per_lane(p.N), [&](auto npt) {
    constexpr int NPT = decltype(npt)::value;
    EL_DISPATCH_FLOAT(u.dtype(), T_, ({
      scan_fwd_kernel<T_, NPT><<<grid, kThreads, smem, stream>>>(
          p, u.data<T_>(), delta.data<T_>(), B.data<T_>(), C.data<T_>(), z.data<T_>(),
          last.defined() ? last.data<int32_t>() : nullptr,
          state.defined() ? state.data<float>() : nullptr, y.data<T_>(),
          checkpoints.defined() ? checkpoints.data<float>() : nullptr);
    }));
  });
  check_launch(what);
}

void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                         const Tensor& A_log, const Tensor& B, const Tensor& C, const Tensor& D,
                         const Tensor& z, const Tensor& delta_bias, const Tensor& checkpoints,
                         Tensor& du, Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC,
                         Tensor& dD, Tensor& dz, Tensor& ddelta_bias) {
  const char* what = "cuda mamba_scan_backward";
  expect_cuda_float(u, what);
  for (const Tensor* t : TensorPtrs{&dy, &delta, &B, &C, &z, &du, &ddelta, &dz})
    expect_cuda_dtype(*t, u.dtype(), what);
  for (const Tensor* t : TensorPtrs{&dA_log, &dB, &dC, &dD, &ddelta_bias, &checkpoints})
    expect_cuda_dtype(*t, DType::f32, what);
  const ScanParams p = scan_params(u, A_log, D, delta_bias, what);
  const int64_t Bn = u.dim(0);
  EL_CUDA_ENSURE(dy.shape() == u.shape() && du.shape() == u.shape() &&
                     ddelta.shape() == u.shape() && dz.shape() == u.shape() &&
                     dA_log.numel() == p.I * p.N && dB.numel() == Bn * p.T * p.N &&
                     dC.numel() == dB.numel() && dD.numel() == p.I &&
                     ddelta_bias.numel() == p.I &&
                     checkpoints.numel() == Bn * p.I * ((p.T + kChunk - 1) / kChunk) * p.N,
                 "{}: shapes do not match u {} (checkpoints {})", what, shape_str(u.shape()),
                 shape_str(checkpoints.shape()));
  for (Tensor* t : {&dA_log, &dB, &dC, &dD, &ddelta_bias}) zero(*t);
  if (u.numel() == 0) return;
  // Each (b, d)'s group-start states of the chunk in progress.
  Tensor ws = Tensor::empty({Bn, p.I, kChunkGroups, p.N}, DType::f32, u.device());
  const dim3 grid(static_cast<unsigned>((p.I + kChannels - 1) / kChannels),
                  static_cast<unsigned>(Bn));
  const size_t smem = (8 * kThreads + 4 * kGroup * p.N) * sizeof(float);
  const cudaStream_t stream = ctx().stream;
  with_npt(states_per_lane(p.N), [&](auto npt) {
    constexpr int NPT = decltype(npt)::value;
    EL_DISPATCH_FLOAT(u.dtype(), T_, ({
      auto kernel = scan_bwd_kernel<T_, NPT>;
      if (smem > 48 * 1024) {
        EL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
      }
      kernel<<<grid, kThreads, smem, stream>>>(
          p, dy.data<T_>(), u.data<T_>(), delta.data<T_>(), B.data<T_>(), C.data<T_>(),
          z.data<T_>(), checkpoints.data<float>(), ws.data<float>(), du.data<T_>(),
          ddelta.data<T_>(), dz.data<T_>(), dA_log.data<float>(), dB.data<float>(),
          dC.data<float>(), dD.data<float>(), ddelta_bias.data<float>());
    }));
  });
  check_launch(what);
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
  const int grid = grid_for(rows * cols, 256);
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
  check_launch(what);
}

}  // namespace el::cuda
