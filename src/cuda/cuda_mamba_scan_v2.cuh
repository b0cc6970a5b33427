// cuda_mamba_scan_v2.cuh — internal to src/cuda: what the kernels of the
// fused Mamba-1 selective scan share (forward: cuda_mamba_scan_v2.cu,
// backward: cuda_mamba_scan_v2_bwd.cu, segments over T:
// cuda_mamba_scan_seg.cu; contracts in ops/backend.h "Mamba-1").
// cuda_mamba_scan.cu does the shape checks and calls in (entry points in
// cuda_mamba.cuh).
//
// Switch, read once per process: EL_MAMBA_SCAN_CHUNK = 16, 32 or 64 sets the
// checkpoint interval (default 128): at 16 the backward runs no pass 1
// (below) for 8x the checkpoint memory (at B 1, T 8192, I 4096, N 16: 134 MB
// instead of 17 MB a layer). mamba_scan_chunk() follows.
//
// Why this design ("v2": it replaced a first one, removed since): the first
// (a half warp per channel, one state per lane) spent ~27 SASS instructions
// per state and step where the arithmetic is 5, because what is per
// (channel, step) — softplus, SiLU, the 16-lane reduce-scatter, staging,
// addressing — was paid by every state. On an H100 at B 1, T 8192, I 4096,
// N 16 this one took fwd 0.80 / bwd 2.28 ms against the first design's
// 1.08 / 2.73, and a 4-lane variant of this one 1.10 / 2.90 (one warp per
// scheduler left its latency exposed; docs/PERFORMANCE.md). Here:
//  * L = 8 lanes per channel for N <= 64 (16 for N > 64) and S = N / L
//    states per lane, contiguous (lane q owns n = q S .. q S + S - 1), so
//    per (channel, step) work is spread over S states and the reduce-scatter
//    of C . h spans L lanes. Block: 128 threads, 128 / L channels of one
//    batch row. At B 1, I 4096, N 16 that is two warps per scheduler; the
//    kernels live on instruction-level parallelism (S independent states,
//    16 unrolled steps), not occupancy.
//  * Per 16-step group, inputs are fetched a group ahead into registers and
//    stashed in double-buffered shared memory: one barrier per group. Per
//    (channel, step) values are computed once while stashing (dt =
//    softplus(delta + bias), dt u, D u, silu(z); backward dy silu(z),
//    dy silu'(z), softplus'), with MUFU fast math (ex2, lg2, rcp: relative
//    errors ~2^-22). An element past T or I is fetched as raw delta = -inf,
//    so that dt = 0 (decay 1, no input) and every derived value is 0.
//  * Forward per state and step: FMUL dt A log2 e, MUFU ex2, FMUL B (dt u),
//    FFMA h, FFMA C h (~11 instructions per state and step in all).
//  * Backward, per block and checkpoint chunk, last first, as one sequence of
//    jobs so that fetching runs one job ahead across chunk boundaries: pass
//    1 jobs run the chunk's groups forward from its checkpoint and keep
//    each group's start state in shared memory (H0); pass 2 jobs take the
//    groups last first: recompute the group's states keeping h and exp(dt
//    A) in registers (two exps per state and step in all; the first design
//    had three), then walk back. States go in batches of 4 per lane
//    (registers bounded for large N). dB and dC (sums over channels) go
//    through shared memory: every lane writes its group's values (R,
//    [value][step][channel][state]); each thread then owns float4 slots
//    (value, step, 4 states), sums them over the block's channels and adds
//    them to the f32 output with one vector atomic (scalar ones when N % 4
//    != 0). With one block per SM (EL_MAMBA_SCAN_BWD_BLOCKS=1) R is
//    double-buffered and a group's sum is spread over the next group's walk
//    (2 loads per step); the default, three blocks per SM where their shared
//    memory fits, has one R buffer summed between two barriers and hides
//    that burst behind the other blocks. du, ddelta and dz are staged and stored
//    coalesced; dA stays in registers to the end. ~33 instructions per
//    state and step with 128-step chunks, ~27 with 16 (the first design:
//    ~79). Shared memory at N 16: ~99.5 KB a block with two R buffers.
//
// Segments over time (cuda_mamba_scan_seg.cu). At batch 1 the grid is
// I / 16 blocks (256 at I 4096: two per SM, latency-bound), so time is split
// into n segments of whole checkpoint chunks (Seg; segment s holds chunks
// s C / n .. (s + 1) C / n - 1 of C) and the grid gets a third dimension.
// The recurrence h_t = a_t h_{t-1} + x_t with a_t = exp(dt_t A) is linear,
// and a segment's total decay is exp(A sum dt): only a per-channel sum of
// dt is needed, not a per-state product.
//  * Forward, pass 1 (seg_fwd_local_kernel, segments 0 .. n - 2): the
//    segment from h = 0, state only (~4 instructions per state and step, no
//    C, z, y): its end state hloc_s [B, I, n, N] and sum of dt [B, I, n].
//    Pass 2 (scan_fwd2_kernel, blockIdx.z = s): h_in = 0, then for k < s
//    h_in = exp(A sumdt_k) h_in + hloc_k (seg_combine), then the segment as
//    before, writing y and its chunks' checkpoints. The generation form
//    (state, last) runs unsegmented.
//  * Backward: the carried adjoint dh (dL/dh_t through h_{t+1}) runs back
//    in time as dh <- (dh + gy_t C_t) a_t with gy = dy silu(z), linear too.
//    Pass 1 (seg_bwd_local_kernel, segments 1 .. n - 1): dh through the
//    segment from 0 (~4 instructions per state and step): its value at the
//    segment's start and the sum of dt. Pass 2 (scan_bwd2_kernel): dh from
//    the combine over k = n - 1 .. s + 1, then the segment's chunks as
//    before; dA_log, dD and ddelta_bias get one atomic partial per segment
//    (they were atomics already), dB / dC are per step and unchanged.
//  * Scratch: [B, I, n, N + 1] f32 from the allocator per call (1.1 MB at
//    B 1, I 4096, N 16, n 4); the checkpoints are unchanged.
//  * n: EL_MAMBA_SCAN_SEGMENTS = 0 off, = n forced (clamped to the chunks),
//    unset = pick_segments(): blocks are latency-bound, so a block's time is
//    about its steps and the time goes as (waves of resident blocks, from
//    the occupancy API) / n, times the state-only pass's extra work; a larger
//    n must gain 20%. At B 1, T 8192, I 4096, N 16 (H100, 132 SMs) the
//    forward (64 registers: 8 blocks per SM) takes n = 4 (1024 blocks, one
//    wave); the backward (2 per SM: 264 slots for 256 blocks) stays at 1.
//    EL_MAMBA_SCAN_BWD_BLOCKS = 3 runs the backward with registers capped
//    for 3 blocks per SM and one R buffer (N <= 16 with 8 lanes); then the
//    heuristic takes n = 3 there.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_mamba.cuh"

