// cuda_mamba_scan_seg.cu — the state-only passes of the segmented scan (the
// second design's parallelism over time; cuda_mamba_scan_v2.cuh "Segments"
// explains the algebra and the switch) and the segment count heuristic.
//  * seg_fwd_local_kernel: per (channel block, b, segment s < n - 1), the
//    segment's steps forward from h = 0, keeping only h (no C . h, no y):
//    its end state and the sum of dt over it, per channel.
//  * seg_bwd_local_kernel: per (channel block, b, segment s > 0), the
//    adjoint dh walked back through the segment from 0 (no states, no
//    gradients): dh at its start, and the sum of dt.
// The full kernels (scan_fwd2_kernel, scan_bwd2_kernel) then start each
// segment from the combined carries of the others (seg_combine).
#include <algorithm>
#include <cmath>

#include "cuda/cuda_kernels.h"
#include "cuda/cuda_mamba_scan_v2.cuh"

namespace el::cuda::scan2 {
namespace {

// Most segments the heuristic picks: the carries combine in O(n) per block.
constexpr int kMaxSegments = 64;

// The group at t0: delta (+ bias; -inf past T or I, so dt = 0 there), one or
// two [B, T, I] tensors into f.u and f.x (v1, v2; v2 only with kTwo) and the
// [B, T, N] tensor bc into f.B. Like fetch() in the header, without the
// tensors these passes never read.
template <class Cf, class T, bool kTwo>
__device__ __forceinline__ void fetch_local(Fetch<Cf>& f, const Stage<Cf>& st, const P2& p, int b,
                                            int t0, const T* delta, const T* v1, const T* v2,
                                            const T* bc) {
  const long long e0 = st.elem0(p, b, t0);
  const T *pd = delta + e0, *p1 = v1 + e0, *p2 = v2 + e0;
  const bool full = st.full(p, t0);
#pragma unroll
  for (int i = 0; i < Cf::kSteps; ++i) {
    const bool ok = full || (st.flive && st.step0(t0) + i < p.T);
    f.raw[i] = ok ? to_f(pd[i * p.I]) + st.bias : -INFINITY;
    f.u[i] = ok ? to_f(p1[i * p.I]) : 0.f;
    if constexpr (kTwo) f.x[i] = ok ? to_f(p2[i * p.I]) : 0.f;
  }
  const int steps = p.T - t0 < kGroup ? p.T - t0 : kGroup;
  const int lim = steps * p.N;
  const long long e = (static_cast<long long>(b) * p.T + t0) * p.N + threadIdx.x;
#pragma unroll
  for (int m = 0; m < Cf::kBCFetch; ++m) {
    const bool ok = static_cast<int>(threadIdx.x) + kThreads * m < lim;
    f.B[m] = ok ? to_f(bc[e + kThreads * m]) : 0.f;
  }
}

// Shared memory of both passes (floats): two stage buffers of two
// [channel][step] tiles (dt and dt u, or dt and gy) and one [step][state]
// tile (B or C), then the per-channel sums of dt.
template <class Cf>
struct LocalSmem {
  static constexpr int kBuf = 2 * Cf::kTile + Cf::kBC;
  static constexpr int kFloats = 2 * kBuf + Cf::kCh;
};

// Zeroes the padding states N .. kNP - 1 of both buffers' [step][state]
// tiles (a stash never writes them) and the dt sums.
template <class Cf>
__device__ __forceinline__ void local_init(float* sm, int N) {
  constexpr int kBuf = LocalSmem<Cf>::kBuf;
  for (int k = threadIdx.x; k < 2 * Cf::kBC; k += kThreads) {
    if ((k % Cf::kBC) % Cf::kNP >= N) sm[(k / Cf::kBC) * kBuf + 2 * Cf::kTile + k % Cf::kBC] = 0.f;
  }
  if (threadIdx.x < Cf::kCh) sm[2 * kBuf + threadIdx.x] = 0.f;
}

// Writes the lane's v (the segment's local carry) and, after summing the
// stage threads' dt over the channel, the channel's sum of dt.
template <class Cf, int S>
__device__ __forceinline__ void local_finish(float* sm, const Stage<Cf>& st, const Seg& sg,
                                             const P2& p, long long row, int seg, int q, bool live,
                                             float sdt, const float (&v)[S]) {
  float* s_sum = sm + 2 * LocalSmem<Cf>::kBuf;
  atomicAdd(&s_sum[st.fc], sdt);
  __syncthreads();
  if (!live) return;
  float* out = sg.carry + (row * sg.n + seg) * p.N + q * S;
#pragma unroll
  for (int j = 0; j < S; ++j) {
    if (q * S + j < p.N) out[j] = v[j];
  }
  if (q == 0) sg.sumdt[row * sg.n + seg] = s_sum[threadIdx.x / Cf::L];
}

// What a block of either state-only pass works on: lane (c, q) of channel
// d = blockIdx.x kCh + c in batch row b, segment seg's groups [g_lo, g_hi).
template <class Cf>
struct LocalBlock {
  int c, q, b, seg, g_lo, g_hi;
  bool live;
  long long row;  // b I + d
  Lane<Cf::S> ln;
  Stage<Cf> st;
  __device__ LocalBlock(const P2& p, const Seg& sg, int segment)
      : c(threadIdx.x / Cf::L),
        q(threadIdx.x % Cf::L),
        b(blockIdx.y),
        seg(segment),
        g_lo(seg_chunk0(sg, segment) * p.cg),
        g_hi(min((p.T + kGroup - 1) / kGroup, seg_chunk0(sg, segment + 1) * p.cg)),
        live(static_cast<int>(blockIdx.x) * Cf::kCh + c < p.I),
        row(static_cast<long long>(b) * p.I + blockIdx.x * Cf::kCh + c),
        ln(p, blockIdx.x * Cf::kCh + c, q, live),
        st(p, blockIdx.x * Cf::kCh) {}
};

template <class T, int L, int S>
__global__ void __launch_bounds__(kThreads)
    seg_fwd_local_kernel(P2 p, Seg sg, const T* __restrict__ u, const T* __restrict__ delta,
                         const T* __restrict__ Bm) {
  using Cf = Cfg<L, S>;
  constexpr int kTile = Cf::kTile, kSteps = Cf::kSteps, kBuf = LocalSmem<Cf>::kBuf;
  __shared__ float4 smem4[(LocalSmem<Cf>::kFloats + 3) / 4];
  float* sm = reinterpret_cast<float*>(smem4);
  const LocalBlock<Cf> lb(p, sg, blockIdx.z);
  const int c = lb.c, q = lb.q, b = lb.b, seg = lb.seg, g_lo = lb.g_lo, g_hi = lb.g_hi;
  const bool live = lb.live;
  const long long row = lb.row;
  const Lane<S>& ln = lb.ln;
  const Stage<Cf>& st = lb.st;
  local_init<Cf>(sm, p.N);
  float h[S], sdt = 0.f;
#pragma unroll
  for (int j = 0; j < S; ++j) h[j] = 0.f;
  auto stash = [&](const Fetch<Cf>& f, float* buf) {
    float dt[kSteps], dtu[kSteps];
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      dt[i] = softplus_fast(f.raw[i]);
      dtu[i] = dt[i] * f.u[i];
      sdt += dt[i];
    }
    const int at = st.fc * kRow + st.fw * kSteps;
    store_vec(buf + at, dt);
    store_vec(buf + kTile + at, dtu);
    stash_bc(f, st, buf + 2 * kTile, static_cast<float*>(nullptr));
  };
  Fetch<Cf> f;
  fetch_local<Cf, T, false>(f, st, p, b, g_lo * kGroup, delta, u, u, Bm);
  stash(f, sm + (g_lo & 1) * kBuf);
  if (g_lo + 1 < g_hi) fetch_local<Cf, T, false>(f, st, p, b, (g_lo + 1) * kGroup, delta, u, u, Bm);
  __syncthreads();
  for (int g = g_lo; g < g_hi; ++g) {
    const float* buf = sm + (g & 1) * kBuf;
    const float* dt_row = buf + c * kRow;
    const float* dtu_row = buf + kTile + c * kRow;
    const float* sB = buf + 2 * kTile + q * S;
#pragma unroll
    for (int k = 0; k < kGroup / 4; ++k) {
      const float4 dt4 = row4(dt_row, k), dtu4 = row4(dtu_row, k);
      const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
      const float dtuv[4] = {dtu4.x, dtu4.y, dtu4.z, dtu4.w};
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float Bv[S];
        load_vec(sB + (4 * k + r) * Cf::kNP, Bv);
#pragma unroll
        for (int j = 0; j < S; ++j) h[j] = fmaf(ex2(dtv[r] * ln.A2[j]), h[j], Bv[j] * dtuv[r]);
      }
    }
    if (g + 1 < g_hi) {
      stash(f, sm + ((g + 1) & 1) * kBuf);
      if (g + 2 < g_hi) {
        fetch_local<Cf, T, false>(f, st, p, b, (g + 2) * kGroup, delta, u, u, Bm);
      }
    }
    __syncthreads();
  }
  local_finish<Cf>(sm, st, sg, p, row, seg, q, live, sdt, h);
}

