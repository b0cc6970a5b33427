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

// Row strides in shared memory, padded so that the lanes of a warp reading
// different rows at one offset hit different banks: the queries (floats)
// and the staged k / v rows (T).
__host__ __device__ constexpr int query_stride(int d) { return d + 4; }
__host__ __device__ constexpr int stage_stride(int d) { return d + 8; }

// How many of unit u's keys (from its first) phase B reads from the staging
// area in shared memory (LayerArgs::stage_keys rows of k and of v); the rest
// from global memory.
__device__ __forceinline__ int staged_keys(const LayerArgs& a, const AttnUnit& u) {
  return min(u.nj, a.stage_keys);
}

// Right after the PDL wait: the block's cache rows (all but the new one, which
// phase B writes) start towards the unit. The first `ns` rows of the chunk
// go into shared memory by cp.async (one commit group; phase B waits for it),
// so phase B reads its keys and values without a memory round trip; rows
// past the staging room only towards L2. Every consumer thread commits.
template <class T>
__device__ __forceinline__ void stage_attention_rows(const LayerArgs& a, int p, T* kv_stage) {
  const AttnUnit u = attention_unit(a, p, blockIdx.x);
  const int rows = min(u.nj, p - u.j0);  // rows < p exist already
  const int ns = min(rows, staged_keys(a, u));
  const int64_t stride = int64_t{a.Hkv} * a.D;
  const int vecs = a.D / 8;  // 16-byte pieces of a row
  for (int i = threadIdx.x; i < 2 * ns * vecs; i += kThreads) {
    const int kv = i / (ns * vecs), r = i - kv * ns * vecs, j = r / vecs, e = (r - j * vecs) * 8;
    const T* src = static_cast<const T*>(kv == 0 ? a.kc : a.vc) + (int64_t{u.j0} + j) * stride +
                   int64_t{u.g} * a.D + e;
    cp_async16(smem_addr(kv_stage + (kv * a.stage_keys + j) * stage_stride(a.D) + e), src, true);
  }
  cp_async_commit();
  for (int i = threadIdx.x; i < 2 * (rows - ns); i += kThreads) {
    const int n = rows - ns, kv = i / n, j = ns + (i - kv * n);
    const T* row = static_cast<const T*>(kv == 0 ? a.kc : a.vc) + (int64_t{u.j0} + j) * stride +
                   int64_t{u.g} * a.D;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(row));
    if (a.D * int(sizeof(T)) > 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + 64));
  }
}

// Attention scratch in shared memory (floats): qs [HG, D + 4], sc
// [HG, chunk_max], ml [2 HG].
__host__ __device__ inline int attention_smem_floats(int hg, int d, int chunk_max) {
  return hg * query_stride(d) + hg * chunk_max + 2 * hg;
}

// Softmax statistics per head (a warp each): sc rows [hg, nj] (stride ld)
// become the unnormalised probabilities exp2(s - m); ml[2 h] = m, ml[2 h + 1] = l.
__device__ __forceinline__ void softmax_rows(float* sc, float* ml, int hg, int nj, int ld) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int hh = warp; hh < hg; hh += kWarps) {
    float* s = sc + hh * ld;
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
}