namespace el::cuda::scan2 {

constexpr int kThreads = 128;
constexpr int kGroup = 16;        // steps per group
constexpr int kRow = kGroup + 4;  // floats per [channel][step] tile row (no bank conflicts)
// Checkpoint interval: P2::cg groups of 16 steps, at most 8 (128 steps, the
// default; EL_MAMBA_SCAN_CHUNK).
constexpr int kMaxChunkGroups = 8;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- MUFU fast math (the host branch only serves host-side parsing).
__device__ __forceinline__ float ex2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
__device__ __forceinline__ float lg2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return log2f(x);
#endif
}
__device__ __forceinline__ float rcp(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return 1.f / x;
#endif
}
// torch's softplus (threshold 20) and its derivative; -inf gives 0 and 0.
__device__ __forceinline__ float softplus_fast(float x) {
  return x > 20.f ? x : lg2(1.f + ex2(x * kLog2e)) * kLn2;
}
__device__ __forceinline__ float softplus_grad_fast(float x) {
  const float e = ex2(x * kLog2e);
  return x > 20.f ? 1.f : e * rcp(1.f + e);
}
__device__ __forceinline__ float sigmoid_fast(float x) { return rcp(1.f + ex2(-x * kLog2e)); }

// ---- geometry
template <int L_, int S_>
struct Cfg {
  static constexpr int L = L_;                // lanes per channel
  static constexpr int S = S_;                // states per lane
  static constexpr int kCh = kThreads / L;    // channels per block
  static constexpr int kNP = L * S;           // states, padded
  static constexpr int kSteps = kGroup / L;   // steps per lane after the reduce-scatter
  static constexpr int kTile = kCh * kRow;    // a [channel][step] tile
  static constexpr int kBC = kGroup * kNP;    // a [step][state] tile
  static constexpr int kBCFetch = (kGroup * kNP + kThreads - 1) / kThreads;  // >= G N / 128
  static constexpr int SB = S < 4 ? S : 4;    // backward: states per batch
  static constexpr int NB = S / SB;
  static constexpr int kRStride = kCh * L * SB + 4;  // R row (one step), padded
  // R's float4 sums: (value, step, quad of states) slots, per thread.
  static constexpr int kQuads = L * SB / 4;
  static constexpr int kSlots = 2 * kGroup * kQuads;
  static constexpr int kSlotsPT = (kSlots + kThreads - 1) / kThreads;
  // Shared memory in floats.
  static constexpr int kFwdBuf = 4 * kTile + 2 * kBC;
  static constexpr int kFwdSmem = 2 * kFwdBuf + 2 * kTile;
  static constexpr int kBwdBuf = 6 * kTile + 2 * kBC;
  static constexpr int kR = 2 * kGroup * kRStride;  // one R buffer
  static constexpr int kBwdFixed = 2 * kBwdBuf + 6 * kTile + kMaxChunkGroups * kThreads * S;
  // Two R buffers where they fit (the sum of one overlaps the next walk).
  static constexpr int kRBufs = (kBwdFixed + 2 * kR) * 4 <= 227 * 1024 ? 2 : 1;
  static constexpr int kBwdSmem = kBwdFixed + kRBufs * kR;
  static_assert(kThreads % L == 0 && kGroup % L == 0 && kGroup % 4 == 0, "geometry");
  static_assert(S % SB == 0 && (L * SB) % 4 == 0, "batches");
  static_assert(kBwdSmem * 4 <= 227 * 1024 && kFwdSmem * 4 <= 227 * 1024, "shared memory");
};

