// attention_simt.cu — the simple (non-tensor-core) attention kernels: f32, and
// bf16/f16 with a head dim other than 64/128 (any D <= 256). Same contract as
// the tensor-core path; f32 arithmetic throughout, accurate expf/logf.
//
// One warp per output row, no T x S storage:
//   forward      warp per query row (b, t, h): lane j scores key j0 + j of a
//                32-key chunk, online softmax over chunks, then each lane adds
//                p_j v_j to the head dims it owns (d = lane + 32 i).
//   backward dQ  warp per query row: recompute p_j, dp_j = dO.v_j and
//                ds_j = p_j (dp_j - Dsum), dq += ds_j k_j.
//   backward dKV warp per key row (b, s, kv head): loops over the group's query
//                heads and the queries that see key s, lane per query, so
//                dk/dv are summed over the group without atomics.
// Query rows (and their scaled copy) live in shared memory as f32; K/V rows
// are read from global memory (L1/L2 catch the reuse between warps).
// ALiBi (a.alibi): each scaled score s of query position i = t + S - T and
// key j gets slope_h * (j - i) before its exp.
#include "cuda/attention_device.cuh"

namespace el::cuda::attn {
namespace {

constexpr int kWarpsPerBlock = 4;

template <typename T>
__device__ __forceinline__ float dot_row(const float* x, const T* y, int D) {
  float s = 0.f;
  for (int d = 0; d < D; ++d) s = fmaf(x[d], to_f32(y[d]), s);
  return s;
}

template <typename T, int kDPL>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) simt_fwd_kernel(const FwdArgs a) {
  __shared__ float sq[kWarpsPerBlock][kDPL * 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + warp;
  if (row >= static_cast<long long>(a.B) * a.T * a.H) return;  // whole warp leaves
  const int D = a.D;
  const int h = static_cast<int>(row % a.H);
  const int t = static_cast<int>((row / a.H) % a.T);
  const int b = static_cast<int>(row / (static_cast<long long>(a.H) * a.T));
  const int kvh = h / (a.H / a.Hkv);
  const T* qr = static_cast<const T*>(a.q) + row * D;
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    sq[warp][d] = d < D ? to_f32(qr[d]) * a.scale : 0.f;
  }
  __syncwarp();
  const int n_vis = a.causal ? min(max(t + a.S - a.T + 1, 0), a.S) : a.S;
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;
  const long long kv_base = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;
  const T* kb = static_cast<const T*>(a.k) + kv_base;
  const T* vb = static_cast<const T*>(a.v) + kv_base;
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  const int qpos = t + a.S - a.T;
  const int j_first = a.window > 0 ? max(0, qpos - a.window + 1) : 0;  // the window's oldest key

  float m = -INFINITY, l = 0.f, acc[kDPL];
#pragma unroll
  for (int i = 0; i < kDPL; ++i) acc[i] = 0.f;
  for (int j0 = j_first; j0 < n_vis; j0 += 32) {
    const int j = j0 + lane;
    const float s = j < n_vis
                        ? fmaf(slope, float(j - qpos), dot_row(sq[warp], kb + j * kv_stride, D))
                        : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));  // finite: key j0 is visible
    const float alpha = expf(m - m_new);
    const float p = j < n_vis ? expf(s - m_new) : 0.f;
    l = l * alpha + warp_sum(p);
#pragma unroll
    for (int i = 0; i < kDPL; ++i) acc[i] *= alpha;
    const int cnt = min(32, n_vis - j0);
    for (int jj = 0; jj < cnt; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const T* vr = vb + (j0 + jj) * kv_stride;
#pragma unroll
      for (int i = 0; i < kDPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) acc[i] = fmaf(pj, to_f32(vr[d]), acc[i]);
      }
    }
    m = m_new;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  T* orow = static_cast<T*>(a.out) + row * D;
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    if (d < D) orow[d] = from_f32<T>(acc[i] * inv);
  }
  if (lane == 0) {
    a.lse[(static_cast<long long>(b) * a.H + h) * a.T + t] =
        n_vis > j_first ? m + logf(l) : -INFINITY;
  }
}