// Segment blockIdx.z + 1: segment 0's local adjoint is never needed.
template <class T, int L, int S>
__global__ void __launch_bounds__(kThreads)
    seg_bwd_local_kernel(P2 p, Seg sg, const T* __restrict__ dy, const T* __restrict__ delta,
                         const T* __restrict__ z, const T* __restrict__ Cm) {
  using Cf = Cfg<L, S>;
  constexpr int kTile = Cf::kTile, kSteps = Cf::kSteps, kBuf = LocalSmem<Cf>::kBuf;
  __shared__ float4 smem4[(LocalSmem<Cf>::kFloats + 3) / 4];
  float* sm = reinterpret_cast<float*>(smem4);
  const LocalBlock<Cf> lb(p, sg, blockIdx.z + 1);
  const int c = lb.c, q = lb.q, b = lb.b, seg = lb.seg, g_lo = lb.g_lo, g_hi = lb.g_hi;
  const bool live = lb.live;
  const long long row = lb.row;
  const Lane<S>& ln = lb.ln;
  const Stage<Cf>& st = lb.st;
  local_init<Cf>(sm, p.N);
  float dh[S], sdt = 0.f;
#pragma unroll
  for (int j = 0; j < S; ++j) dh[j] = 0.f;
  // gy = dy silu(z), as the backward kernel's stash computes it.
  auto stash = [&](const Fetch<Cf>& f, float* buf) {
    float dt[kSteps], gy[kSteps];
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      dt[i] = softplus_fast(f.raw[i]);
      gy[i] = f.x[i] * f.u[i] * sigmoid_fast(f.u[i]);
      sdt += dt[i];
    }
    const int at = st.fc * kRow + st.fw * kSteps;
    store_vec(buf + at, dt);
    store_vec(buf + kTile + at, gy);
    stash_bc(f, st, buf + 2 * kTile, static_cast<float*>(nullptr));
  };
  Fetch<Cf> f;  // u <- z, x <- dy, B <- C
  fetch_local<Cf, T, true>(f, st, p, b, (g_hi - 1) * kGroup, delta, z, dy, Cm);
  stash(f, sm + ((g_hi - 1) & 1) * kBuf);
  if (g_hi - 2 >= g_lo) fetch_local<Cf, T, true>(f, st, p, b, (g_hi - 2) * kGroup, delta, z, dy, Cm);
  __syncthreads();
  for (int g = g_hi - 1; g >= g_lo; --g) {
    const float* buf = sm + (g & 1) * kBuf;
    const float* dt_row = buf + c * kRow;
    const float* gy_row = buf + kTile + c * kRow;
    const float* sC = buf + 2 * kTile + q * S;
    // dL/dh_t = dh + gy_t C_t; through h_t to h_{t - 1}: times a_t.
#pragma unroll
    for (int k = kGroup / 4 - 1; k >= 0; --k) {
      const float4 dt4 = row4(dt_row, k), gy4 = row4(gy_row, k);
      const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
      const float gyv[4] = {gy4.x, gy4.y, gy4.z, gy4.w};
#pragma unroll
      for (int r = 3; r >= 0; --r) {
        float Cv[S];
        load_vec(sC + (4 * k + r) * Cf::kNP, Cv);
#pragma unroll
        for (int j = 0; j < S; ++j) dh[j] = fmaf(gyv[r], Cv[j], dh[j]) * ex2(dtv[r] * ln.A2[j]);
      }
    }
    if (g - 1 >= g_lo) {
      stash(f, sm + ((g - 1) & 1) * kBuf);
      if (g - 2 >= g_lo) {
        fetch_local<Cf, T, true>(f, st, p, b, (g - 2) * kGroup, delta, z, dy, Cm);
      }
    }
    __syncthreads();
  }
  local_finish<Cf>(sm, st, sg, p, row, seg, q, live, sdt, dh);
}