struct P2 {
  const void* A_log;
  DType a_dt;
  const void* D;
  DType d_dt;
  const void* bias;
  DType b_dt;
  int T, I, N;
  int cg;     // groups per checkpoint chunk (1, 2, 4 or 8)
  bool vec4;  // backward: dB, dC rows 16-byte aligned (N % 4 == 0): vector atomics
};

// K consecutive floats (K of 1, 2 or a multiple of 4; p aligned to them).
template <int K>
__device__ __forceinline__ void load_vec(const float* p, float (&v)[K]) {
  if constexpr (K % 4 == 0) {
#pragma unroll
    for (int i = 0; i < K; i += 4) {
      const float4 x = reinterpret_cast<const float4*>(p)[i / 4];
      v[i] = x.x, v[i + 1] = x.y, v[i + 2] = x.z, v[i + 3] = x.w;
    }
  } else if constexpr (K == 2) {
    const float2 x = *reinterpret_cast<const float2*>(p);
    v[0] = x.x, v[1] = x.y;
  } else {
    static_assert(K == 1, "load_vec");
    v[0] = *p;
  }
}
template <int K>
__device__ __forceinline__ void store_vec(float* p, const float (&v)[K]) {
  if constexpr (K % 4 == 0) {
#pragma unroll
    for (int i = 0; i < K; i += 4) {
      reinterpret_cast<float4*>(p)[i / 4] = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
    }
  } else if constexpr (K == 2) {
    *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
  } else {
    static_assert(K == 1, "store_vec");
    *p = v[0];
  }
}

