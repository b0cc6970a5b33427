// cuda_mamba_scan_v2.cu — the forward kernel of the fused selective scan
// (cuda_mamba_scan_v2.cuh describes the design) and its entry points
// scan_v2_chunk / scan_v2_forward (cuda_mamba.cuh).
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_mamba_scan_v2.cuh"

namespace el::cuda::scan2 {
namespace {

// ======================================================================
// Forward.
// Stage buffer (floats): dt, dt u, D u, silu(z) [channel][step] tiles, then B,
// C [step][state] tiles. After the two buffers, two y staging tiles.
// Block (channel block, b, segment blockIdx.z of sg): the segment's steps
// from the carry of the segments before it (sg.n == 1: all of T from 0 or
// from `state`; kState runs unsegmented).
template <class T, int L, int S, bool kState>
__global__ void __launch_bounds__(kThreads)
    scan_fwd2_kernel(P2 p, Seg sg, const T* __restrict__ u, const T* __restrict__ delta,
                     const T* __restrict__ Bm, const T* __restrict__ Cm, const T* __restrict__ z,
                     const int32_t* __restrict__ last, float* state, T* __restrict__ y,
                     float* __restrict__ ckpt) {
  using Cf = Cfg<L, S>;
  constexpr int kCh = Cf::kCh, kTile = Cf::kTile, kSteps = Cf::kSteps, kBuf = Cf::kFwdBuf;
  extern __shared__ float4 smem4[];
  float* sm = reinterpret_cast<float*>(smem4);
  float* s_y = sm + 2 * kBuf;
  const int tid = threadIdx.x, c = tid / L, q = tid % L;
  const int b = blockIdx.y, d0 = blockIdx.x * kCh, d = d0 + c;
  const bool live = d < p.I;
  const Lane<S> ln(p, d, q, live);
  const Stage<Cf> st(p, d0);
  const float Df = st.flive ? ld(p.D, p.d_dt, st.fd) : 0.f;  // the stage channel's D
  const long long row = static_cast<long long>(b) * p.I + d;
  const int seg = blockIdx.z;
  float h[S], hsave[S];
  if (!kState && seg > 0) seg_combine(sg, ln, row, p.N, q, live, 0, seg, 1, h);
#pragma unroll
  for (int j = 0; j < S; ++j) {
    const int n = q * S + j;
    if (kState || seg == 0) h[j] = kState && live && n < p.N ? state[row * p.N + n] : 0.f;
    hsave[j] = h[j];
  }
  const int stop = kState ? (last ? last[b] : p.T - 1) : -1;
  const int ngroups = (p.T + kGroup - 1) / kGroup;
  const int nchunks = (ngroups + p.cg - 1) / p.cg;
  // This segment's groups [g_lo, g_hi) (whole chunks; the last may be short).
  const int c_lo = seg_chunk0(sg, seg);
  const int g_lo = c_lo * p.cg;
  const int g_hi = min(ngroups, seg_chunk0(sg, seg + 1) * p.cg);
  zero_padding<Cf>(sm + 4 * kTile, kBuf, p.N);
  auto stash = [&](const Fetch<Cf>& f, float* buf) {
    float dt[kSteps], dtu[kSteps], du[kSteps], g[kSteps];
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      dt[i] = softplus_fast(f.raw[i]);
      dtu[i] = dt[i] * f.u[i];
      du[i] = Df * f.u[i];
      g[i] = f.z[i] * sigmoid_fast(f.z[i]);
    }
    const int at = st.fc * kRow + st.fw * kSteps;
    store_vec(buf + at, dt);
    store_vec(buf + kTile + at, dtu);
    store_vec(buf + 2 * kTile + at, du);
    store_vec(buf + 3 * kTile + at, g);
    stash_bc(f, st, buf + 4 * kTile, buf + 4 * kTile + Cf::kBC);
  };
  int next_ckpt = g_lo, chunk = c_lo;
  Fetch<Cf> f;  // (fetch's x argument is unused here: z stands in, never read)
  fetch<Cf, T, true, false, true>(f, st, p, b, g_lo * kGroup, u, delta, z, z, Bm, Cm);
  stash(f, sm);
  if (g_lo + 1 < g_hi) {
    fetch<Cf, T, true, false, true>(f, st, p, b, (g_lo + 1) * kGroup, u, delta, z, z, Bm, Cm);
  }
  __syncthreads();
  // (buffers by gi = g - g_lo: parity from 0, as in an unsegmented run)
  for (int gi = 0, g = g_lo; g < g_hi; ++gi, ++g) {
    const int t0 = g * kGroup;
    const float* buf = sm + (gi & 1) * kBuf;
    if (ckpt && g == next_ckpt) {  // the state before chunk `chunk`
      float* out = ckpt + (row * nchunks + chunk) * p.N + q * S;
#pragma unroll
      for (int j = 0; j < S; ++j) {
        if (live && q * S + j < p.N) out[j] = h[j];
      }
      next_ckpt += p.cg;
      ++chunk;
    }
    const float* dt_row = buf + c * kRow;
    const float* dtu_row = buf + kTile + c * kRow;
    const float* sB = buf + 4 * kTile + q * S;
    const float* sC = sB + Cf::kBC;
    float part[kGroup];
#pragma unroll
    for (int k = 0; k < kGroup / 4; ++k) {
      const float4 dt4 = row4(dt_row, k), dtu4 = row4(dtu_row, k);
      const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
      const float dtuv[4] = {dtu4.x, dtu4.y, dtu4.z, dtu4.w};
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int t = 4 * k + r;
        float Bv[S], Cv[S];
        load_vec(sB + t * Cf::kNP, Bv);
        load_vec(sC + t * Cf::kNP, Cv);
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < S; ++j) {
          const float a = ex2(dtv[r] * ln.A2[j]);
          h[j] = fmaf(a, h[j], Bv[j] * dtuv[r]);
          acc = fmaf(Cv[j], h[j], acc);
        }
        if constexpr (kState) {
          if (t0 + t == stop) {
#pragma unroll
            for (int j = 0; j < S; ++j) hsave[j] = h[j];
          }
        }
        part[t] = acc;
      }
    }
    reduce_scatter<L>(part, q);  // part[i]: C . h at step t0 + q kSteps + i
    {
      float du[kSteps], gz[kSteps], yv[kSteps];
      load_vec(buf + 2 * kTile + c * kRow + q * kSteps, du);
      load_vec(buf + 3 * kTile + c * kRow + q * kSteps, gz);
#pragma unroll
      for (int i = 0; i < kSteps; ++i) yv[i] = (part[i] + du[i]) * gz[i];
      store_vec(s_y + (gi & 1) * kTile + c * kRow + q * kSteps, yv);
    }
    if (g + 1 < g_hi) {
      stash(f, sm + ((gi + 1) & 1) * kBuf);
      if (g + 2 < g_hi) {
        fetch<Cf, T, true, false, true>(f, st, p, b, t0 + 2 * kGroup, u, delta, z, z, Bm, Cm);
      }
    }
    __syncthreads();
    {
      float yv[kSteps];
      load_vec(s_y + (gi & 1) * kTile + st.fc * kRow + st.fw * kSteps, yv);
      store_share(st, p, b, t0, yv, y);
    }
  }
  if constexpr (kState) {
#pragma unroll
    for (int j = 0; j < S; ++j) {
      const int n = q * S + j;
      if (live && n < p.N) state[row * p.N + n] = hsave[j];
    }
  }
}

}  // namespace
}  // namespace el::cuda::scan2