// EL_MAMBA_SCAN_SEGMENTS: unset (or not a number) -1 = auto, 0 = off, N > 0
// = N. Read once; scan_set_segments() overrides it (tests).
int& segments_setting() {
  static int v = [] {
    const char* e = std::getenv("EL_MAMBA_SCAN_SEGMENTS");
    if (!e || *e < '0' || *e > '9') return -1;
    return static_cast<int>(std::min<long long>(std::atoll(e), kMaxSegments * 16));  // (bounded)
  }();
  return v;
}

int g_last_segments[2] = {1, 1};  // the last training forward's, backward's n

}  // namespace

void record_segments(bool backward, int n) { g_last_segments[backward ? 1 : 0] = n; }

int pick_segments(long long base, int per_sm, int nchunks, double overhead) {
  const int set = segments_setting();
  if (set == 0 || nchunks <= 1) return 1;
  if (set > 0) return std::min({set, nchunks, kMaxSegments * 16});
  // Latency-bound blocks: a block's time is about its steps whatever shares
  // the SM, so the time goes as (waves of resident blocks) / n, times the
  // state-only pass's extra work (`overhead` of a full pass per step, over
  // (n - 1) / n of T). A larger n must gain 20% over the best so far: the
  // model ignores saturation, and fewer segments do less extra work.
  const double slots = static_cast<double>(std::max(per_sm, 1)) * std::max(ctx().sm_count, 1);
  int best = 1;
  double best_score = std::ceil(static_cast<double>(base) / slots);
  for (int n = 2; n <= std::min(nchunks, kMaxSegments); ++n) {
    const double waves = std::ceil(static_cast<double>(base) * n / slots);
    const double score = waves / n * (1.0 + overhead * (n - 1) / n);
    if (score < 0.8 * best_score) best = n, best_score = score;
  }
  return best;
}