// Reduce-scatter over the L lanes of a channel (lane q = bits below L): v[i]
// summed over the lanes lands in v[i - q V / L] of lane q, for the V / L
// entries of lane q's range. Each level keeps one half (lanes with bit W:
// the upper) and adds the partner's copy of it; W is a template argument so
// that every index is a constant and v stays in registers.
template <int L, int V, int W = L / 2, int M = V / 2>
__device__ __forceinline__ void reduce_scatter(float (&v)[V], int q) {
  if constexpr (W >= 1) {
    const bool hi = (q & W) != 0;
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const float send = hi ? v[i] : v[i + M];
      const float keep = hi ? v[i + M] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, W);
    }
    reduce_scatter<L, V, W / 2, M / 2>(v, q);
  }
}

__device__ __forceinline__ float4 row4(const float* row, int k) {
  return reinterpret_cast<const float4*>(row)[k];
}

// The lane's states: A = -exp(A_log) and A log2 e (0 for states past N or
// a channel past I: no decay, and their inputs are 0).
template <int S>
struct Lane {
  float A[S], A2[S];
  __device__ Lane(const P2& p, int d, int q, bool live) {
#pragma unroll
    for (int j = 0; j < S; ++j) {
      const int n = q * S + j;
      A[j] = live && n < p.N ? -expf(ld(p.A_log, p.a_dt, static_cast<long long>(d) * p.N + n))
                             : 0.f;
      A2[j] = A[j] * kLog2e;
    }
  }
};

// Stage role of a thread: channel fc of the block and steps fw kSteps ..
// fw kSteps + kSteps - 1 of a group (a warp covers whole rows of kCh
// channels: coalesced); and its share of the group's [step][state] tiles,
// elements tid + 128 m of the group's G N (tile positions fixed, computed
// once).
template <class Cf>
struct Stage {
  int fc, fw, fd;
  bool flive;
  float bias;
  int bc_at[Cf::kBCFetch];  // tile position, -1 past G N
  __device__ Stage(const P2& p, int d0) {
    const int tid = threadIdx.x;
    fc = tid % Cf::kCh;
    fw = tid / Cf::kCh;
    fd = d0 + fc;
    flive = fd < p.I;
    bias = flive ? ld(p.bias, p.b_dt, fd) : 0.f;
#pragma unroll
    for (int m = 0; m < Cf::kBCFetch; ++m) {
      const int k = tid + kThreads * m;
      bc_at[m] = k < kGroup * p.N ? (k / p.N) * Cf::kNP + k % p.N : -1;
    }
  }
  // The first step of this thread's share of the group at t0.
  __device__ int step0(int t0) const { return t0 + fw * Cf::kSteps; }
  // Element (step0, fd) of a [B, T, I] tensor; step0 + i is i I further.
  __device__ long long elem0(const P2& p, int b, int t0) const {
    return (static_cast<long long>(b) * p.T + step0(t0)) * p.I + fd;
  }
  // All kSteps elements exist (the common case: no per-element checks).
  __device__ bool full(const P2& p, int t0) const {
    return flive && step0(t0) + Cf::kSteps <= p.T;
  }
};

// One group's raw inputs (registers, fetched a group ahead).
template <class Cf>
struct Fetch {
  float raw[Cf::kSteps], u[Cf::kSteps], z[Cf::kSteps], x[Cf::kSteps];  // x: dy
  float B[Cf::kBCFetch], C[Cf::kBCFetch];
};

