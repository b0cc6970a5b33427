// cuda_mamba_scan_v2_bwd.cu — the backward kernel of the scan's second
// design (cuda_mamba_scan_v2.cuh describes the design; TEMPORARY, see there)
// and its entry point scan_v2_backward (cuda_mamba.cuh).
#include <cstring>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/cuda_mamba_scan_v2.cuh"

namespace el::cuda::scan2 {
namespace {

// ======================================================================
// Backward.
// Jobs of a block, in order: per chunk of its segment (last first) pass 1
// over groups 0 .. ng - 2, then pass 2 over groups ng - 1 .. 0. pass 0:
// none left (the chunk before the segment's first, c_lo).
struct Job {
  int chunk, g, pass;
};
__device__ __forceinline__ int groups_in(int chunk, const P2& p) {
  const int left = p.T - chunk * p.cg * kGroup;
  const int n = (left + kGroup - 1) / kGroup;
  return n < p.cg ? n : p.cg;
}
__device__ __forceinline__ Job first_job(int chunk, int c_lo, const P2& p) {
  if (chunk < c_lo) return Job{chunk, 0, 0};
  return groups_in(chunk, p) > 1 ? Job{chunk, 0, 1} : Job{chunk, 0, 2};
}
__device__ __forceinline__ Job next_job(Job j, int c_lo, const P2& p) {
  if (j.pass == 0) return j;
  const int ng = groups_in(j.chunk, p);
  if (j.pass == 1) return j.g + 2 < ng ? Job{j.chunk, j.g + 1, 1} : Job{j.chunk, ng - 1, 2};
  if (j.g > 0) return Job{j.chunk, j.g - 1, 2};
  return first_job(j.chunk - 1, c_lo, p);
}

// Stage buffer (floats): dt, dt u, gy = dy silu(z), u, dzf = dy silu'(z),
// softplus'(raw) [channel][step] tiles, then B, C [step][state] tiles (pass
// 1 stashes dt, dt u and B only). After the two buffers: the du, ddelta, dz
// staging tiles; R [2][step][kRStride] (dB, dC of one batch of states:
// [channel][lane][SB] per step); H0 [group][thread][S].
// Block (channel block, b, segment blockIdx.z of sg): the segment's chunks,
// from the adjoint carried in from the segments after it; dA_log, dD and
// ddelta_bias get one atomic partial per segment.
// kMinBlocks 3 (the default where it fits: bwd_smem; EL_MAMBA_SCAN_BWD_BLOCKS): registers
// capped for three resident blocks per SM, one R buffer (summed between two
// barriers) so that three blocks' shared memory fits.
template <class T, int L, int S, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    scan_bwd2_kernel(P2 p, Seg sg, const T* __restrict__ dy, const T* __restrict__ u,
                     const T* __restrict__ delta, const T* __restrict__ Bm,
                     const T* __restrict__ Cm, const T* __restrict__ z,
                     const float* __restrict__ ckpt, T* __restrict__ du, T* __restrict__ ddelta,
                     T* __restrict__ dz, float* __restrict__ dA_log, float* __restrict__ dB,
                     float* __restrict__ dC, float* __restrict__ dD,
                     float* __restrict__ dbias) {
  using Cf = Cfg<L, S>;
  constexpr int kCh = Cf::kCh, kTile = Cf::kTile, kSteps = Cf::kSteps, kBuf = Cf::kBwdBuf;
  constexpr int SB = Cf::SB, NB = Cf::NB, kRS = Cf::kRStride, kNP = Cf::kNP;
  extern __shared__ float4 smem4[];
  float* sm = reinterpret_cast<float*>(smem4);
  constexpr int kSPT = Cf::kSlotsPT, kQuads = Cf::kQuads;
  constexpr bool kOverlap = Cf::kRBufs == 2 && kMinBlocks == 1;
  constexpr int kRB = kOverlap ? 2 : 1;  // R buffers
  float* s_out = sm + 2 * kBuf;                            // [2][du, ddelta, dz tiles]
  float* s_H0 = s_out + 6 * kTile;                         // [kMaxChunkGroups][kThreads][S]
  float* s_R = s_H0 + kMaxChunkGroups * kThreads * S;      // [kRBufs][2][kGroup][kRS]
  const int tid = threadIdx.x, c = tid / L, q = tid % L;
  const int b = blockIdx.y, d0 = blockIdx.x * kCh, d = d0 + c;
  const bool live = d < p.I;
  const Lane<S> ln(p, d, q, live);
  const Stage<Cf> st(p, d0);
  const float Dc = live ? ld(p.D, p.d_dt, d) : 0.f;  // the compute lane's channel
  const long long row = static_cast<long long>(b) * p.I + d;
  const int nchunks = (p.T + p.cg * kGroup - 1) / (p.cg * kGroup);
  zero_padding<Cf>(sm + 6 * kTile, kBuf, p.N);
  const int seg = blockIdx.z;
  const int c_lo = seg_chunk0(sg, seg);
  float h[S];  // pass 1: the running state
  float dh[S], dA[S];  // dh: dL/dh_t through h_{t+1} (0 after the last step)
  seg_combine(sg, ln, row, p.N, q, live && seg + 1 < sg.n, sg.n - 1, seg, -1, dh);
#pragma unroll
  for (int j = 0; j < S; ++j) h[j] = dA[j] = 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;

  auto load_ckpt = [&](int chunk, float (&v)[S]) {
#pragma unroll
    for (int j = 0; j < S; ++j) {
      const int n = q * S + j;
      v[j] = live && n < p.N ? ckpt[(row * nchunks + chunk) * p.N + n] : 0.f;
    }
  };
  auto t0_of = [&](const Job& j) { return (j.chunk * p.cg + j.g) * kGroup; };
  auto do_fetch = [&](Fetch<Cf>& f, const Job& j) {
    if (j.pass == 1) {
      fetch<Cf, T, false, false, false>(f, st, p, b, t0_of(j), u, delta, z, dy, Bm, Cm);
    } else {
      fetch<Cf, T, true, true, true>(f, st, p, b, t0_of(j), u, delta, z, dy, Bm, Cm);
    }
  };
  auto stash = [&](const Fetch<Cf>& f, const Job& j, float* buf) {
    const int at = st.fc * kRow + st.fw * kSteps;
    float dt[kSteps], dtu[kSteps];
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      dt[i] = softplus_fast(f.raw[i]);
      dtu[i] = dt[i] * f.u[i];
    }
    store_vec(buf + at, dt);
    store_vec(buf + kTile + at, dtu);
    if (j.pass == 2) {
      float gy[kSteps], dzf[kSteps], sg[kSteps];
#pragma unroll
      for (int i = 0; i < kSteps; ++i) {
        const float zs = sigmoid_fast(f.z[i]);
        gy[i] = f.x[i] * f.z[i] * zs;
        dzf[i] = f.x[i] * zs * fmaf(f.z[i], 1.f - zs, 1.f);
        sg[i] = softplus_grad_fast(f.raw[i]);
        dD_acc = fmaf(gy[i], f.u[i], dD_acc);
      }
      store_vec(buf + 2 * kTile + at, gy);
      store_vec(buf + 3 * kTile + at, f.u);
      store_vec(buf + 4 * kTile + at, dzf);
      store_vec(buf + 5 * kTile + at, sg);
      stash_bc(f, st, buf + 6 * kTile, buf + 6 * kTile + Cf::kBC);
    } else {
      stash_bc(f, st, buf + 6 * kTile, static_cast<float*>(nullptr));
    }
  };
  // dB, dC: R buffer `fill % kRBufs` holds fill's dB, dC (states bb SB .. of
  // every lane, steps of the group at t0); each thread sums kSlotsPT float4
  // slots (value, step, 4 states) over the block's channels and adds them.
  auto R_of = [&](int fill) { return s_R + (fill % kRB) * Cf::kR; };
  auto slot_off = [&](int i) {  // slot i of this thread: its offset in R (-1: none)
    const int slot = tid + kThreads * i;
    if (slot >= Cf::kSlots) return -1;
    const int t = slot % kGroup, n4 = (slot / kGroup) % kQuads, v = slot / (kGroup * kQuads);
    return (v * kGroup + t) * kRS + 4 * n4;
  };
  auto emit = [&](int i, float4 acc, int t0, int bb) {
    const int slot = tid + kThreads * i;
    if (slot >= Cf::kSlots) return;
    const int t = slot % kGroup, n4 = (slot / kGroup) % kQuads, v = slot / (kGroup * kQuads);
    // Position 4 n4 + e of a row is lane (4 n4 + e) / SB's state
    // ((4 n4 + e) / SB) S + bb SB + (4 n4 + e) % SB: four consecutive states.
    const int pos = 4 * n4, n0 = (pos / SB) * S + bb * SB + pos % SB;
    if (t0 + t < p.T && n0 < p.N) {
      float* out = (v ? dC : dB) + (static_cast<long long>(b) * p.T + t0 + t) * p.N + n0;
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // (vector atomics: sm_90 on)
      if (p.vec4) {
        atomicAdd(reinterpret_cast<float4*>(out), acc);
        return;
      }
#endif
      const float a4[4] = {acc.x, acc.y, acc.z, acc.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (n0 + e < p.N) atomicAdd(out + e, a4[e]);
      }
    }
  };
  auto reduce_R = [&](const float* R, int t0, int bb) {  // all at once
#pragma unroll
    for (int i = 0; i < kSPT; ++i) {
      const int off = slot_off(i);
      if (off < 0) continue;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int cc = 0; cc < kCh; ++cc) {
        const float4 x = reinterpret_cast<const float4*>(R + off + cc * L * SB)[0];
        acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
      }
      emit(i, acc, t0, bb);
    }
  };
  // The same spread over a walk's 16 steps (step k: loads k kPerStep ..): the
  // pending fill of the previous group is summed while the next one runs.
  constexpr int kUnits = kSPT * kCh, kPerStep = (kUnits + kGroup - 1) / kGroup;
  int roff[kSPT];
  float4 racc[kSPT];
#pragma unroll
  for (int i = 0; i < kSPT; ++i) roff[i] = slot_off(i);
  auto reduce_step = [&](const float* R, int k) {
#pragma unroll
    for (int uu = k * kPerStep; uu < (k + 1) * kPerStep && uu < kUnits; ++uu) {
      const int i = uu / kCh, cc = uu % kCh;
      if (roff[i] >= 0) {
        const float4 x = reinterpret_cast<const float4*>(R + roff[i] + cc * L * SB)[0];
        racc[i].x += x.x, racc[i].y += x.y, racc[i].z += x.z, racc[i].w += x.w;
      }
    }
  };
  // The fill pending a sum: its number (always fill - 1 when a walk starts,
  // so that the walk's loads never touch the buffer being written), steps
  // and batch (pend_t0 < 0: nothing pending).
  int pend_fill = 1, pend_t0 = -1, pend_bb = 0, fill = 0, p2 = 0;

