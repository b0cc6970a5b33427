// cuda_mamba_scan.cu — the fused Mamba-1 selective scan of the CUDA backend,
// forward and backward (contracts in ops/backend.h "Mamba-1").
//
// Layout. A block owns kChannels = 16 channels of one batch row; a half warp
// (kLanes = 16 lanes) owns one channel and lane l the states n = l, l + 16,
// ... (NPT = ceil(N / 16) each), in registers. Time runs in groups of
// kGroup = 16 steps. Each group's inputs are fetched into registers one
// group ahead (global latency hidden behind the current group's work), then
// stashed in shared memory channel-major / state-major: dt (bias and
// softplus applied once per element), u, z as [channel][step], B and C as
// [state][step], rows padded to 20 floats so that a lane reads four steps
// with one conflict-free float4 load. Every lane advances its states 16
// steps (one exp2 on the MUFU unit per state and step, the kernel's bound;
// A is pre-scaled by log2 e) keeping its partial C_t . h_t per step, and one
// 15-shuffle reduce-scatter over the half warp (reduce_scatter16) leaves step
// t0 + l's sum in lane l, which applies D and the gate and stages y for a
// coalesced store. No [B, T, I, N] tensor exists: the forward writes the
// state every kChunk = 128 steps (f32 [B, I, T/128, N],
// Backend::mamba_scan_chunk) when the backward will follow.
//
// Backward, per block and chunk, last chunk first: from the chunk's
// checkpoint, run forward to each group's start (kept in a workspace
// [B, I, 8, N] f32, written and read by the same thread); then per group,
// last first: recompute its 16 states per state (kept in registers for
// NPT <= 2, recomputed again otherwise), and walk back through them with
// dh, accumulating dA in registers and du / ddelta through two
// reduce-scatters. dB and dC sum over channels: per group and block of 16
// states, the two half warps of a warp add by shuffle, the 8 warps' values
// meet in shared memory, and one f32 atomic per (step, state) goes to the
// f32 output. Cost: the forward's exps three times (four for N > 32).
//
// TEMPORARY: a second design lives in cuda_mamba_scan_v2.cu and runs unless
// EL_MAMBA_SCAN=old (cuda_mamba.cuh): the public functions below check their
// arguments, then hand over to it.
#include <fmt/format.h>

#include <type_traits>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_mamba.cuh"