// ---- host side
namespace el::cuda::mamba {

int64_t scan_v2_chunk() { return scan2::chunk_from_env(); }

void scan_v2_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                     const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                     const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints) {
  using namespace scan2;
  const P2 p = params(u, A_log, D, delta_bias);
  const cudaStream_t stream = ctx().stream;
  const int64_t Bn = u.dim(0);
  with_cfg(p.N, [&](auto cf) {
    using Cf = decltype(cf);
    const int cblocks = (p.I + Cf::kCh - 1) / Cf::kCh;
    const size_t smem = Cf::kFwdSmem * sizeof(float);
    Seg sg;
    sg.nchunks = (p.T + p.cg * kGroup - 1) / (p.cg * kGroup);
    Tensor scratch;  // segment carries, alive until the kernels are queued
    EL_DISPATCH_FLOAT(u.dtype(), T_, ({
      auto kernel = state.defined() ? scan_fwd2_kernel<T_, Cf::L, Cf::S, true>
                                    : scan_fwd2_kernel<T_, Cf::L, Cf::S, false>;
      allow_dynamic_smem(kernel, smem);
      if (!state.defined()) {  // (the generation form runs unsegmented)
        sg.n = pick_segments(static_cast<long long>(cblocks) * Bn,
                             resident_blocks<scan_fwd2_kernel<T_, Cf::L, Cf::S, false>>(smem), sg.nchunks, kFwdSegOverhead);
        record_segments(false, sg.n);
      }
      if (sg.n > 1) {
        scratch = seg_scratch(Bn, p, sg, u.device());
        seg_forward_local(p, sg, u, delta, B);
      }
      const dim3 grid(static_cast<unsigned>(cblocks), static_cast<unsigned>(Bn),
                      static_cast<unsigned>(sg.n));
      kernel<<<grid, kThreads, smem, stream>>>(
          p, sg, u.data<T_>(), delta.data<T_>(), B.data<T_>(), C.data<T_>(), z.data<T_>(),
          last.defined() ? last.data<int32_t>() : nullptr,
          state.defined() ? state.data<float>() : nullptr, y.data<T_>(),
          checkpoints.defined() ? checkpoints.data<float>() : nullptr);
    }));
  });
  check_launch("cuda mamba_scan_forward (v2)");
}

}  // namespace el::cuda::mamba
