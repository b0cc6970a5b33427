// cuda_decode_attention.cuh — internal to cuda_decode_layer.cu: phase B of
// the decode layer kernel, the new token's attention over the KV cache split
// into (kv head, chunk) units over the blocks, RoPE and the cache write of the
// new k / v included, the last unit of a kv head merging the partials.
#pragma once

#include <cmath>

#include "cuda/cuda_decode_layer.cuh"

namespace el::cuda::decode {

// ---- phase B: attention of the new token over the cache -----------------------------------
constexpr int kMinChunk = 32;  // keys per block at least: few partials to merge
constexpr int kHeadPass = 8;   // query heads accumulated per pass of P V

// Attention scratch in shared memory (floats): qs [HG, D], cs [D], sc
// [HG, chunk_max], ml [2 HG], po [kWarps, kHeadPass, D].
__host__ __device__ inline int attention_smem_floats(int hg, int d, int chunk_max) {
  return hg * d + d + hg * chunk_max + 2 * hg + kWarps * kHeadPass * d;
}

// DL: head-dim elements per lane (D = 32 DL).
template <class T, int DL>
__device__ void attention_phase(const LayerArgs& a, int p, float* smem) {
  const int D = 32 * DL, HG = a.H / a.Hkv, half = D / 2;
  const int uph = a.units_per_head;
  const int unit = blockIdx.x;
  if (unit >= a.Hkv * uph) return;
  const int g = unit / uph, c = unit - g * uph;
  const int len = p + 1;  // keys, the new one included
  const int chunk = max(kMinChunk, (len + uph - 1) / uph);
  const int nc = (len + chunk - 1) / chunk;
  if (c >= nc) return;
  const int j0 = c * chunk, nj = min(len, j0 + chunk) - j0;
  float* qs = smem;
  float* cs = qs + HG * D;
  float* sc = cs + D;
  float* ml = sc + HG * a.chunk_max;
  float* po = ml + 2 * HG;
  __shared__ int last_flag;
  const T* qkv = static_cast<const T*>(a.qkv);
  for (int i = threadIdx.x; i < half; i += kThreads) {
    float sn = 0.f, co = 1.f;
    if (a.inv_freq) sincosf(static_cast<float>(p) * a.inv_freq[i], &sn, &co);
    cs[2 * i] = co;
    cs[2 * i + 1] = sn;
  }
  consumer_sync();
  // Rotate-half RoPE on the group's queries (and on the new key below).
  for (int i = threadIdx.x; i < HG * half; i += kThreads) {
    const int hh = i / half, e = i - hh * half;
    const T* src = qkv + (g * HG + hh) * D;
    const float u = to_f<T>(__ldcg(src + e)), w = to_f<T>(__ldcg(src + e + half));
    const float co = cs[2 * e], sn = cs[2 * e + 1];
    qs[hh * D + e] = to_f<T>(from_f<T>(u * co - w * sn));
    qs[hh * D + e + half] = to_f<T>(from_f<T>(w * co + u * sn));
  }
  if (j0 + nj == len) {  // this chunk holds the new position: write its k and v
    const T* ks = qkv + (a.H + g) * D;
    const T* vs = qkv + (a.H + a.Hkv + g) * D;
    T* kd = static_cast<T*>(a.kc) + (int64_t{p} * a.Hkv + g) * D;
    T* vd = static_cast<T*>(a.vc) + (int64_t{p} * a.Hkv + g) * D;
    for (int e = threadIdx.x; e < half; e += kThreads) {
      const float u = to_f<T>(__ldcg(ks + e)), w = to_f<T>(__ldcg(ks + e + half));
      const float co = cs[2 * e], sn = cs[2 * e + 1];
      kd[e] = from_f<T>(u * co - w * sn);
      kd[e + half] = from_f<T>(w * co + u * sn);
      vd[e] = __ldcg(vs + e);
      vd[e + half] = __ldcg(vs + e + half);
    }
  }
  consumer_sync();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = int64_t{a.Hkv} * D;
  const T* kbase = static_cast<const T*>(a.kc) + int64_t{j0} * row_stride + g * D + lane * DL;
  const T* vbase = static_cast<const T*>(a.vc) + int64_t{j0} * row_stride + g * D + lane * DL;
  // Scores: a warp per key, lane l holding dims [l DL, l DL + DL).
#pragma unroll 2
  for (int j = warp; j < nj; j += kWarps) {
    float kf[DL];
#pragma unroll
    for (int e = 0; e < DL; ++e) kf[e] = to_f<T>(__ldcg(kbase + j * row_stride + e));
    for (int hh = 0; hh < HG; ++hh) {
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < DL; ++e) s = fmaf(qs[hh * D + lane * DL + e], kf[e], s);
      s = warp_sum(s);
      if (lane == 0) sc[hh * a.chunk_max + j] = s * a.sl2;
    }
  }
  consumer_sync();
  stamp(a.trace, kTraceScores);
  // Softmax statistics per head; sc becomes the unnormalised probabilities.
  for (int hh = warp; hh < HG; hh += kWarps) {
    float* s = sc + hh * a.chunk_max;
    float m = -INFINITY;
    for (int j = lane; j < nj; j += 32) m = fmaxf(m, s[j]);
    m = warp_max(m);
    float l = 0.f;
    for (int j = lane; j < nj; j += 32) {
      const float e = exp2f(s[j] - m);
      s[j] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      ml[2 * hh] = m;
      ml[2 * hh + 1] = l;
    }
  }
  consumer_sync();
  // P V: a warp per key (its v row read once for all heads of a pass), the
  // warps' sums added in shared memory.
  float* dst_base = a.part + (int64_t{g} * HG * uph + c) * (D + 2);  // head hh: + hh uph (D + 2)
  for (int hb = 0; hb < HG; hb += kHeadPass) {
    const int nh = min(kHeadPass, HG - hb);
    float acc[kHeadPass][DL];
#pragma unroll
    for (int hh = 0; hh < kHeadPass; ++hh)
#pragma unroll
      for (int e = 0; e < DL; ++e) acc[hh][e] = 0.f;
#pragma unroll 2
    for (int j = warp; j < nj; j += kWarps) {
      float vf[DL];
#pragma unroll
      for (int e = 0; e < DL; ++e) vf[e] = to_f<T>(__ldcg(vbase + j * row_stride + e));
#pragma unroll
      for (int hh = 0; hh < kHeadPass; ++hh) {
        if (hh < nh) {
          const float pj = sc[(hb + hh) * a.chunk_max + j];
#pragma unroll
          for (int e = 0; e < DL; ++e) acc[hh][e] = fmaf(pj, vf[e], acc[hh][e]);
        }
      }
    }
#pragma unroll
    for (int hh = 0; hh < kHeadPass; ++hh)
#pragma unroll
      for (int e = 0; e < DL; ++e) po[(warp * kHeadPass + hh) * D + lane * DL + e] = acc[hh][e];
    consumer_sync();
    for (int i = threadIdx.x; i < nh * D; i += kThreads) {
      const int hh = i / D, d = i - hh * D;
      float o = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) o += po[(w * kHeadPass + hh) * D + d];
      float* dst = dst_base + int64_t{hb + hh} * uph * (D + 2);
      dst[2 + d] = o;
      if (d == 0) {
        dst[0] = ml[2 * (hb + hh)];
        dst[1] = ml[2 * (hb + hh) + 1];
      }
    }
    consumer_sync();
  }
  // The last chunk of kv head g to finish merges the group's partials.
  if (threadIdx.x == 0) {
    __threadfence();
    last_flag = atomicAdd(&a.sync[2 + g], 1u) == static_cast<unsigned>(nc - 1);
    if (last_flag) {
      __threadfence();
      a.sync[2 + g] = 0;
    }
  }
  consumer_sync();
  stamp(a.trace, kTracePartials);
  if (!last_flag) return;
  T* out = static_cast<T*>(a.attn);
  for (int hh = warp; hh < HG; hh += kWarps) {
    const float* base = a.part + int64_t{g * HG + hh} * uph * (D + 2);
    float m = -INFINITY;
    for (int cc = lane; cc < nc; cc += 32) m = fmaxf(m, __ldcg(base + cc * (D + 2)));
    m = warp_max(m);
    float l = 0.f;
    for (int cc = lane; cc < nc; cc += 32) {
      const float* pc = base + cc * (D + 2);
      l = fmaf(__ldcg(pc + 1), exp2f(__ldcg(pc) - m), l);
    }
    l = warp_sum(l);
    float o[DL];
#pragma unroll
    for (int e = 0; e < DL; ++e) o[e] = 0.f;
#pragma unroll 4
    for (int cc = 0; cc < nc; ++cc) {
      const float* pc = base + cc * (D + 2);
      const float f = exp2f(__ldcg(pc) - m);
#pragma unroll
      for (int e = 0; e < DL; ++e) o[e] = fmaf(__ldcg(pc + 2 + lane * DL + e), f, o[e]);
    }
    const float inv = 1.f / l;
#pragma unroll
    for (int e = 0; e < DL; ++e) out[(g * HG + hh) * D + lane * DL + e] = from_f<T>(o[e] * inv);
  }
}

}  // namespace el::cuda::decode