// DL: head-dim elements per lane (D = 32 DL). kv_stage: the rows
// stage_attention_rows copied (k rows [0, stage_keys), then v rows).
template <class T, int DL>
__device__ void attention_phase(const LayerArgs& a, int p, float* smem, T* kv_stage) {
  const int D = 32 * DL, HG = a.H / a.Hkv, half = D / 2;
  const int uph = a.units_per_head, len = p + 1;
  const AttnUnit u = attention_unit(a, p, blockIdx.x);
  if (u.nj == 0) return;
  const int g = u.g, c = u.c, nc = u.nc, j0 = u.j0, nj = u.nj, ns = staged_keys(a, u);
  const int QS = query_stride(D), KS = stage_stride(D);
  T* ks_s = kv_stage;
  T* vs_s = kv_stage + a.stage_keys * KS;
  float* qs = smem;
  float* sc = qs + HG * QS;
  float* ml = sc + HG * a.chunk_max;
  __shared__ int last_flag;
  const T* qkv = static_cast<const T*>(a.qkv);
  // Rotate-half RoPE on the group's queries (and on the new key below); the
  // loads go out before the angles are computed.
  const auto rope = [&](int e, float& co, float& sn) {
    sn = 0.f, co = 1.f;
    if (a.inv_freq) sincosf(static_cast<float>(p) * a.inv_freq[e], &sn, &co);
  };
  for (int i = threadIdx.x; i < HG * half; i += kThreads) {
    const int hh = i / half, e = i - hh * half;
    const T* src = qkv + (g * HG + hh) * D;
    const float u = to_f<T>(__ldcg(src + e)), w = to_f<T>(__ldcg(src + e + half));
    float co, sn;
    rope(e, co, sn);
    qs[hh * QS + e] = to_f<T>(from_f<T>(u * co - w * sn));
    qs[hh * QS + e + half] = to_f<T>(from_f<T>(w * co + u * sn));
  }
  if (j0 + nj == len) {  // this chunk holds the new position: write its k and v
    const T* ks = qkv + (a.H + g) * D;
    const T* vs = qkv + (a.H + a.Hkv + g) * D;
    T* kd = static_cast<T*>(a.kc) + (int64_t{p} * a.Hkv + g) * D;
    T* vd = static_cast<T*>(a.vc) + (int64_t{p} * a.Hkv + g) * D;
    const int jn = p - j0;  // its row in the unit
    for (int e = threadIdx.x; e < half; e += kThreads) {
      const float u = to_f<T>(__ldcg(ks + e)), w = to_f<T>(__ldcg(ks + e + half));
      const T v0 = __ldcg(vs + e), v1 = __ldcg(vs + e + half);
      float co, sn;
      rope(e, co, sn);
      const T k0 = from_f<T>(u * co - w * sn), k1 = from_f<T>(w * co + u * sn);
      kd[e] = k0;
      kd[e + half] = k1;
      vd[e] = v0;
      vd[e + half] = v1;
      if (jn < ns) {
        ks_s[jn * KS + e] = k0;
        ks_s[jn * KS + e + half] = k1;
        vs_s[jn * KS + e] = v0;
        vs_s[jn * KS + e + half] = v1;
      }
    }
  }
  cp_async_wait<0>();  // the staged rows (stage_attention_rows)
  consumer_sync();
  stamp(a.trace, kTraceQuery);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = int64_t{a.Hkv} * D;
  float* dst_base = a.part + (int64_t{g} * HG * uph + c) * (D + 2);  // head hh: + hh uph (D + 2)
  {
    // Scores: a thread per (key, head), the whole head dimension (k and q
    // from shared memory, rows padded so a warp's 4 keys x 8 heads read
    // distinct banks).
    const T* kc = static_cast<const T*>(a.kc) + int64_t{j0} * row_stride + g * D;
    for (int i = threadIdx.x; i < nj * HG; i += kThreads) {
      const int j = i / HG, hh = i - j * HG;
      const float* q = qs + hh * QS;
      const bool staged = j < ns;
      const uint4* kr = reinterpret_cast<const uint4*>(staged ? ks_s + j * KS : kc + j * row_stride);
      float s0 = 0.f, s1 = 0.f;
#pragma unroll
      for (int m = 0; m < D / 8; ++m) {
        const uint4 kw = staged ? kr[m] : __ldcg(kr + m);
        Pack<T, 8> kp;
        memcpy(&kp, &kw, sizeof(kp));
        const float4 qa = *reinterpret_cast<const float4*>(q + 8 * m);
        const float4 qb = *reinterpret_cast<const float4*>(q + 8 * m + 4);
        s0 = fmaf(qa.x, to_f<T>(kp.v[0]), fmaf(qa.y, to_f<T>(kp.v[1]), s0));
        s1 = fmaf(qa.z, to_f<T>(kp.v[2]), fmaf(qa.w, to_f<T>(kp.v[3]), s1));
        s0 = fmaf(qb.x, to_f<T>(kp.v[4]), fmaf(qb.y, to_f<T>(kp.v[5]), s0));
        s1 = fmaf(qb.z, to_f<T>(kp.v[6]), fmaf(qb.w, to_f<T>(kp.v[7]), s1));
      }
      sc[hh * a.chunk_max + j] = (s0 + s1) * a.sl2;
    }
    consumer_sync();
    stamp(a.trace, kTraceScores);
    softmax_rows(sc, ml, HG, nj, a.chunk_max);
    consumer_sync();
    stamp(a.trace, kTraceSoftmax);
    // P V: a thread per (head, dimension) over the unit's keys, v from
    // shared memory (consecutive dimensions in consecutive lanes); no
    // cross-warp sums.
    const T* vg = static_cast<const T*>(a.vc) + int64_t{j0} * row_stride + g * D;
    for (int i = threadIdx.x; i < HG * D; i += kThreads) {
      const int hh = i / D, d = i - hh * D;
      const float* pr = sc + hh * a.chunk_max;
      float o0 = 0.f, o1 = 0.f;
      int j = 0;
      for (; j + 8 <= ns; j += 8) {  // 8 keys' loads in flight before their products
        float pv[8], vv[8];
#pragma unroll
        for (int b = 0; b < 8; ++b) {
          pv[b] = pr[j + b];
          vv[b] = to_f<T>(vs_s[(j + b) * KS + d]);
        }
#pragma unroll
        for (int b = 0; b < 8; b += 2) {
          o0 = fmaf(pv[b], vv[b], o0);
          o1 = fmaf(pv[b + 1], vv[b + 1], o1);
        }
      }
      for (; j < ns; ++j) o0 = fmaf(pr[j], to_f<T>(vs_s[j * KS + d]), o0);
#pragma unroll 4
      for (; j < nj; ++j) o1 = fmaf(pr[j], to_f<T>(__ldcg(vg + j * row_stride + d)), o1);
      const float o = o0 + o1;
      if (nc == 1) {  // the whole cache in this unit: the output, no partials to merge
        static_cast<T*>(a.attn)[(g * HG + hh) * D + d] = from_f<T>(o / ml[2 * hh + 1]);
        continue;
      }
      float* dst = dst_base + int64_t{hh} * uph * (D + 2);
      dst[2 + d] = o;
      if (d == 0) {
        dst[0] = ml[2 * hh];
        dst[1] = ml[2 * hh + 1];
      }
    }
    stamp(a.trace, kTracePV);
    consumer_sync();
  }
  stamp(a.trace, kTracePartials);
  if (nc == 1) return;
  // The last chunk of kv head g to finish merges the group's partials.
  if (threadIdx.x == 0) {
    __threadfence();
    last_flag = atomicAdd(&a.sync[g], 1u) == static_cast<unsigned>(nc - 1);
    if (last_flag) {
      __threadfence();
      a.sync[g] = 0;
    }
  }
  consumer_sync();
  stamp(a.trace, kTraceArrived);
  if (!last_flag) return;
  T* out = static_cast<T*>(a.attn);
  {
    // A warp per head; each batch of kMB chunks is loaded at once (m, l and
    // the lane's DL outputs of every chunk: one round trip per batch) and
    // folded into a running (m, l, o), rescaled when the maximum grows.
    constexpr int kMB = 16 / DL;
    for (int hh = warp; hh < HG; hh += kWarps) {
      const float* base = a.part + int64_t{g * HG + hh} * uph * (D + 2);
      float m = -INFINITY, l = 0.f, o[DL];
#pragma unroll
      for (int e = 0; e < DL; ++e) o[e] = 0.f;
      for (int c0 = 0; c0 < nc; c0 += kMB) {
        float mc[kMB], lc[kMB], oc[kMB][DL];
#pragma unroll
        for (int i = 0; i < kMB; ++i) {
          const bool in = c0 + i < nc;
          const float* pc = base + (c0 + i) * (D + 2);
          mc[i] = in ? __ldcg(pc) : -INFINITY;
          lc[i] = in ? __ldcg(pc + 1) : 0.f;
#pragma unroll
          for (int e = 0; e < DL; ++e) oc[i][e] = in ? __ldcg(pc + 2 + lane * DL + e) : 0.f;
        }
        float mn = m;
#pragma unroll
        for (int i = 0; i < kMB; ++i) mn = fmaxf(mn, mc[i]);
        const float f = m == -INFINITY ? 0.f : exp2f(m - mn);
        l *= f;
#pragma unroll
        for (int e = 0; e < DL; ++e) o[e] *= f;
#pragma unroll
        for (int i = 0; i < kMB; ++i) {
          const float w = mc[i] == -INFINITY ? 0.f : exp2f(mc[i] - mn);
          l = fmaf(lc[i], w, l);
#pragma unroll
          for (int e = 0; e < DL; ++e) o[e] = fmaf(oc[i][e], w, o[e]);
        }
        m = mn;
      }
      const float inv = 1.f / l;
#pragma unroll
      for (int e = 0; e < DL; ++e) out[(g * HG + hh) * D + lane * DL + e] = from_f<T>(o[e] * inv);
    }
  }
}

}  // namespace el::cuda::decode