Tensor seg_scratch(int64_t Bn, const P2& p, Seg& sg, const Device& dev) {
  const int64_t rows = Bn * p.I * sg.n;
  Tensor t = Tensor::empty({rows * (p.N + 1)}, DType::f32, dev);
  sg.carry = t.data<float>();
  sg.sumdt = sg.carry + rows * p.N;
  return t;
}

void seg_forward_local(const P2& p, const Seg& sg, const Tensor& u, const Tensor& delta,
                       const Tensor& B) {
  const cudaStream_t stream = ctx().stream;
  with_cfg(p.N, [&](auto cf) {
    using Cf = decltype(cf);
    const dim3 grid(static_cast<unsigned>((p.I + Cf::kCh - 1) / Cf::kCh),
                    static_cast<unsigned>(u.dim(0)), static_cast<unsigned>(sg.n - 1));
    EL_DISPATCH_FLOAT(u.dtype(), T_, ({
      seg_fwd_local_kernel<T_, Cf::L, Cf::S><<<grid, kThreads, 0, stream>>>(
          p, sg, u.data<T_>(), delta.data<T_>(), B.data<T_>());
    }));
  });
  mamba::check_launch("cuda mamba_scan_forward (segment states)");
}

void seg_backward_local(const P2& p, const Seg& sg, const Tensor& dy, const Tensor& delta,
                        const Tensor& z, const Tensor& C) {
  const cudaStream_t stream = ctx().stream;
  with_cfg(p.N, [&](auto cf) {
    using Cf = decltype(cf);
    const dim3 grid(static_cast<unsigned>((p.I + Cf::kCh - 1) / Cf::kCh),
                    static_cast<unsigned>(dy.dim(0)), static_cast<unsigned>(sg.n - 1));
    EL_DISPATCH_FLOAT(dy.dtype(), T_, ({
      seg_bwd_local_kernel<T_, Cf::L, Cf::S><<<grid, kThreads, 0, stream>>>(
          p, sg, dy.data<T_>(), delta.data<T_>(), z.data<T_>(), C.data<T_>());
    }));
  });
  mamba::check_launch("cuda mamba_scan_backward (segment adjoints)");
}

}  // namespace el::cuda::scan2

namespace el::cuda::mamba {

int scan_last_segments(bool backward) { return scan2::g_last_segments[backward ? 1 : 0]; }

int scan_set_segments(int n) {
  int& v = scan2::segments_setting();
  const int old = v;
  v = n < 0 ? -1 : n;
  return old;
}

}  // namespace el::cuda::mamba