namespace el::cuda {
namespace {

using mamba::exp2_fast;
using mamba::sigmoid;
using mamba::silu;
using mamba::silu_grad;
using mamba::softplus;

constexpr int kLanes = 16;                    // lanes per channel (a half warp)
constexpr int kChannels = 16;                 // channels per block
constexpr int kThreads = kLanes * kChannels;  // 256
constexpr int kWarps = kThreads / 32;
constexpr int kGroup = 16;                    // steps per reduce-scatter
constexpr int kRow = kGroup + 4;              // floats per tile row (padding: no bank conflicts)
constexpr int kTile = kChannels * kRow;       // a [channel][step] tile
constexpr int kChunkGroups = 8;
constexpr int kChunk = kGroup * kChunkGroups;  // checkpoint interval (128 steps)
constexpr float kLog2e = 1.4426950408889634f;

static_assert(kGroup * kChannels == kThreads, "one tile element per thread");

// One level of reduce_scatter16: lanes with bit W keep the upper W of their
// 2W values, the others the lower W, each adding its partner's copy of them.
// (W is a template argument so that every index is a constant and v stays
// in registers.)
template <int W>
__device__ __forceinline__ void reduce_scatter_level(float (&v)[kGroup], int l) {
  const bool hi = (l & W) != 0;
#pragma unroll
  for (int i = 0; i < W; ++i) {
    const float send = hi ? v[i] : v[i + W];
    const float keep = hi ? v[i + W] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, W);
  }
}

// v[i] summed over the 16 lanes of this half warp lands in lane i (8 + 4 + 2
// + 1 shuffles instead of 16 separate 4-shuffle reductions).
__device__ __forceinline__ float reduce_scatter16(float (&v)[kGroup], int l) {
  reduce_scatter_level<8>(v, l);
  reduce_scatter_level<4>(v, l);
  reduce_scatter_level<2>(v, l);
  reduce_scatter_level<1>(v, l);
  return v[0];
}

// Sum over the 16 lanes of a half warp (every lane gets it).
__device__ __forceinline__ float half_warp_sum(float x) {
#pragma unroll
  for (int w = 8; w >= 1; w >>= 1) x += __shfl_xor_sync(0xffffffffu, x, w);
  return x;
}

__device__ __forceinline__ float4 row4(const float* row, int q) {
  return reinterpret_cast<const float4*>(row)[q];
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

// The lane's states: A = -exp(A_log), A2 = A log2 e, validity.
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

// This thread's share of one group's inputs, fetched a group ahead: the
// tile element (step tid / 16, channel tid % 16) and up to NPT elements of
// B and C (element tid + 256 m of the group's [16][N]).
template <int NPT>
struct Fetch {
  bool live;
  float raw, u, z, x;  // delta + bias, u, z, the extra input (dy)
  float B[NPT], C[NPT];
};

template <class T, int NPT>
__device__ __forceinline__ void fetch_group(Fetch<NPT>& f, const ScanParams& p, int b, int d0,
                                            int t0, const T* u, const T* delta, const T* z,
                                            const T* extra, const T* Bm, const T* Cm) {
  const int tid = threadIdx.x, i = tid / kChannels, cc = tid % kChannels;
  const int t = t0 + i, dd = d0 + cc;
  f.live = t < p.T && dd < p.I;
  f.raw = f.u = f.z = f.x = 0.f;
  if (f.live) {
    const long long e = (static_cast<long long>(b) * p.T + t) * p.I + dd;
    f.raw = to_f(delta[e]) + ld(p.bias, p.b_dt, dd);
    f.u = to_f(u[e]);
    if (z) f.z = to_f(z[e]);
    if (extra) f.x = to_f(extra[e]);
  }
#pragma unroll
  for (int m = 0; m < NPT; ++m) {
    const int k = tid + kThreads * m;
    const int tt = t0 + k / p.N;
    const bool ok = k < kGroup * p.N && tt < p.T;
    const long long e = (static_cast<long long>(b) * p.T + tt) * p.N + k % p.N;
    f.B[m] = ok ? to_f(Bm[e]) : 0.f;
    f.C[m] = ok && Cm ? to_f(Cm[e]) : 0.f;
  }
}

// The fetched values into the tiles (null tiles are skipped). A step past T
// or a channel past I gets dt = 0: its decay is 1 and it adds nothing.
template <int NPT>
__device__ __forceinline__ void stash_group(const Fetch<NPT>& f, const ScanParams& p, float* s_dt,
                                            float* s_raw, float* s_u, float* s_z, float* s_x,
                                            float* s_B, float* s_C) {
  const int tid = threadIdx.x, k = (tid % kChannels) * kRow + tid / kChannels;
  s_dt[k] = f.live ? softplus(f.raw) : 0.f;
  if (s_raw) s_raw[k] = f.raw;
  s_u[k] = f.u;
  if (s_z) s_z[k] = f.z;
  if (s_x) s_x[k] = f.x;
#pragma unroll
  for (int m = 0; m < NPT; ++m) {
    const int kk = tid + kThreads * m;
    if (kk >= kGroup * p.N) break;
    const int at = (kk % p.N) * kRow + kk / p.N;
    s_B[at] = f.B[m];
    if (s_C) s_C[at] = f.C[m];
  }
}

// Stores a staged [step][channel] tile (s[i * 16 + c]) into out[b, t0 + i, d0 + c].
template <class T>
__device__ __forceinline__ void store_group(const ScanParams& p, int b, int d0, int t0,
                                            const float* s, T* out) {
  const int tid = threadIdx.x, t = t0 + tid / kChannels, dd = d0 + tid % kChannels;
  if (t < p.T && dd < p.I) {
    out[(static_cast<long long>(b) * p.T + t) * p.I + dd] = from_f<T>(s[tid]);
  }
}

// One state over the group's 16 steps from h0: hs[i] = h after step i; with
// kPart, part[i] += C_i h.
template <bool kPart>
__device__ __forceinline__ void run_state(float h0, float A2, const float* dt_row,
                                          const float* u_row, const float* B_row,
                                          const float* C_row, float (&hs)[kGroup],
                                          float (&part)[kGroup]) {
  float h = h0;
#pragma unroll
  for (int q = 0; q < kGroup / 4; ++q) {
    const float4 dt4 = row4(dt_row, q), u4 = row4(u_row, q), B4 = row4(B_row, q);
    const float dt[4] = {dt4.x, dt4.y, dt4.z, dt4.w}, uv[4] = {u4.x, u4.y, u4.z, u4.w},
                Bv[4] = {B4.x, B4.y, B4.z, B4.w};
    float Cv[4] = {0.f, 0.f, 0.f, 0.f};
    if constexpr (kPart) {
      const float4 C4 = row4(C_row, q);
      Cv[0] = C4.x, Cv[1] = C4.y, Cv[2] = C4.z, Cv[3] = C4.w;
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      h = exp2_fast(dt[r] * A2) * h + (dt[r] * Bv[r]) * uv[r];
      hs[4 * q + r] = h;
      if constexpr (kPart) part[4 * q + r] += Cv[r] * h;
    }
  }
}

template <class T, int NPT>
__global__ void __launch_bounds__(kThreads)
    scan_fwd_kernel(ScanParams p, const T* __restrict__ u, const T* __restrict__ delta,
                    const T* __restrict__ Bm, const T* __restrict__ Cm, const T* __restrict__ z,
                    const int32_t* __restrict__ last, float* state, T* __restrict__ y,
                    float* __restrict__ ckpt) {
  extern __shared__ float4 smem4[];
  float* s_dt = reinterpret_cast<float*>(smem4);
  float* s_u = s_dt + kTile;
  float* s_z = s_u + kTile;
  float* s_y = s_z + kTile;  // [step][channel] staging
  float* s_B = s_y + kThreads;
  float* s_C = s_B + p.N * kRow;
  const int tid = threadIdx.x, c = tid / kLanes, l = tid % kLanes;
  const int b = blockIdx.y, d0 = blockIdx.x * kChannels, d = d0 + c;
  const Lane<NPT> ln(p, d, l, d < p.I);
  const long long row = static_cast<long long>(b) * p.I + d;  // (b, d)
  float h[NPT], hsave[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    h[j] = ln.valid[j] && state ? state[row * p.N + l + kLanes * j] : 0.f;
    hsave[j] = h[j];
  }
  const float Dd = d < p.I ? ld(p.D, p.d_dt, d) : 0.f;
  const int stop = last ? last[b] : p.T - 1;
  const int nchunks = (p.T + kChunk - 1) / kChunk;
  const float* dt_row = s_dt + c * kRow;
  const float* u_row = s_u + c * kRow;
  Fetch<NPT> f;
  fetch_group<T, NPT>(f, p, b, d0, 0, u, delta, z, nullptr, Bm, Cm);
  for (int t0 = 0; t0 < p.T; t0 += kGroup) {
    if (ckpt && t0 % kChunk == 0) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        if (ln.valid[j]) ckpt[(row * nchunks + t0 / kChunk) * p.N + l + kLanes * j] = h[j];
      }
    }
    __syncthreads();  // the previous group's tiles are read and its y staged
    if (t0 > 0) store_group<T>(p, b, d0, t0 - kGroup, s_y, y);
    stash_group<NPT>(f, p, s_dt, nullptr, s_u, s_z, nullptr, s_B, s_C);
    __syncthreads();
    if (t0 + kGroup < p.T) {
      fetch_group<T, NPT>(f, p, b, d0, t0 + kGroup, u, delta, z, nullptr, Bm, Cm);
    }
    float part[kGroup];
#pragma unroll
    for (int i = 0; i < kGroup; ++i) part[i] = 0.f;
    const int save_i = stop - t0;  // in [0, 16) in the group holding `stop`
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = l + kLanes * j;
      if (n >= p.N) continue;
      float hs[kGroup];
      run_state<true>(h[j], ln.A2[j], dt_row, u_row, s_B + n * kRow, s_C + n * kRow, hs, part);
      h[j] = hs[kGroup - 1];
#pragma unroll
      for (int i = 0; i < kGroup; ++i) {
        if (i == save_i) hsave[j] = hs[i];
      }
    }
    const float s = reduce_scatter16(part, l);  // C . h at step t0 + l
    s_y[l * kChannels + c] = (s + Dd * u_row[l]) * silu(s_z[c * kRow + l]);
  }
  __syncthreads();
  store_group<T>(p, b, d0, (p.T - 1) / kGroup * kGroup, s_y, y);
  if (state) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      if (ln.valid[j]) state[row * p.N + l + kLanes * j] = hsave[j];
    }
  }
}