// The group at t0: delta (+ bias; -inf past T or I), u, B, and with kZ z,
// with kX x (dy), with kC C. Unused fields are left alone.
template <class Cf, class T, bool kZ, bool kX, bool kC>
__device__ __forceinline__ void fetch(Fetch<Cf>& f, const Stage<Cf>& st, const P2& p, int b,
                                      int t0, const T* u, const T* delta, const T* z,
                                      const T* x, const T* Bm, const T* Cm) {
  const long long e0 = st.elem0(p, b, t0);
  const T *pu = u + e0, *pd = delta + e0, *pz = z + e0, *px = x + e0;
  if (st.full(p, t0)) {
#pragma unroll
    for (int i = 0; i < Cf::kSteps; ++i) {
      f.raw[i] = to_f(pd[i * p.I]) + st.bias;
      f.u[i] = to_f(pu[i * p.I]);
      if constexpr (kZ) f.z[i] = to_f(pz[i * p.I]);
      if constexpr (kX) f.x[i] = to_f(px[i * p.I]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < Cf::kSteps; ++i) {
      const bool ok = st.flive && st.step0(t0) + i < p.T;
      f.raw[i] = ok ? to_f(pd[i * p.I]) + st.bias : -INFINITY;
      f.u[i] = ok ? to_f(pu[i * p.I]) : 0.f;
      if constexpr (kZ) f.z[i] = ok ? to_f(pz[i * p.I]) : 0.f;
      if constexpr (kX) f.x[i] = ok ? to_f(px[i * p.I]) : 0.f;
    }
  }
  // B / C: the group's [step][N] elements tid + 128 m, those of steps < T.
  const int steps = p.T - t0 < kGroup ? p.T - t0 : kGroup;
  const int lim = steps * p.N;
  const long long e = (static_cast<long long>(b) * p.T + t0) * p.N + threadIdx.x;
#pragma unroll
  for (int m = 0; m < Cf::kBCFetch; ++m) {
    const bool ok = static_cast<int>(threadIdx.x) + kThreads * m < lim;
    f.B[m] = ok ? to_f(Bm[e + kThreads * m]) : 0.f;
    if constexpr (kC) f.C[m] = ok ? to_f(Cm[e + kThreads * m]) : 0.f;
  }
}

// Stores v[i] at (step0 + i, fd) of out, for the steps < T.
template <class Cf, class T>
__device__ __forceinline__ void store_share(const Stage<Cf>& st, const P2& p, int b, int t0,
                                            const float (&v)[Cf::kSteps], T* out) {
  T* po = out + st.elem0(p, b, t0);
  const bool full = st.full(p, t0);
#pragma unroll
  for (int i = 0; i < Cf::kSteps; ++i) {
    if (full || (st.flive && st.step0(t0) + i < p.T)) po[i * p.I] = from_f<T>(v[i]);
  }
}

template <class Cf>
__device__ __forceinline__ void stash_bc(const Fetch<Cf>& f, const Stage<Cf>& st, float* sB,
                                         float* sC) {
#pragma unroll
  for (int m = 0; m < Cf::kBCFetch; ++m) {
    if (st.bc_at[m] >= 0) {
      sB[st.bc_at[m]] = f.B[m];
      if (sC) sC[st.bc_at[m]] = f.C[m];
    }
  }
}

// Zeroes the padding states N .. kNP - 1 of the B and C tiles (never written
// by a stash) of both stage buffers: tiles at bc, bc + kBC and buf_stride on.
template <class Cf>
__device__ __forceinline__ void zero_padding(float* bc, int buf_stride, int N) {
  if (N == Cf::kNP) return;
  for (int k = threadIdx.x; k < 4 * Cf::kBC; k += kThreads) {
    const int tile = k / Cf::kBC, r = k % Cf::kBC;
    if (r % Cf::kNP >= N) bc[(tile / 2) * buf_stride + (tile % 2) * Cf::kBC + r] = 0.f;
  }
}

// ---- segments over time (cuda_mamba_scan_seg.cu; header comment above)
// Segment s of n holds checkpoint chunks [s nchunks / n, (s + 1) nchunks / n)
// (n <= nchunks: none empty). carry / sumdt: scratch the launcher sizes
// [B, I, n, N] and [B, I, n] f32; unused (null) when n == 1.
struct Seg {
  int n = 1;
  int nchunks = 1;
  float* carry = nullptr;  // forward: local end states; backward: local start adjoints
  float* sumdt = nullptr;  // sum of dt over the segment, per (b, channel)
};
__host__ __device__ __forceinline__ int seg_chunk0(const Seg& sg, int s) {
  return static_cast<int>(static_cast<long long>(s) * sg.nchunks / sg.n);
}

// The carry into a segment from the local results of segments k0, k0 + dk,
// .. (excluding k1), in order: v = exp(A sumdt_k) v + carry_k, since a
// segment's decay is exp(A sum dt) for its linear recurrence (forward:
// v = h entering the segment; backward: v = dL/dh through the next
// segment's first step). v starts at 0.
template <int S>
__device__ __forceinline__ void seg_combine(const Seg& sg, const Lane<S>& ln, long long row, int N,
                                            int q, bool live, int k0, int k1, int dk,
                                            float (&v)[S]) {
#pragma unroll
  for (int j = 0; j < S; ++j) v[j] = 0.f;
  if (!live) return;
  for (int k = k0; k != k1; k += dk) {
    const float sd = sg.sumdt[row * sg.n + k];
    const float* cr = sg.carry + (row * sg.n + k) * N + q * S;
#pragma unroll
    for (int j = 0; j < S; ++j) {
      if (q * S + j < N) v[j] = fmaf(ex2(sd * ln.A2[j]), v[j], cr[j]);
    }
  }
}

// ---- host helpers
// EL_MAMBA_SCAN_CHUNK (16, 32, 64, 128; default 128, anything else too):
// this design's checkpoint interval in steps. Read once.
inline int64_t chunk_from_env() {
  static const int64_t v = [] {
    const char* e = std::getenv("EL_MAMBA_SCAN_CHUNK");
    const int64_t c = e ? std::atoll(e) : 0;
    return c == 16 || c == 32 || c == 64 ? c : int64_t{kMaxChunkGroups * kGroup};
  }();
  return v;
}

inline P2 params(const Tensor& u, const Tensor& A_log, const Tensor& D, const Tensor& bias) {
  return P2{A_log.data<void>(),         A_log.dtype(),
            D.data<void>(),             D.dtype(),
            bias.data<void>(),          bias.dtype(),
            static_cast<int>(u.dim(1)), static_cast<int>(u.dim(2)),
            static_cast<int>(A_log.dim(1)), static_cast<int>(chunk_from_env() / kGroup), false};
}

// Lanes per channel and states per lane for N states (N <= 256).
template <class F>
void with_cfg(int N, F&& f) {
  if (N <= 8) {
    f(Cfg<8, 1>{});
  } else if (N <= 16) {
    f(Cfg<8, 2>{});
  } else if (N <= 32) {
    f(Cfg<8, 4>{});
  } else if (N <= 64) {
    f(Cfg<8, 8>{});
  } else if (N <= 128) {
    f(Cfg<16, 8>{});
  } else {
    f(Cfg<16, 16>{});
  }
}

// Resident blocks per SM of kKernel with `smem` bytes of dynamic shared
// memory (at least 1), asked once per kernel (after its opt-in).
template <auto kKernel>
int resident_blocks(size_t smem) {
  static const int n = [smem] {
    allow_dynamic_smem(kKernel, smem);
    int r = 0;
    EL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&r, kKernel, kThreads, smem));
    return r > 0 ? r : 1;
  }();
  return n;
}

