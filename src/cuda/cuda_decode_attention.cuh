// cuda_decode_attention.cuh — internal to cuda_decode_layer.cu: phase B of
// the decode layer kernel, the new token's attention over the KV cache split
// into (kv head, chunk) units over the blocks, RoPE and the cache write of the
// new k / v included, the units of a kv head merging its heads' partials. Its
// inputs (q, k, v), partials and output are hand-off words
// (cuda_decode_layer.cuh, LLWord).
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

// Layer lw's cache rows of the block's unit (all but the new one, which
// phase B writes) start towards the unit: in the first layer's phase A, for
// the others in the phase C before. The first `ns` rows of the chunk go into
// shared memory by cp.async (the caller commits; phase B waits for every
// group), so phase B reads its keys and values without a memory round trip;
// rows past the staging room only towards L2. Every consumer thread.
template <class T>
__device__ __forceinline__ void stage_attention_rows(const LayerArgs& a, const LayerPtrs& lw, int p,
                                                     T* kv_stage) {
  const AttnUnit u = attention_unit(a, p, blockIdx.x);
  const int rows = min(u.nj, p - u.j0);  // rows < p exist already
  const int ns = min(rows, staged_keys(a, u));
  const int64_t stride = int64_t{a.Hkv} * a.D;
  const int vecs = a.D / 8;  // 16-byte pieces of a row
  for (int i = threadIdx.x; i < 2 * ns * vecs; i += kThreads) {
    const int kv = i / (ns * vecs), r = i - kv * ns * vecs, j = r / vecs, e = (r - j * vecs) * 8;
    const T* src = static_cast<const T*>(kv == 0 ? lw.kc : lw.vc) + (int64_t{u.j0} + j) * stride +
                   int64_t{u.g} * a.D + e;
    cp_async16(smem_addr(kv_stage + (kv * a.stage_keys + j) * stage_stride(a.D) + e), src, true);
  }
  for (int i = threadIdx.x; i < 2 * (rows - ns); i += kThreads) {
    const int n = rows - ns, kv = i / n, j = ns + (i - kv * n);
    const T* row = static_cast<const T*>(kv == 0 ? lw.kc : lw.vc) + (int64_t{u.j0} + j) * stride +
                   int64_t{u.g} * a.D;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(row));
    if (a.D * int(sizeof(T)) > 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + 64));
  }
}