// Two blocks per SM for N <= 16 (<= 128 registers; 48 bytes spilled): at B 1 and 4096
// channels the grid is 256 blocks, one wave on 132 SMs instead of two.
template <class T, int NPT>
__global__ void __launch_bounds__(kThreads, NPT == 1 ? 2 : 1)
    scan_bwd_kernel(ScanParams p, const T* __restrict__ dy, const T* __restrict__ u,
                    const T* __restrict__ delta, const T* __restrict__ Bm,
                    const T* __restrict__ Cm, const T* __restrict__ z,
                    const float* __restrict__ ckpt, float* __restrict__ ws, T* __restrict__ du,
                    T* __restrict__ ddelta, T* __restrict__ dz, float* __restrict__ dA_log,
                    float* __restrict__ dB, float* __restrict__ dC, float* __restrict__ dD,
                    float* __restrict__ dbias) {
  // States kept in registers between the group's two passes (else recomputed).
  constexpr bool kKeep = NPT <= 2;
  extern __shared__ float4 smem4[];
  float* s_dt = reinterpret_cast<float*>(smem4);
  float* s_raw = s_dt + kTile;
  float* s_u = s_raw + kTile;
  float* s_z = s_u + kTile;
  float* s_g = s_z + kTile;  // dy, then gy = dy silu(z)
  float* s_du = s_g + kTile;  // [step][channel] staging
  float* s_ddt = s_du + kThreads;
  float* s_dz = s_ddt + kThreads;
  float* s_B = s_dz + kThreads;
  float* s_C = s_B + p.N * kRow;
  float* s_rB = s_C + p.N * kRow;            // [warp][state][step]: dB of 16 states
  float* s_rC = s_rB + kWarps * kLanes * kRow;  // the same for dC
  const int tid = threadIdx.x, c = tid / kLanes, l = tid % kLanes, warp = tid / 32;
  const int b = blockIdx.y, d0 = blockIdx.x * kChannels, d = d0 + c;
  const bool live = d < p.I;
  const Lane<NPT> ln(p, d, l, live);
  const long long row = static_cast<long long>(b) * p.I + d;
  const float Dd = live ? ld(p.D, p.d_dt, d) : 0.f;
  const int nchunks = (p.T + kChunk - 1) / kChunk;
  const float* dt_row = s_dt + c * kRow;
  const float* u_row = s_u + c * kRow;
  float* g_row = s_g + c * kRow;
  float dh[NPT], dA[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) dh[j] = dA[j] = 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;
  Fetch<NPT> f;
  for (int chunk = nchunks - 1; chunk >= 0; --chunk) {
    const int c0 = chunk * kChunk;
    const int ngroups = ((p.T - c0 < kChunk ? p.T - c0 : kChunk) + kGroup - 1) / kGroup;
    // Pass 1: the state at each group's start, from the chunk's checkpoint.
    float h[NPT];
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      h[j] = ln.valid[j] ? ckpt[(row * nchunks + chunk) * p.N + l + kLanes * j] : 0.f;
    }
    fetch_group<T, NPT>(f, p, b, d0, c0, u, delta, nullptr, nullptr, Bm, nullptr);
    for (int g = 0; g < ngroups; ++g) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        if (ln.valid[j]) ws[(row * kChunkGroups + g) * p.N + l + kLanes * j] = h[j];
      }
      if (g + 1 == ngroups) break;
      __syncthreads();
      stash_group<NPT>(f, p, s_dt, nullptr, s_u, nullptr, nullptr, s_B, nullptr);
      __syncthreads();
      if (g + 2 < ngroups) {
        fetch_group<T, NPT>(f, p, b, d0, c0 + (g + 1) * kGroup, u, delta, nullptr, nullptr, Bm,
                            nullptr);
      }
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = l + kLanes * j;
        if (n >= p.N) continue;
        float hs[kGroup], unused[kGroup];
        run_state<false>(h[j], ln.A2[j], dt_row, u_row, s_B + n * kRow, nullptr, hs, unused);
        h[j] = hs[kGroup - 1];
      }
    }
    // Pass 2: the groups, last first.
    fetch_group<T, NPT>(f, p, b, d0, c0 + (ngroups - 1) * kGroup, u, delta, z, dy, Bm, Cm);
    for (int g = ngroups - 1; g >= 0; --g) {
      const int t0 = c0 + g * kGroup;
      __syncthreads();  // the previous group's tiles and staging are read
      stash_group<NPT>(f, p, s_dt, s_raw, s_u, s_z, s_g, s_B, s_C);
      __syncthreads();
      if (g > 0) fetch_group<T, NPT>(f, p, b, d0, t0 - kGroup, u, delta, z, dy, Bm, Cm);
      float h0[NPT];
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        h0[j] = ln.valid[j] ? ws[(row * kChunkGroups + g) * p.N + l + kLanes * j] : 0.f;
      }
      // The group's states and C . h per step.
      [[maybe_unused]] float kept[kKeep ? NPT : 1][kGroup];
      float part[kGroup];