template <typename T, int kDPL>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) simt_bwd_dq_kernel(const BwdArgs a) {
  __shared__ float sq[kWarpsPerBlock][kDPL * 32];
  __shared__ float sdo[kWarpsPerBlock][kDPL * 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + warp;
  if (row >= static_cast<long long>(a.B) * a.T * a.H) return;
  const int D = a.D;
  const int h = static_cast<int>(row % a.H);
  const int t = static_cast<int>((row / a.H) % a.T);
  const int b = static_cast<int>(row / (static_cast<long long>(a.H) * a.T));
  const int kvh = h / (a.H / a.Hkv);
  const T* qr = static_cast<const T*>(a.q) + row * D;
  const T* dor = static_cast<const T*>(a.dout) + row * D;
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    sq[warp][d] = d < D ? to_f32(qr[d]) * a.scale : 0.f;
    sdo[warp][d] = d < D ? to_f32(dor[d]) : 0.f;
  }
  __syncwarp();
  const long long lrow = (static_cast<long long>(b) * a.H + h) * a.T + t;
  const float lse = a.lse[lrow], dsum = a.dsum[lrow];
  const int n_vis = a.causal ? min(max(t + a.S - a.T + 1, 0), a.S) : a.S;
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;
  const long long kv_base = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;
  const T* kb = static_cast<const T*>(a.k) + kv_base;
  const T* vb = static_cast<const T*>(a.v) + kv_base;
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  const int qpos = t + a.S - a.T;
  float acc[kDPL];
#pragma unroll
  for (int i = 0; i < kDPL; ++i) acc[i] = 0.f;
  for (int j0 = 0; j0 < n_vis; j0 += 32) {
    const int j = j0 + lane;
    float ds = 0.f;
    if (j < n_vis) {
      const float sc = fmaf(slope, float(j - qpos), dot_row(sq[warp], kb + j * kv_stride, D));
      const float p = expf(sc - lse);
      ds = p * (dot_row(sdo[warp], vb + j * kv_stride, D) - dsum);
    }
    const int cnt = min(32, n_vis - j0);
    for (int jj = 0; jj < cnt; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      const T* kr = kb + (j0 + jj) * kv_stride;
#pragma unroll
      for (int i = 0; i < kDPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) acc[i] = fmaf(dsj, to_f32(kr[d]), acc[i]);
      }
    }
  }
  T* dqr = static_cast<T*>(a.dq) + row * D;
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    if (d < D) dqr[d] = from_f32<T>(acc[i] * a.scale);
  }
}

template <typename T, int kDPL>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) simt_bwd_dkv_kernel(const BwdArgs a) {
  __shared__ float sk[kWarpsPerBlock][kDPL * 32];
  __shared__ float sv[kWarpsPerBlock][kDPL * 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + warp;  // (b, s, kvh)
  if (row >= static_cast<long long>(a.B) * a.S * a.Hkv) return;
  const int D = a.D;
  const int kvh = static_cast<int>(row % a.Hkv);
  const int s = static_cast<int>((row / a.Hkv) % a.S);
  const int b = static_cast<int>(row / (static_cast<long long>(a.Hkv) * a.S));
  const int group = a.H / a.Hkv;
  const T* kr = static_cast<const T*>(a.k) + row * D;
  const T* vr = static_cast<const T*>(a.v) + row * D;
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    sk[warp][d] = d < D ? to_f32(kr[d]) * a.scale : 0.f;
    sv[warp][d] = d < D ? to_f32(vr[d]) : 0.f;
  }
  __syncwarp();
  const int t_min = a.causal ? max(0, s - (a.S - a.T)) : 0;  // first query that sees key s
  const long long q_stride = static_cast<long long>(a.H) * D;
  float acc_k[kDPL], acc_v[kDPL];
#pragma unroll
  for (int i = 0; i < kDPL; ++i) acc_k[i] = acc_v[i] = 0.f;
  for (int hi = 0; hi < group; ++hi) {
    const int h = kvh * group + hi;
    const long long qbase = (static_cast<long long>(b) * a.T * a.H + h) * D;
    const T* qb = static_cast<const T*>(a.q) + qbase;
    const T* dob = static_cast<const T*>(a.dout) + qbase;
    const long long lbase = (static_cast<long long>(b) * a.H + h) * a.T;
    const float slope = a.alibi ? a.alibi[h] : 0.f;
    for (int t0 = t_min; t0 < a.T; t0 += 32) {
      const int t = t0 + lane;
      float p = 0.f, ds = 0.f;
      if (t < a.T) {
        // sk holds scale * k, so this is the scaled score.
        float sc = 0.f, dp = 0.f;
        const T* qr = qb + t * q_stride;
        const T* dr = dob + t * q_stride;
        for (int d = 0; d < D; ++d) {
          sc = fmaf(sk[warp][d], to_f32(qr[d]), sc);
          dp = fmaf(sv[warp][d], to_f32(dr[d]), dp);
        }
        sc = fmaf(slope, float(s - (t + a.S - a.T)), sc);
        p = expf(sc - a.lse[lbase + t]);
        ds = p * (dp - a.dsum[lbase + t]);
      }
      const int cnt = min(32, a.T - t0);
      for (int tt = 0; tt < cnt; ++tt) {
        const float pt = __shfl_sync(0xffffffffu, p, tt);
        const float dst = __shfl_sync(0xffffffffu, ds, tt);
        const T* qr = qb + (t0 + tt) * q_stride;
        const T* dr = dob + (t0 + tt) * q_stride;
#pragma unroll
        for (int i = 0; i < kDPL; ++i) {
          const int d = lane + 32 * i;
          if (d < D) {
            acc_v[i] = fmaf(pt, to_f32(dr[d]), acc_v[i]);
            acc_k[i] = fmaf(dst, to_f32(qr[d]), acc_k[i]);
          }
        }
      }
    }
  }
  T* dkr = static_cast<T*>(a.dk) + row * D;
  T* dvr = static_cast<T*>(a.dv) + row * D;
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    if (d < D) {
      dkr[d] = from_f32<T>(acc_k[i] * a.scale);
      dvr[d] = from_f32<T>(acc_v[i]);
    }
  }
}