  Job cur = first_job(seg_chunk0(sg, seg + 1) - 1, c_lo, p);
  Fetch<Cf> f;
  do_fetch(f, cur);
  stash(f, cur, sm);
  Job nxt = next_job(cur, c_lo, p);
  if (nxt.pass != 0) do_fetch(f, nxt);
  __syncthreads();
  for (int jn = 0; cur.pass != 0; ++jn) {
    const int t0 = t0_of(cur);
    const float* buf = sm + (jn & 1) * kBuf;
    const float* dt_row = buf + c * kRow;
    const float* dtu_row = buf + kTile + c * kRow;
    const float* sB = buf + 6 * kTile + q * S;
    const float* sC = sB + Cf::kBC;
    if (cur.pass == 1) {
      // ---- pass 1: this group forward from the running state.
      if (cur.g == 0) load_ckpt(cur.chunk, h);
#pragma unroll
      for (int k = 0; k < kGroup / 4; ++k) {
        const float4 dt4 = row4(dt_row, k), dtu4 = row4(dtu_row, k);
        const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
        const float dtuv[4] = {dtu4.x, dtu4.y, dtu4.z, dtu4.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          float Bv[S];
          load_vec(sB + (4 * k + r) * kNP, Bv);
#pragma unroll
          for (int j = 0; j < S; ++j) {
            h[j] = fmaf(ex2(dtv[r] * ln.A2[j]), h[j], Bv[j] * dtuv[r]);
          }
        }
      }
      store_vec(s_H0 + ((cur.g + 1) * kThreads + tid) * S, h);
    } else {
      // ---- pass 2: recompute the group's states, walk back.
      const float* gy_row = buf + 2 * kTile + c * kRow;
      float h0[S];
      if (cur.g == 0) {
        load_ckpt(cur.chunk, h0);
      } else {
        load_vec(s_H0 + (cur.g * kThreads + tid) * S, h0);
      }
      float part[kGroup], pdu[kGroup], pddt[kGroup];
#pragma unroll
      for (int i = 0; i < kGroup; ++i) part[i] = pdu[i] = pddt[i] = 0.f;
#pragma unroll
      for (int bb = 0; bb < NB; ++bb) {
        float hs[kGroup][SB], as[kGroup][SB];
        {
          float hc[SB];
#pragma unroll
          for (int j = 0; j < SB; ++j) hc[j] = h0[bb * SB + j];
#pragma unroll
          for (int k = 0; k < kGroup / 4; ++k) {
            const float4 dt4 = row4(dt_row, k), dtu4 = row4(dtu_row, k);
            const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
            const float dtuv[4] = {dtu4.x, dtu4.y, dtu4.z, dtu4.w};
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              const int t = 4 * k + r;
              float Bv[SB], Cv[SB];
              load_vec(sB + t * kNP + bb * SB, Bv);
              load_vec(sC + t * kNP + bb * SB, Cv);
              float acc = part[t];
#pragma unroll
              for (int j = 0; j < SB; ++j) {
                const float a = ex2(dtv[r] * ln.A2[bb * SB + j]);
                hc[j] = fmaf(a, hc[j], Bv[j] * dtuv[r]);
                as[t][j] = a;
                hs[t][j] = hc[j];
                acc = fmaf(Cv[j], hc[j], acc);
              }
              part[t] = acc;
            }
          }
        }
        if (bb == NB - 1) reduce_scatter<L>(part, q);  // part[i]: C . h at q kSteps + i
        float* R_dB = R_of(fill);
        float* R_dC = R_dB + kGroup * kRS;
        const float* R_pend = R_of(pend_fill);
        const int r_at = c * L * SB + q * SB;
        if (kOverlap && bb == 0) {
#pragma unroll
          for (int i = 0; i < kSPT; ++i) racc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int k = kGroup / 4 - 1; k >= 0; --k) {
          const float4 dt4 = row4(dt_row, k), dtu4 = row4(dtu_row, k), gy4 = row4(gy_row, k);
          const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
          const float dtuv[4] = {dtu4.x, dtu4.y, dtu4.z, dtu4.w};
          const float gyv[4] = {gy4.x, gy4.y, gy4.z, gy4.w};
#pragma unroll
          for (int r = 3; r >= 0; --r) {
            const int t = 4 * k + r;
            float Bv[SB], Cv[SB], dBv[SB], dCv[SB];
            load_vec(sB + t * kNP + bb * SB, Bv);
            load_vec(sC + t * kNP + bb * SB, Cv);
            float pu = pdu[t], pt = pddt[t];
#pragma unroll
            for (int j = 0; j < SB; ++j) {
              const int jj = bb * SB + j;
              const float prev = t > 0 ? hs[t > 0 ? t - 1 : 0][j] : h0[jj];
              const float dhn = fmaf(gyv[r], Cv[j], dh[jj]);  // dL/dh_t
              dCv[j] = gyv[r] * hs[t][j];
              dBv[j] = dhn * dtuv[r];
              pu = fmaf(dhn, Bv[j], pu);
              dh[jj] = dhn * as[t][j];
              const float w = dh[jj] * prev;  // dL/dh_t a_t h_{t-1}
              pt = fmaf(w, ln.A[jj], pt);
              dA[jj] = fmaf(w, dtv[r], dA[jj]);
            }
            pdu[t] = pu;
            pddt[t] = pt;
            store_vec(R_dB + t * kRS + r_at, dBv);
            store_vec(R_dC + t * kRS + r_at, dCv);
            // (loads of a buffer no one writes now; summed even with nothing
            // pending, then dropped: no branch in the walk)
            if (kOverlap && bb == 0) reduce_step(R_pend, kGroup - 1 - t);
          }
        }
        if (kOverlap && bb == 0 && pend_t0 >= 0) {
#pragma unroll
          for (int i = 0; i < kSPT; ++i) emit(i, racc[i], pend_t0, pend_bb);
          pend_t0 = -1;
        }
        if (bb < NB - 1) {  // sum this batch before the next
          __syncthreads();
          reduce_R(R_of(fill), t0, bb);
          if (!kOverlap) __syncthreads();
        } else {
          pend_fill = fill, pend_t0 = t0, pend_bb = bb;
        }
        ++fill;
      }
      reduce_scatter<L>(pdu, q);
      reduce_scatter<L>(pddt, q);
      {
        // Lane q's steps q kSteps + i: du, ddelta, dz into the staging tiles.
        const int at = c * kRow + q * kSteps;
        float dtv[kSteps], gyv[kSteps], uv[kSteps], dzf[kSteps], sg[kSteps];
        load_vec(buf + at, dtv);
        load_vec(buf + 2 * kTile + at, gyv);
        load_vec(buf + 3 * kTile + at, uv);
        load_vec(buf + 4 * kTile + at, dzf);
        load_vec(buf + 5 * kTile + at, sg);
        float o_du[kSteps], o_dd[kSteps], o_dz[kSteps];
#pragma unroll
        for (int i = 0; i < kSteps; ++i) {
          o_du[i] = fmaf(dtv[i], pdu[i], gyv[i] * Dc);
          o_dd[i] = fmaf(uv[i], pdu[i], pddt[i]) * sg[i];
          o_dz[i] = dzf[i] * fmaf(Dc, uv[i], part[i]);
          dbias_acc += o_dd[i];
        }
        float* o = s_out + (p2 & 1) * 3 * kTile + at;
        store_vec(o, o_du);
        store_vec(o + kTile, o_dd);
        store_vec(o + 2 * kTile, o_dz);
      }
    }
    const Job nn = next_job(nxt, c_lo, p);
    if (nxt.pass != 0) {
      stash(f, nxt, sm + ((jn + 1) & 1) * kBuf);
      if (nn.pass != 0) do_fetch(f, nn);
    }
    __syncthreads();
    if (cur.pass == 2) {
      float o_du[kSteps], o_dd[kSteps], o_dz[kSteps];
      const float* o = s_out + (p2 & 1) * 3 * kTile + st.fc * kRow + st.fw * kSteps;
      load_vec(o, o_du);
      load_vec(o + kTile, o_dd);
      load_vec(o + 2 * kTile, o_dz);
      store_share(st, p, b, t0, o_du, du);
      store_share(st, p, b, t0, o_dd, ddelta);
      store_share(st, p, b, t0, o_dz, dz);
      ++p2;
      // The pending sum waits for the next group's walk unless no pass-2 job
      // follows (or R is single: then it is summed here, and R is free after
      // one more barrier).
      if (!kOverlap || nxt.pass != 2) {
        reduce_R(R_of(pend_fill), pend_t0, pend_bb);
        pend_t0 = -1;
        if (!kOverlap) __syncthreads();
      }
    }
    cur = nxt;
    nxt = nn;
  }