#pragma unroll
      for (int i = 0; i < kGroup; ++i) part[i] = 0.f;
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = l + kLanes * j;
        if (n >= p.N) continue;
        float hs[kGroup];
        run_state<true>(h0[j], ln.A2[j], dt_row, u_row, s_B + n * kRow, s_C + n * kRow, hs, part);
        if constexpr (kKeep) {
#pragma unroll
          for (int i = 0; i < kGroup; ++i) kept[j][i] = hs[i];
        }
      }
      {
        // Lane l's step t0 + l: dz, and gy = dy silu(z) for the walk back.
        const float s = reduce_scatter16(part, l);
        const float zv = s_z[c * kRow + l], uv = u_row[l], gv = g_row[l];
        s_dz[l * kChannels + c] = gv * (s + Dd * uv) * silu_grad(zv);
        const float gy = gv * silu(zv);
        dD_acc += gy * uv;
        __syncwarp();
        g_row[l] = gy;  // this half warp's channel row: read only by these lanes
        __syncwarp();
      }
      float pdu[kGroup], pddt[kGroup];
#pragma unroll
      for (int i = 0; i < kGroup; ++i) pdu[i] = pddt[i] = 0.f;
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = l + kLanes * j;
        float dBv[kGroup], dCv[kGroup];
#pragma unroll
        for (int i = 0; i < kGroup; ++i) dBv[i] = dCv[i] = 0.f;
        if (n < p.N) {
          float hs[kGroup];
          if constexpr (kKeep) {
#pragma unroll
            for (int i = 0; i < kGroup; ++i) hs[i] = kept[j][i];
          } else {
            float unused[kGroup];
            run_state<false>(h0[j], ln.A2[j], dt_row, u_row, s_B + n * kRow, nullptr, hs, unused);
          }
          const float* B_row = s_B + n * kRow;
          const float* C_row = s_C + n * kRow;
          const float A = ln.A[j], A2 = ln.A2[j];
          float dhj = dh[j], dAj = dA[j];
#pragma unroll
          for (int q = kGroup / 4 - 1; q >= 0; --q) {
            const float4 dt4 = row4(dt_row, q), u4 = row4(u_row, q), g4 = row4(g_row, q),
                         B4 = row4(B_row, q), C4 = row4(C_row, q);
            const float dt[4] = {dt4.x, dt4.y, dt4.z, dt4.w}, uv[4] = {u4.x, u4.y, u4.z, u4.w},
                        gy[4] = {g4.x, g4.y, g4.z, g4.w}, Bv[4] = {B4.x, B4.y, B4.z, B4.w},
                        Cv[4] = {C4.x, C4.y, C4.z, C4.w};
#pragma unroll
            for (int r = 3; r >= 0; --r) {
              const int i = 4 * q + r;
              const float prev = i > 0 ? hs[i - 1] : h0[j];
              const float a = exp2_fast(dt[r] * A2);
              const float dhn = dhj + gy[r] * Cv[r];  // dL/dh_t
              dCv[i] = gy[r] * hs[i];
              dBv[i] = dhn * dt[r] * uv[r];
              pdu[i] += dhn * dt[r] * Bv[r];
              pddt[i] += dhn * (A * a * prev + Bv[r] * uv[r]);
              dAj += dhn * a * prev * dt[r];
              dhj = dhn * a;
            }
          }
          dh[j] = dhj;
          dA[j] = dAj;
        }
        // dB, dC of states [16 j, 16 j + 16) summed over the block's channels.