// dsum[b,h,t] = sum_d dout * out for query row (b, t, h); warp per row.
template <typename T>
__global__ void dsum_kernel(const BwdArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + warp;
  if (row >= static_cast<long long>(a.B) * a.T * a.H) return;
  const T* o = static_cast<const T*>(a.out) + row * a.D;
  const T* dout = static_cast<const T*>(a.dout) + row * a.D;
  float s = 0.f;
  for (int d = lane; d < a.D; d += 32) s = fmaf(to_f32(o[d]), to_f32(dout[d]), s);
  s = warp_sum(s);
  if (lane == 0) {
    const int h = static_cast<int>(row % a.H);
    const int t = static_cast<int>((row / a.H) % a.T);
    const long long b = row / (static_cast<long long>(a.H) * a.T);
    a.dsum[(b * a.H + h) * a.T + t] = s;
  }
}

unsigned blocks_for(long long rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

template <typename T, int kDPL>
cudaError_t fwd_launch(const FwdArgs& a, cudaStream_t stream) {
  simt_fwd_kernel<T, kDPL><<<blocks_for(static_cast<long long>(a.B) * a.T * a.H),
                             kWarpsPerBlock * 32, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, int kDPL>
cudaError_t bwd_launch(const BwdArgs& a, cudaStream_t stream) {
  simt_bwd_dq_kernel<T, kDPL><<<blocks_for(static_cast<long long>(a.B) * a.T * a.H),
                                kWarpsPerBlock * 32, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  simt_bwd_dkv_kernel<T, kDPL><<<blocks_for(static_cast<long long>(a.B) * a.S * a.Hkv),
                                 kWarpsPerBlock * 32, 0, stream>>>(a);
  return cudaGetLastError();
}

// Head dims per lane: 1, 2, 4 or 8 (D <= 32, 64, 128, 256).
template <typename T>
cudaError_t fwd_typed(const FwdArgs& a, cudaStream_t stream) {
  if (a.D <= 32) return fwd_launch<T, 1>(a, stream);
  if (a.D <= 64) return fwd_launch<T, 2>(a, stream);
  if (a.D <= 128) return fwd_launch<T, 4>(a, stream);
  return fwd_launch<T, 8>(a, stream);
}
template <typename T>
cudaError_t bwd_typed(const BwdArgs& a, cudaStream_t stream) {
  if (a.D <= 32) return bwd_launch<T, 1>(a, stream);
  if (a.D <= 64) return bwd_launch<T, 2>(a, stream);
  if (a.D <= 128) return bwd_launch<T, 4>(a, stream);
  return bwd_launch<T, 8>(a, stream);
}

}  // namespace

cudaError_t forward_simt(const FwdArgs& a, Elem e, cudaStream_t stream) {
  switch (e) {
    case Elem::f32:
      return fwd_typed<float>(a, stream);
    case Elem::bf16:
      return fwd_typed<__nv_bfloat16>(a, stream);
    default:
      return fwd_typed<__half>(a, stream);
  }
}

cudaError_t backward_simt(const BwdArgs& a, Elem e, cudaStream_t stream) {
  switch (e) {
    case Elem::f32:
      return bwd_typed<float>(a, stream);
    case Elem::bf16:
      return bwd_typed<__nv_bfloat16>(a, stream);
    default:
      return bwd_typed<__half>(a, stream);
  }
}

cudaError_t backward_dsum(const BwdArgs& a, Elem e, cudaStream_t stream) {
  const unsigned blocks = blocks_for(static_cast<long long>(a.B) * a.T * a.H);
  switch (e) {
    case Elem::f32:
      dsum_kernel<float><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(a);
      break;
    case Elem::bf16:
      dsum_kernel<__nv_bfloat16><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(a);
      break;
    default:
      dsum_kernel<__half><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(a);
      break;
  }
  return cudaGetLastError();
}

}  // namespace el::cuda::attn
