// cuda_decode_attention.cuh — internal to cuda_decode_layer.cu: phase B of
// the decode layer kernel, the new token's attention over the KV cache split
// into (kv head, chunk) units over the blocks, RoPE and the cache write of the
// new k / v included, the last unit of a kv head merging the partials.
#pragma once

#include <cmath>

#include "cuda/cuda_decode_layer.cuh"

namespace el::cuda::decode {

// ---- phase B: attention of the new token over the cache -----------------------------------
// Keys per unit at least. Larger chunks (fewer partials to merge, none up to
// the chunk) measured slower: 64 no better, 128 and 512 +15-30% a layer.
constexpr int kMinChunk = 32;
constexpr int kHeadPass = 8;   // query heads accumulated per pass of P V

// The unit (kv head, chunk) of `block`: its cache rows [j0, j0 + nj) and the
// number of chunks nc of its kv head; nj == 0 when the block has no unit.
struct AttnUnit {
  int g, c, j0, nj, nc;
};
__device__ __forceinline__ AttnUnit attention_unit(const LayerArgs& a, int p, int block) {
  const int uph = a.units_per_head, len = p + 1;  // keys, the new one included
  AttnUnit u{block / uph, block % uph, 0, 0, 0};
  const int chunk = max(kMinChunk, (len + uph - 1) / uph);
  u.nc = (len + chunk - 1) / chunk;
  if (block >= a.Hkv * uph || u.c >= u.nc) return u;
  u.j0 = u.c * chunk;
  u.nj = min(len, u.j0 + chunk) - u.j0;
  return u;
}

// Phase A's start: the block's cache rows (all but the new one, which phase B
// writes) towards L2, so phase B's loads hit there instead of queueing behind
// the weight stream in HBM.
template <class T>
__device__ __forceinline__ void prefetch_attention_rows(const LayerArgs& a, int p) {
  const AttnUnit u = attention_unit(a, p, blockIdx.x);
  const int rows = min(u.nj, p - u.j0);  // rows < p exist already
  const int64_t stride = int64_t{a.Hkv} * a.D;
  for (int i = threadIdx.x; i < 2 * rows; i += kThreads) {
    const T* base = static_cast<const T*>(i < rows ? a.kc : a.vc);
    const T* row = base + (int64_t{u.j0} + (i < rows ? i : i - rows)) * stride + int64_t{u.g} * a.D;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(row));
    if (a.D * int(sizeof(T)) > 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + 64));
  }
}

// Attention scratch in shared memory (floats): qs [HG, D], cs [D], sc
// [HG, chunk_max], ml [2 HG], po [kWarps, kHeadPass, D].
__host__ __device__ inline int attention_smem_floats(int hg, int d, int chunk_max) {
  return hg * d + d + hg * chunk_max + 2 * hg + kWarps * kHeadPass * d;
}

// DL: head-dim elements per lane (D = 32 DL).
template <class T, int DL>
__device__ void attention_phase(const LayerArgs& a, int p, float* smem) {
  const int D = 32 * DL, HG = a.H / a.Hkv, half = D / 2;
  const int uph = a.units_per_head, len = p + 1;
  const AttnUnit u = attention_unit(a, p, blockIdx.x);
  if (u.nj == 0) return;
  const int g = u.g, c = u.c, nc = u.nc, j0 = u.j0, nj = u.nj;
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
  stamp(a.trace, kTraceQuery);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = int64_t{a.Hkv} * D;
  const T* vbase = static_cast<const T*>(a.vc) + int64_t{j0} * row_stride + g * D + lane * DL;
  // Scores: DL threads per key, 32 head dims each (4 loads in flight at
  // once), their sums added by xor shuffles; the queries come from shared
  // memory as float4 broadcasts and every head of the group is a separate
  // accumulator, so a key costs no warp-wide reductions.
  {
    const T* kc = static_cast<const T*>(a.kc) + int64_t{j0} * row_stride + g * D;
    for (int i = threadIdx.x; i < nj * DL; i += kThreads) {
      const int j = i / DL, part = i - j * DL;
      const uint4* kr = reinterpret_cast<const uint4*>(kc + j * row_stride + part * 32);
      uint4 kw[4];
#pragma unroll
      for (int m = 0; m < 4; ++m) kw[m] = __ldcg(kr + m);
      for (int hb = 0; hb < HG; hb += kHeadPass) {  // (one pass for groups up to 8)
        float s[kHeadPass];
#pragma unroll
        for (int hh = 0; hh < kHeadPass; ++hh) s[hh] = 0.f;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          Pack<T, 8> kp;
          memcpy(&kp, &kw[m], sizeof(kp));
#pragma unroll
          for (int q4 = 0; q4 < 2; ++q4) {
            const float k0 = to_f<T>(kp.v[4 * q4]), k1 = to_f<T>(kp.v[4 * q4 + 1]);
            const float k2 = to_f<T>(kp.v[4 * q4 + 2]), k3 = to_f<T>(kp.v[4 * q4 + 3]);
#pragma unroll
            for (int hh = 0; hh < kHeadPass; ++hh) {
              if (hb + hh < HG) {
                const float4 q = *reinterpret_cast<const float4*>(qs + (hb + hh) * D + part * 32 +
                                                                  8 * m + 4 * q4);
                s[hh] = fmaf(q.x, k0, fmaf(q.y, k1, fmaf(q.z, k2, fmaf(q.w, k3, s[hh]))));
              }
            }
          }
        }
#pragma unroll
        for (int hh = 0; hh < kHeadPass; ++hh) {
          if (hb + hh < HG) {
            float v = s[hh];
#pragma unroll
            for (int o = 1; o < DL; o *= 2) v += __shfl_xor_sync(__activemask(), v, o);
            if (part == 0) sc[(hb + hh) * a.chunk_max + j] = v * a.sl2;
          }
        }
      }
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
    constexpr int kVBatch = 8 / DL;
    for (int jb = warp; jb < nj; jb += kVBatch * kWarps) {
      float vf[kVBatch][DL];
#pragma unroll
      for (int b = 0; b < kVBatch; ++b) {
        const int j = jb + b * kWarps;
#pragma unroll
        for (int e = 0; e < DL; ++e) vf[b][e] = j < nj ? to_f<T>(__ldcg(vbase + j * row_stride + e)) : 0.f;
      }
#pragma unroll
      for (int b = 0; b < kVBatch; ++b) {
        const int j = jb + b * kWarps;
        if (j >= nj) break;
#pragma unroll
        for (int hh = 0; hh < kHeadPass; ++hh) {
          if (hh < nh) {
            const float pj = sc[(hb + hh) * a.chunk_max + j];
#pragma unroll
            for (int e = 0; e < DL; ++e) acc[hh][e] = fmaf(pj, vf[b][e], acc[hh][e]);
          }
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
      if (nc == 1) {  // the whole cache in this unit: the output, no partials to merge
        static_cast<T*>(a.attn)[(g * HG + hb + hh) * D + d] = from_f<T>(o / ml[2 * (hb + hh) + 1]);
        continue;
      }
      float* dst = dst_base + int64_t{hb + hh} * uph * (D + 2);
      dst[2 + d] = o;
      if (d == 0) {
        dst[0] = ml[2 * (hb + hh)];
        dst[1] = ml[2 * (hb + hh) + 1];
      }
    }
    consumer_sync();
  }
  stamp(a.trace, kTracePartials);
  if (nc == 1) return;
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
  stamp(a.trace, kTraceArrived);
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