#pragma unroll
        for (int i = 0; i < kGroup; ++i) {
          dBv[i] += __shfl_xor_sync(0xffffffffu, dBv[i], 16);
          dCv[i] += __shfl_xor_sync(0xffffffffu, dCv[i], 16);
        }
        if ((tid & 31) < kLanes) {
          float4* rb = reinterpret_cast<float4*>(s_rB + (warp * kLanes + l) * kRow);
          float4* rc = reinterpret_cast<float4*>(s_rC + (warp * kLanes + l) * kRow);
#pragma unroll
          for (int q = 0; q < kGroup / 4; ++q) {
            rb[q] = make_float4(dBv[4 * q], dBv[4 * q + 1], dBv[4 * q + 2], dBv[4 * q + 3]);
            rc[q] = make_float4(dCv[4 * q], dCv[4 * q + 1], dCv[4 * q + 2], dCv[4 * q + 3]);
          }
        }
        __syncthreads();
        {
          const int nl = tid / kGroup, i = tid % kGroup, t = t0 + i, n2 = kLanes * j + nl;
          float sb = 0.f, sc = 0.f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            sb += s_rB[(w * kLanes + nl) * kRow + i];
            sc += s_rC[(w * kLanes + nl) * kRow + i];
          }
          if (t < p.T && n2 < p.N) {
            const long long e = (static_cast<long long>(b) * p.T + t) * p.N + n2;
            atomicAdd(&dB[e], sb);
            atomicAdd(&dC[e], sc);
          }
        }
        __syncthreads();
      }
      {
        const float dus = reduce_scatter16(pdu, l), ddts = reduce_scatter16(pddt, l);
        const float raw = s_raw[c * kRow + l];
        const float dd = ddts * (raw > 20.f ? 1.f : sigmoid(raw));
        s_du[l * kChannels + c] = dus + g_row[l] * Dd;
        s_ddt[l * kChannels + c] = dd;
        dbias_acc += dd;
      }
      __syncthreads();
      store_group<T>(p, b, d0, t0, s_du, du);
      store_group<T>(p, b, d0, t0, s_ddt, ddelta);
      store_group<T>(p, b, d0, t0, s_dz, dz);
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