#pragma unroll
  for (int j = 0; j < S; ++j) {  // A = -exp(A_log): dA_log = dA A
    const int n = q * S + j;
    if (live && n < p.N) atomicAdd(&dA_log[static_cast<long long>(d) * p.N + n], dA[j] * ln.A[j]);
  }
#pragma unroll
  for (int w = 1; w < L; w *= 2) dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, w);
  if (live && q == 0) atomicAdd(&dbias[d], dbias_acc);
  if (st.flive) atomicAdd(&dD[st.fd], dD_acc);
}

// Shared memory of the kernel with kMinBlocks (bytes).
template <class Cf, int kMinBlocks>
constexpr size_t bwd_smem() {
  return (kMinBlocks == 1 ? Cf::kBwdSmem : Cf::kBwdFixed + Cf::kR) * sizeof(float);
}
// Three blocks per SM fit where a block takes <= 74 KiB (and the registers
// of the state batches, SB = S <= 2, leave room under 168).
template <class Cf>
constexpr bool kThreeFit = bwd_smem<Cf, 3>() <= 74 * 1024 && Cf::S <= 2;

// EL_MAMBA_SCAN_BWD_BLOCKS: 1 = the kMinBlocks 1 kernel (two R buffers, the
// sum overlapped with the next group's walk); otherwise (default) the
// kMinBlocks 3 kernel where it fits. On an H100 at B 1, T 8192, I 4096, N 16
// three blocks took the backward from 2.24 to 2.05 ms, and mamba-1.5b's 8K
// step from 1.01-1.02x to 1.04x qwen2.5-1.5b's (docs/PERFORMANCE.md). Read
// once.
int bwd_min_blocks() {
  static const int v = [] {
    const char* e = std::getenv("EL_MAMBA_SCAN_BWD_BLOCKS");
    return e && std::strcmp(e, "1") == 0 ? 1 : 3;
  }();
  return v;
}

}  // namespace
}  // namespace el::cuda::scan2