// ---- segments (cuda_mamba_scan_seg.cu)
// Relative cost per step of the state-only pass against the full one
// (forward: ~4 of ~11 instructions per state and step plus its staging;
// backward: ~4 of ~33): the heuristic's `overhead`.
constexpr double kFwdSegOverhead = 0.4;
constexpr double kBwdSegOverhead = 0.15;
// Segments for a grid of `base` blocks (channel blocks x batch) of a kernel
// with per_sm resident blocks per SM, over nchunks checkpoint chunks:
// EL_MAMBA_SCAN_SEGMENTS (0 off, N forced, clamped to nchunks) or the
// heuristic (there).
int pick_segments(long long base, int per_sm, int nchunks, double overhead);
// What mamba::scan_last_segments() reports (benchmarks).
void record_segments(bool backward, int n);
// Scratch for sg.n segments (sg.carry, sg.sumdt set; [B, I, n, N + 1] f32);
// keep the tensor until the kernels using it are queued.
Tensor seg_scratch(int64_t Bn, const P2& p, Seg& sg, const Device& dev);
// Pass 1 of the forward: local end states and dt sums of segments 0 .. n - 2.
void seg_forward_local(const P2& p, const Seg& sg, const Tensor& u, const Tensor& delta,
                       const Tensor& B);
// Pass 1 of the backward: local start adjoints and dt sums of segments 1 .. n - 1.
void seg_backward_local(const P2& p, const Seg& sg, const Tensor& dy, const Tensor& delta,
                        const Tensor& z, const Tensor& C);

}  // namespace el::cuda::scan2