void zero(Tensor& t) {
  if (t.defined() && t.numel() > 0) {
    EL_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), ctx().stream));
  }
}

}  // namespace

int64_t mamba_scan_chunk() { return mamba::scan_use_v2() ? mamba::scan_v2_chunk() : kChunk; }

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
    const int64_t L = mamba_scan_chunk();
    EL_CUDA_ENSURE(checkpoints.numel() == Bn * p.I * ((p.T + L - 1) / L) * p.N,
                   "{}: checkpoints {}", what, shape_str(checkpoints.shape()));
  }
  if (last.defined()) expect_positions(last, Bn, what);
  if (u.numel() == 0) return;
  if (mamba::scan_use_v2()) {
    mamba::scan_v2_forward(u, delta, A_log, B, C, D, z, delta_bias, last, state, y, checkpoints);
    return;
  }
  const dim3 grid(static_cast<unsigned>((p.I + kChannels - 1) / kChannels),
                  static_cast<unsigned>(Bn));
  const size_t smem = (3 * kTile + kThreads + 2 * p.N * kRow) * sizeof(float);
  const cudaStream_t stream = ctx().stream;
  with_npt(states_per_lane(p.N), [&](auto npt) {
    constexpr int NPT = decltype(npt)::value;
    EL_DISPATCH_FLOAT(u.dtype(), T_, ({
      auto kernel = scan_fwd_kernel<T_, NPT>;
      allow_dynamic_smem(kernel, smem);
      kernel<<<grid, kThreads, smem, stream>>>(
          p, u.data<T_>(), delta.data<T_>(), B.data<T_>(), C.data<T_>(), z.data<T_>(),
          last.defined() ? last.data<int32_t>() : nullptr,
          state.defined() ? state.data<float>() : nullptr, y.data<T_>(),
          checkpoints.defined() ? checkpoints.data<float>() : nullptr);
    }));
  });
  mamba::check_launch(what);
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
  const int64_t Bn = u.dim(0), L = mamba_scan_chunk();
  EL_CUDA_ENSURE(dy.shape() == u.shape() && du.shape() == u.shape() &&
                     ddelta.shape() == u.shape() && dz.shape() == u.shape() &&
                     dA_log.numel() == p.I * p.N && dB.numel() == Bn * p.T * p.N &&
                     dC.numel() == dB.numel() && dD.numel() == p.I &&
                     ddelta_bias.numel() == p.I &&
                     checkpoints.numel() == Bn * p.I * ((p.T + L - 1) / L) * p.N,
                 "{}: shapes do not match u {} (checkpoints {})", what, shape_str(u.shape()),
                 shape_str(checkpoints.shape()));
  for (Tensor* t : {&dA_log, &dB, &dC, &dD, &ddelta_bias}) zero(*t);
  if (u.numel() == 0) return;
  if (mamba::scan_use_v2()) {
    mamba::scan_v2_backward(dy, u, delta, A_log, B, C, D, z, delta_bias, checkpoints, du, ddelta,
                            dA_log, dB, dC, dD, dz, ddelta_bias);
    return;
  }
  // Each (b, d)'s group-start states of the chunk in progress.
  Tensor ws = Tensor::empty({Bn, p.I, kChunkGroups, p.N}, DType::f32, u.device());
  const dim3 grid(static_cast<unsigned>((p.I + kChannels - 1) / kChannels),
                  static_cast<unsigned>(Bn));
  const size_t smem =
      (5 * kTile + 3 * kThreads + 2 * p.N * kRow + 2 * kWarps * kLanes * kRow) * sizeof(float);
  const cudaStream_t stream = ctx().stream;
  with_npt(states_per_lane(p.N), [&](auto npt) {
    constexpr int NPT = decltype(npt)::value;
    EL_DISPATCH_FLOAT(u.dtype(), T_, ({
      auto kernel = scan_bwd_kernel<T_, NPT>;
      allow_dynamic_smem(kernel, smem);
      kernel<<<grid, kThreads, smem, stream>>>(
          p, dy.data<T_>(), u.data<T_>(), delta.data<T_>(), B.data<T_>(), C.data<T_>(),
          z.data<T_>(), checkpoints.data<float>(), ws.data<float>(), du.data<T_>(),
          ddelta.data<T_>(), dz.data<T_>(), dA_log.data<float>(), dB.data<float>(),
          dC.data<float>(), dD.data<float>(), ddelta_bias.data<float>());
    }));
  });
  mamba::check_launch(what);
}

}  // namespace el::cuda