// Attention scratch in shared memory (floats): qs [HG, D + 4], sc
// [HG, chunk_max], ml [2 HG]; once the unit's partials are out, the merge's
// per-warp results [kWarps, D + 2] (m, l, o) in the same room.
__host__ __device__ inline int attention_smem_floats(int hg, int d, int chunk_max) {
  const int unit = hg * query_stride(d) + hg * chunk_max + 2 * hg;
  const int merge = kWarps * (d + 2);
  return unit > merge ? unit : merge;
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

// The partials of chunks [lo, hi) of one query head ([nc, D + 2] words from
// base: m, l, o) merged by one warp: m, l and the lane's DL outputs (dims
// lane DL + e), scaled to m and not yet divided by l; m = -inf, l = 0 for an
// empty range. Lane i takes chunk i's m and l, every lane its DL outputs of
// each chunk; the m / l loads and the first kOB chunks' outputs go out before
// any is waited for. 16 / DL words in flight a lane spilled registers and
// measured slower (session 22: generate 1.037-1.044 against 1.013-1.016 ms).
// merge_round_chunks (kOB): the chunks a warp merges in one round trip.
template <int DL>
constexpr int merge_round_chunks() { return 8 / DL; }
template <int DL>
__device__ __forceinline__ void merge_chunks(const LLWord* base, int lo, int hi, int D,
                                             uint32_t flag, float& m, float& l, float (&o)[DL]) {
  constexpr int kOB = merge_round_chunks<DL>();
  const int lane = threadIdx.x & 31;
  const LLWord settled = ll_no_word(flag);
  m = -INFINITY;
  l = 0.f;
#pragma unroll
  for (int e = 0; e < DL; ++e) o[e] = 0.f;
  for (int c0 = lo; c0 < hi; c0 += 32) {
    const int n = min(32, hi - c0);
    // the lane's outputs of chunks c0 + i0 + [0, kOB): word e of chunk i at i DL + e
    LLWord wo[kOB * DL];
    const auto out_word = [&](int i0, int k) {
      return base + (c0 + i0 + k / DL) * (D + 2) + 2 + lane * DL + k % DL;
    };
    const auto issue = [&](int i0) {
#pragma unroll
      for (int k = 0; k < kOB * DL; ++k) {
        wo[k] = i0 + k / DL < n ? ll_load(out_word(i0, k)) : settled;
      }
    };
    const LLWord* const ml[2] = {base + (c0 + lane) * (D + 2), base + (c0 + lane) * (D + 2) + 1};
    LLWord wml[2] = {lane < n ? ll_load(ml[0]) : settled, lane < n ? ll_load(ml[1]) : settled};
    issue(0);
    // The round's maximum; the running sums rescaled to it; each lane's chunk weight.
    ll_settle_all(ml, wml, flag);
    const float mc = lane < n ? __uint_as_float(static_cast<uint32_t>(wml[0])) : -INFINITY;
    const float lc = lane < n ? __uint_as_float(static_cast<uint32_t>(wml[1])) : 0.f;
    const float mn = fmaxf(m, warp_max(mc));
    const float f = m == -INFINITY ? 0.f : exp2f(m - mn);
    const float wc = mc == -INFINITY ? 0.f : exp2f(mc - mn);
    l = fmaf(l, f, warp_sum(lc * wc));
    m = mn;
#pragma unroll
    for (int e = 0; e < DL; ++e) o[e] *= f;
    for (int i0 = 0; i0 < n; i0 += kOB) {
      if (i0 > 0) issue(i0);
      ll_settle_each(wo, flag, [&](int k) { return out_word(i0, k); });
#pragma unroll
      for (int i = 0; i < kOB; ++i) {
        const float w = __shfl_sync(0xffffffffu, wc, (i0 + i) & 31);
#pragma unroll
        for (int e = 0; e < DL; ++e) {
          if (i0 + i < n) {
            o[e] = fmaf(__uint_as_float(static_cast<uint32_t>(wo[i * DL + e])), w, o[e]);
          }
        }
      }
    }
  }
}

// DL: head-dim elements per lane (D = 32 DL). SPREAD: who merges the
// partials (below). lw: the layer (its caches).
// kv_stage: the rows stage_attention_rows copied (k rows [0, stage_keys),
// then v rows). flag: the layer's (hand-off words). trace: the layer's
// stamps or nullptr.
template <class T, int DL, bool SPREAD>
__device__ void attention_phase(const LayerArgs& a, const LayerPtrs& lw, int p, float* smem,
                                T* kv_stage, uint32_t flag, unsigned long long* trace) {
  const int D = 32 * DL, HG = a.H / a.Hkv, half = D / 2;
  const int len = p + 1;
  const AttnUnit u = attention_unit(a, p, blockIdx.x);
  if (u.nj == 0) return;
  const int g = u.g, c = u.c, nc = u.nc, j0 = u.j0, nj = u.nj, ns = staged_keys(a, u);
  const int QS = query_stride(D), KS = stage_stride(D);
  T* ks_s = kv_stage;
  T* vs_s = kv_stage + a.stage_keys * KS;
  float* qs = smem;
  float* sc = qs + HG * QS;
  float* ml = sc + HG * a.chunk_max;
  // The qkv words: query head h at h D / 2, kv head g's k at (H + g) D / 2
  // and its v at (H + Hkv + g) D / 2; word w of a head holds elements 2w, 2w + 1.
  const LLWord* qkv = a.ll_qkv;
  const int hw = half / 2;  // words in half a head
  // Rotate-half RoPE on the group's queries (and on the new key below): a
  // thread per word pair (elements e, e + 1 and e + half, e + half + 1), both
  // words' loads in flight before either is waited for.
  const auto rope = [&](int e, float& co, float& sn) {
    sn = 0.f, co = 1.f;
    if (a.inv_freq) sincosf(static_cast<float>(p) * a.inv_freq[e], &sn, &co);
  };
  const auto rotate = [&](float2 u, float2 w, int e, float (&lo)[2], float (&hi)[2]) {
    const float uu[2] = {u.x, u.y}, ww[2] = {w.x, w.y};
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      float co, sn;
      rope(e + k, co, sn);
      lo[k] = to_f<T>(from_f<T>(uu[k] * co - ww[k] * sn));
      hi[k] = to_f<T>(from_f<T>(ww[k] * co + uu[k] * sn));
    }
  };
  for (int i = threadIdx.x; i < HG * hw; i += kThreads) {
    const int hh = i / hw, w2 = i - hh * hw;
    const LLWord* src = qkv + (g * HG + hh) * (D / 2);
    const LLWord* const words[2] = {src + w2, src + hw + w2};
    LLWord l[2] = {ll_load(words[0]), ll_load(words[1])};
    ll_settle_all(words, l, flag);
    const float2 u = unpack2<T>(static_cast<uint32_t>(l[0]));
    const float2 w = unpack2<T>(static_cast<uint32_t>(l[1]));
    float lo[2], hi[2];
    rotate(u, w, 2 * w2, lo, hi);
    qs[hh * QS + 2 * w2] = lo[0];
    qs[hh * QS + 2 * w2 + 1] = lo[1];
    qs[hh * QS + 2 * w2 + half] = hi[0];
    qs[hh * QS + 2 * w2 + half + 1] = hi[1];
  }
  if (j0 + nj == len) {  // this chunk holds the new position: write its k and v
    const LLWord* ks = qkv + (a.H + g) * (D / 2);
    const LLWord* vs = qkv + (a.H + a.Hkv + g) * (D / 2);
    T* kd = static_cast<T*>(lw.kc) + (int64_t{p} * a.Hkv + g) * D;
    T* vd = static_cast<T*>(lw.vc) + (int64_t{p} * a.Hkv + g) * D;
    const int jn = p - j0;  // its row in the unit
    for (int w2 = threadIdx.x; w2 < hw; w2 += kThreads) {
      const LLWord* const words[4] = {ks + w2, ks + hw + w2, vs + w2, vs + hw + w2};
      LLWord l[4] = {ll_load(words[0]), ll_load(words[1]), ll_load(words[2]), ll_load(words[3])};
      ll_settle_all(words, l, flag);
      const float2 u = unpack2<T>(static_cast<uint32_t>(l[0]));
      const float2 w = unpack2<T>(static_cast<uint32_t>(l[1]));
      const float2 v0 = unpack2<T>(static_cast<uint32_t>(l[2]));
      const float2 v1 = unpack2<T>(static_cast<uint32_t>(l[3]));
      float lo[2], hi[2];
      rotate(u, w, 2 * w2, lo, hi);
      const int e = 2 * w2;
      const T kk[4] = {from_f<T>(lo[0]), from_f<T>(lo[1]), from_f<T>(hi[0]), from_f<T>(hi[1])};
      const T vv[4] = {from_f<T>(v0.x), from_f<T>(v0.y), from_f<T>(v1.x), from_f<T>(v1.y)};
      const int at[4] = {e, e + 1, e + half, e + half + 1};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        kd[at[k]] = kk[k];
        vd[at[k]] = vv[k];
        if (jn < ns) {
          ks_s[jn * KS + at[k]] = kk[k];
          vs_s[jn * KS + at[k]] = vv[k];
        }
      }
    }
  }
  cp_async_wait<0>();  // the staged rows (stage_attention_rows)
  consumer_sync();
  stamp(trace, kTraceQuery);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = int64_t{a.Hkv} * D;
  // The partials' words, [H, part_chunks, D + 2] (m, l, o): head hh of this
  // unit at dst_base + hh part_chunks (D + 2).
  LLWord* part = a.ll_part;
  const int pc = a.part_chunks;
  LLWord* dst_base = part + (int64_t{g} * HG * pc + c) * (D + 2);
  LLWord* attn = a.ll_attn;  // the output
  {
    // Scores: a thread per (key, head), the whole head dimension (k and q
    // from shared memory, rows padded so a warp's 4 keys x 8 heads read
    // distinct banks).
    const T* kc = static_cast<const T*>(lw.kc) + int64_t{j0} * row_stride + g * D;
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
    stamp(trace, kTraceScores);
    softmax_rows(sc, ml, HG, nj, a.chunk_max);
    consumer_sync();
    stamp(trace, kTraceSoftmax);
    // P V: a thread per (head, dimension) over the unit's keys, v from
    // shared memory (consecutive dimensions in consecutive lanes); no
    // cross-warp sums.
    const T* vg = static_cast<const T*>(lw.vc) + int64_t{j0} * row_stride + g * D;
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
        // (whole warps take this loop: HG D is a multiple of 32; d and d + 1 in adjacent lanes)
        const float inv = 1.f / ml[2 * hh + 1];
        const float next = __shfl_down_sync(0xffffffffu, o, 1);
        if ((d & 1) == 0)
          ll_store(attn + ((g * HG + hh) * D + d) / 2, pack2<T>(o * inv, next * inv), flag);
        continue;
      }
      LLWord* dst = dst_base + int64_t{hh} * pc * (D + 2);
      ll_store(dst + 2 + d, __float_as_uint(o), flag);
      if (d == 0) {
        ll_store(dst, __float_as_uint(ml[2 * hh]), flag);
        ll_store(dst + 1, __float_as_uint(ml[2 * hh + 1]), flag);
      }
    }
    stamp(trace, kTracePV);
    consumer_sync();
  }
  stamp(trace, kTracePartials);
  // The merge of the partials, as they arrive: warps of one block take a
  // query head each, or W warps a head over contiguous shares of the chunks
  // (merge_chunks), the W results then combined through shared memory.
  // SPREAD (dense weights): unit c of kv head g merges heads c, c + nc, ...
  // with W the fewest warps whose shares need one round trip. Otherwise
  // (int4 / int8) unit 0 merges every head of the group, a warp each, in
  // ceil(nc / merge_round_chunks) round trips. Measured (session 28, H100,
  // generate TPOT at batch 1, interleaved runs): bf16 0.883-0.888 ms spread
  // against 0.897-0.902 unit 0 (0.895 with unit 0 at two warps a head);
  // int4 0.611-0.614 spread against 0.607 unit 0 (0.626 at two warps a
  // head), int8 0.783 against 0.780 (0.792).
  if (nc == 1) return;
  // (lane's outputs of head hh to the attention words, divided by l)
  const auto store_head = [&](int hh, float l, const float (&o)[DL]) {
    const float inv = 1.f / l;
#pragma unroll
    for (int e = 0; e < DL; e += 2) {
      ll_store(attn + ((g * HG + hh) * D + lane * DL + e) / 2,
               pack2<T>(o[e] * inv, o[e + 1] * inv), flag);
    }
  };
  const auto head_base = [&](int hh) { return part + int64_t{g * HG + hh} * pc * (D + 2); };
  if constexpr (!SPREAD) {
    if (c != 0) return;
    for (int hh = warp; hh < HG; hh += kWarps) {
      float m, l, o[DL];
      merge_chunks<DL>(head_base(hh), 0, nc, D, flag, m, l, o);
      store_head(hh, l, o);
    }
  } else {
    if (c >= HG) return;
    const int nh = (HG - c + nc - 1) / nc;  // heads c, c + nc, ...
    constexpr int kRound = merge_round_chunks<DL>();
    const int W = min(max(1, (nc + kRound - 1) / kRound), kWarps / nh);
    const int per = (nc + W - 1) / W;  // chunks a warp
    float* merged = smem;              // [kWarps, D + 2]: m, l, o (the unit's scratch is done)
    if (warp < nh * W) {
      const int j = warp / W, sub = warp - j * W, hh = c + j * nc;
      float m, l, o[DL];
      merge_chunks<DL>(head_base(hh), sub * per, min(nc, (sub + 1) * per), D, flag, m, l, o);
      if (W == 1) {
        store_head(hh, l, o);
      } else {
        float* r = merged + warp * (D + 2);
        if (lane == 0) {
          r[0] = m;
          r[1] = l;
        }
#pragma unroll
        for (int e = 0; e < DL; ++e) r[2 + lane * DL + e] = o[e];
      }
    }
    if (W > 1) {
      consumer_sync();
      // a thread per (head, pair of outputs): the W shares rescaled to their maximum
      for (int i = threadIdx.x; i < nh * half; i += kThreads) {
        const int j = i / half, e = 2 * (i - j * half);
        const float* r = merged + j * W * (D + 2);
        float mx = -INFINITY;
        for (int s = 0; s < W; ++s) mx = fmaxf(mx, r[s * (D + 2)]);
        float l = 0.f, o0 = 0.f, o1 = 0.f;
        for (int s = 0; s < W; ++s) {
          const float* rs = r + s * (D + 2);
          const float f = rs[0] == -INFINITY ? 0.f : exp2f(rs[0] - mx);
          l = fmaf(rs[1], f, l);
          o0 = fmaf(rs[2 + e], f, o0);
          o1 = fmaf(rs[3 + e], f, o1);
        }
        const float inv = 1.f / l;
        ll_store(attn + ((g * HG + c + j * nc) * D + e) / 2, pack2<T>(o0 * inv, o1 * inv), flag);
      }
    }
  }
  consumer_sync();
  stamp(trace, kTraceMerged);
}

}  // namespace el::cuda::decode