// ---- host side
namespace el::cuda::mamba {

void scan_v2_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A_log,
                      const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                      const Tensor& delta_bias, const Tensor& checkpoints, Tensor& du,
                      Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC, Tensor& dD,
                      Tensor& dz, Tensor& ddelta_bias) {
  using namespace scan2;
  P2 p = params(u, A_log, D, delta_bias);
  p.vec4 = p.N % 4 == 0 && aligned16(dB.raw()) && aligned16(dC.raw());
  const cudaStream_t stream = ctx().stream;
  const int64_t Bn = u.dim(0);
  with_cfg(p.N, [&](auto cf) {
    using Cf = decltype(cf);
    const int cblocks = (p.I + Cf::kCh - 1) / Cf::kCh;
    Seg sg;
    sg.nchunks = (p.T + p.cg * kGroup - 1) / (p.cg * kGroup);
    Tensor scratch;  // segment carries, alive until the kernels are queued
    auto launch = [&](auto min_blocks) {
      constexpr int kMB = decltype(min_blocks)::value;
      const size_t smem = bwd_smem<Cf, kMB>();
      EL_DISPATCH_FLOAT(u.dtype(), T_, ({
        auto kernel = scan_bwd2_kernel<T_, Cf::L, Cf::S, kMB>;
        allow_dynamic_smem(kernel, smem);
        sg.n = pick_segments(static_cast<long long>(cblocks) * Bn,
                             resident_blocks<scan_bwd2_kernel<T_, Cf::L, Cf::S, kMB>>(smem), sg.nchunks,
                             kBwdSegOverhead);
        record_segments(true, sg.n);
        if (sg.n > 1) {
          scratch = seg_scratch(Bn, p, sg, u.device());
          seg_backward_local(p, sg, dy, delta, z, C);
        }
        const dim3 grid(static_cast<unsigned>(cblocks), static_cast<unsigned>(Bn),
                        static_cast<unsigned>(sg.n));
        kernel<<<grid, kThreads, smem, stream>>>(
            p, sg, dy.data<T_>(), u.data<T_>(), delta.data<T_>(), B.data<T_>(), C.data<T_>(),
            z.data<T_>(), checkpoints.data<float>(), du.data<T_>(), ddelta.data<T_>(),
            dz.data<T_>(), dA_log.data<float>(), dB.data<float>(), dC.data<float>(),
            dD.data<float>(), ddelta_bias.data<float>());
      }));
    };
    if constexpr (kThreeFit<Cf>) {
      if (bwd_min_blocks() == 3) {
        launch(std::integral_constant<int, 3>{});
        return;
      }
    }
    launch(std::integral_constant<int, 1>{});
  });
  check_launch("cuda mamba_scan_backward (v2)");
}

}  // namespace el::cuda::mamba
