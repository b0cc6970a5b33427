// cuda_infer.cu — attention over the KV cache in a decode step
// (flash-decoding). (Greedy argmax and the positions increment are in
// cuda_decode_step.cu, cache writes in cuda_kv_cache.cu; the per-row rotary
// offsets, rope_at and split_qkv_rope_at, share the RoPE kernel in
// cuda_embedding_rope.cu.)
//
// Nothing here waits for the GPU or reads positions on the host: a step's
// launches depend only on shapes, so a decode step can be captured once as a
// CUDA graph and replayed while the rows advance (increment_i32).
//
// attention_cached. Decode has T = 1..4 queries per row over a long cache, so
// one block per (row, head) leaves the GPU idle (B = 1 with 4 KV heads would
// be 4 blocks) and each block would walk the whole context alone. Instead the
// cache [0, Smax) is cut into chunks of whole 64-key tiles, and block
// (chunk, kv head x row tile, b) takes the query rows r = t * G + g (query t,
// head kvh * G + g) of one KV group against its chunk: every K/V row is read
// once for the G query heads that share it. The host sizes the grid for Smax
// (positions live on the device); a block whose chunk starts past the keys
// its rows see (positions[b] + t + 1) exits at once. Each block writes its
// chunk's output normalised by its own softmax sum and the chunk's base-2
// log-sum-exp into f32 scratch; the chunks of each query row are then added
// weighted by 2^(lse_c - max) in chunk order (deterministic), on the
// tensor-core path by the last block of the row tile to finish (arrival
// counters in ctx().counters: no second launch), else by a combine kernel.
// With a single chunk the block writes `out` itself.
//  * Tensor-core path (q, caches and out of one dtype, bf16/f16, any head dim
//    D <= 256 that is a multiple of 8): the kernel computes over a tile width
//    Dt of 64, 128, 192 or 256 (the swizzle needs Dt / 8 a multiple of 8) and
//    zero-fills the columns D..Dt, which add nothing to q.k or to the output
//    (MLA's 176-dim latent rows, kv_lora_rank 112 + rope 64, run at Dt 192:
//    the cache keeps its 176 values a token, only shared memory is padded):
//    the scheme of attention_fwd.cu — mma.sync m16n8k16 with f32
//    accumulators, K/V tiles double-buffered through swizzled shared memory
//    by cp.async, online softmax in base 2 with the scale folded in. A warp
//    owns 16 query rows; when the group has fewer rows than 4 warps x 16
//    (decode: T x G = 8), the warps split each key tile instead (kKS warps of
//    64 / kKS keys on the same rows) and their softmax states are merged
//    through shared memory at the end.
//  * SIMT path (any other dtype mix, any head dim <= 576): one warp per query
//    row, a lane per key, same chunks and outputs; f32 arithmetic throughout.
//    Each lane keeps ceil(D / 32) output dims (the kernel is instantiated for
//    1, 2, 4, 6, 8, 10, 12 and 18, so D 64/128 run exactly what they did before
//    and MLA's latent rows, D = kv_lora_rank + qk_rope_head_dim up to 576, fit).
// ALiBi (a.alibi, f32 [H]): the score of cache row j for query t of row b
// (head h) gets slope_h * (j - (positions[b] + t)), folded into the base-2
// logits; chunk lse values include it, so the merge is unchanged. Without it
// the kernels compute what they did before (no slope is read).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>

#include "cuda/attention_device.cuh"
#include "cuda/cuda_cached_attention.cuh"
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

template <typename T, int D, int kRT, int DV>
struct TcCfg {
  static constexpr int kBM = 16 * kRT;          // query rows per block (kRT warp row tiles)
  static constexpr int kKS = kTcWarps / kRT;    // warps splitting each key tile
  static constexpr int kBNW = kTileKeys / kKS;  // keys per warp per tile (16, 32 or 64)
  static constexpr int kOPitch = DV + 8;        // f32 staging pitch: conflict-free float2 stores
  static constexpr size_t kQBytes = size_t(kBM) * D * sizeof(T);
  static constexpr size_t kKVBytes = 4 * size_t(kTileKeys) * D * sizeof(T);  // K, V x 2 stages, or shared K/V x 4
  static constexpr size_t kStageBytes = (size_t(kTcWarps) * 16 * kOPitch + kTcWarps * 16 * 2) * 4;
  static constexpr size_t kSmem = kQBytes + (kKVBytes > kStageBytes ? kKVBytes : kStageBytes);
  static_assert(kBNW % 16 == 0, "a warp's keys must fill whole k-steps of P V");
};

// Decode (D 64, one row tile) is memory-bound: 4 blocks per SM (<= 128
// registers) keep more K/V tiles in flight than the 133 registers ptxas picks alone.
// D here is the tile width; a.D (<= D, a multiple of 8) the rows' real width.
// The values are the tile's columns [kV0, kV0 + DV) (a.Dv <= DV of them real):
// DV = D, kV0 = 0 for attention; MLA's latent values sit after its 64 RoPE
// columns, so its P V runs over 128 columns of the 192-wide tile instead of
// all 192 (a third fewer MMAs, 32 fewer accumulator registers, and a merge
// of 112 instead of 176 columns).
template <typename T, int D, int kRT, int DV, int kV0>
__global__ void __launch_bounds__(kTcWarps * 32, (D == 64 && kRT == 1) ? 4 : 1)
    cached_tc_kernel(const CachedArgs a) {
  static_assert(DV % 16 == 0 && kV0 % 16 == 0 && kV0 + DV <= D, "value columns inside the tile");
  using Cfg = TcCfg<T, D, kRT, DV>;
  constexpr int kBM = Cfg::kBM, kBNW = Cfg::kBNW, kKS = Cfg::kKS, kOP = Cfg::kOPitch;
  constexpr int kBN = kTileKeys, kThreads = kTcWarps * 32;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [kBM][D]
  T* sK = sQ + kBM * D;                    // [2][kBN][D]
  // MLA passes one tensor as K and V (its latent rows are both): V tiles are then the K tiles.
  const bool kv_shared = a.k == a.v;
  T* sV = kv_shared ? sK : sK + 2 * kBN * D;  // [2][kBN][D]
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int chunk = blockIdx.x;
  const int kvh = blockIdx.y / a.row_tiles;
  const int r0 = (blockIdx.y % a.row_tiles) * a.rpb;  // first query row of the block
  const int b = blockIdx.z;
  const int pos = a.pos[b];
  // Keys any row of the block sees: [0, n_end) (the last real row sees the most).
  const int n_end = visible_keys(a, pos, (min(r0 + a.rpb, a.rows) - 1) / a.G);
  const int tiles_vis = (n_end + kBN - 1) / kBN;
  const int tile0 = chunk * a.tpc;
  const int rows_in_block = min(a.rpb, a.rows - r0);  // (MMA rows past it compute, unused)
  if (chunk > 0 && tile0 >= tiles_vis) {  // the whole block: nothing to read
    if (a.arrivals) {
      cached_chunk_arrive<kTcWarps>(a, b, kvh, r0, rows_in_block,
                                    reinterpret_cast<float*>(smem_raw));
    }
    return;
  }
  const int n_tiles = max(0, min(tile0 + a.tpc, tiles_vis) - tile0);

  const int Dr = a.D, dchunks = Dr / 8;  // the rows' width; columns [Dr, D) are zero
  const long long kv_stride = static_cast<long long>(a.Hkv) * Dr;
  const T* q = static_cast<const T*>(a.q) + static_cast<long long>(b) * a.T * a.H * Dr;
  const T* kg = static_cast<const T*>(a.k) + (static_cast<long long>(b) * a.smax * a.Hkv + kvh) * Dr;
  const T* vg = static_cast<const T*>(a.v) + (static_cast<long long>(b) * a.smax * a.Hkv + kvh) * Dr;

  // Q rows: block row r is query t = (r0 + r) / G, head kvh * G + (r0 + r) % G;
  // rows past T x G are zero.
  {
    constexpr int kChunks = D / 8;
    for (int idx = tid; idx < kBM * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = idx % kChunks;
      const int row = r0 + r;
      const bool ok = r < rows_in_block && c < dchunks;
      const int t = row / a.G;
      const T* src =
          ok ? q + (static_cast<long long>(t) * a.H + kvh * a.G + (row - t * a.G)) * Dr + c * 8 : q;
      cp_async16(attn::smem_addr(sQ + attn::swz<D>(r, c * 8)), src, ok);
    }
  }
  // K/V tiles in flight: with one tensor as K and V its tiles fit four stages in
  // the K and V buffers, three loads ahead of the math instead of one (MLA's
  // blocks walk 4-8 tiles of 22 KB at 8K context, latency-bound).
  // (At D 256 the registers would spill: two stages there.) H100, MLA at 8K
  // (cuda_decode_attention_bench): B1 15.2 -> 15.1 us, B8 21.6 -> 21.0 us.
  const int stages = D <= 192 && kv_shared ? 4 : 2;
  auto load_stage = [&](int it) {  // tile `it` of the chunk into buffer it % stages
    if (it < n_tiles) {
      const int n0 = (tile0 + it) * kBN;
      const int buf = it % stages;
      attn::load_tile<kBN, D, kThreads>(sK + buf * kBN * D, kg + n0 * kv_stride, kv_stride,
                                        n_end - n0, tid, dchunks);
      if (!kv_shared) {
        attn::load_tile<kBN, D, kThreads>(sV + buf * kBN * D, vg + n0 * kv_stride, kv_stride,
                                          n_end - n0, tid, dchunks);
      }
    }
    cp_async_commit();  // (empty past the last tile: the group count stays uniform)
  };
  for (int it = 0; it < stages - 1; ++it) load_stage(it);  // Q rides in the first group

  // This warp: rows [row_base, +16) of the block, keys [ks * kBNW, +kBNW) of each tile.
  const int rt = warp % kRT, ks = warp / kRT;
  const int row_base = rt * 16;
  const int first_row = r0 + row_base;
  const bool active = first_row < a.rows;
  // Last key each of this lane's rows (g, g + 8) sees; padding rows take the
  // last real row's. lim_lo / lim_hi: the warp's smallest and largest.
  int lim[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    lim[hf] = visible_keys(a, pos, min(first_row + g + 8 * hf, a.rows - 1) / a.G) - 1;
  }
  const int lim_lo = visible_keys(a, pos, min(first_row, a.rows - 1) / a.G) - 1;
  const int lim_hi = visible_keys(a, pos, min(first_row + 15, a.rows - 1) / a.G) - 1;
  // ALiBi: the base-2 slope of each of this lane's rows (its head); the
  // query's position is lim[hf] (positions[b] + t). smul: S -> base-2 logits.
  float slope2[2] = {0.f, 0.f};
  if (a.alibi) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = min(first_row + g + 8 * hf, a.rows - 1);
      slope2[hf] = a.alibi[kvh * a.G + row % a.G] * attn::kLog2e;
    }
  }
  const float smul = a.alibi ? 1.f : a.sl2;

  // K as the B operand of Q K^T (keys are n), V transposed as the B operand of P V.
  const attn::LaneAddr<D> ka(sK, (lane % 8) + (lane >> 4) * 8 + ks * kBNW, (lane >> 3) & 1);
  const attn::LaneAddr<D> va(sV, (lane % 8) + ((lane >> 3) & 1) * 8 + ks * kBNW, lane >> 4);
  // Q fragments stay in registers while Q's D / 4 and O's DV / 2 registers
  // fit (D 128 / DV 128, MLA's D 192 / DV 128); wider they would push the O
  // accumulators (96 registers at DV 192) into spills with the 4-stage
  // pipeline, so they are re-read from sQ (untouched until the epilogue) at each k-step.
  // (MLA's D 192 with 2 or 4 row tiles spills: their warps hold 32 / 64 keys of scores.)
  constexpr bool kQRegs = D <= 128 || (D + DV <= 320 && kRT == 1);
  uint32_t qf[kQRegs ? D / 16 : 1][4];
  float o[DV / 8][4];
  float row_m[2] = {-INFINITY, -INFINITY}, row_l[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < DV / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;

  for (int it = 0; it < n_tiles; ++it) {
    const int cur = it % stages;
    const int n0 = (tile0 + it) * kBN;
    if (stages == 4) {
      cp_async_wait<2>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile `it` landed; everyone is done with the buffer of tile it - 1
    if constexpr (kQRegs) {
      if (it == 0) {
        const attn::LaneAddr<D> qa(sQ, row_base + (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) attn::ldsm_x4(qf[kk], qa.at(0, kk));
      }
    }
    load_stage(it + stages - 1);  // into the buffer of tile it - 1
    const int nw = n0 + ks * kBNW;  // this warp's first key in the tile
    if (!active || nw > lim_hi) continue;
    const uint32_t stage = cur * kBN * D * sizeof(T);

    // S = Q K^T over this warp's keys.
    float s[kBNW / 8][4];
#pragma unroll
    for (int j = 0; j < kBNW / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    if constexpr (kQRegs) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < kBNW / 16; ++np) {
          uint32_t bk[4];
          attn::ldsm_x4(bk, ka.at(np * 16, kk) + stage);
          attn::mma16816<T>(s[2 * np], qf[kk], bk[0], bk[1]);
          attn::mma16816<T>(s[2 * np + 1], qf[kk], bk[2], bk[3]);
        }
      }
    } else {
      const attn::LaneAddr<D> qa(sQ, row_base + (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qt[4];
        attn::ldsm_x4(qt, qa.at(0, kk));
#pragma unroll
        for (int np = 0; np < kBNW / 16; ++np) {
          uint32_t bk[4];
          attn::ldsm_x4(bk, ka.at(np * 16, kk) + stage);
          attn::mma16816<T>(s[2 * np], qt, bk[0], bk[1]);
          attn::mma16816<T>(s[2 * np + 1], qt, bk[2], bk[3]);
        }
      }
    }
    // Keys after a row's position (and zero-filled rows past n_end) are masked.
    if (a.alibi) {
#pragma unroll
      for (int j = 0; j < kBNW / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nw + j * 8 + 2 * t4 + (e & 1);
          const int hf = e >> 1;
          s[j][e] = col > lim[hf] ? -INFINITY
                                  : fmaf(s[j][e], a.sl2, slope2[hf] * float(col - lim[hf]));
        }
    } else if (nw + kBNW - 1 > lim_lo) {
#pragma unroll
      for (int j = 0; j < kBNW / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nw + j * 8 + 2 * t4 + (e & 1);
          if (col > lim[e >> 1]) s[j][e] = -INFINITY;
        }
    }

    // Online softmax (base 2, scale folded into the exponent), as attention_fwd.cu.
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kBNW / 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * hf], s[j][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_m[hf], mx * smul);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet
      const float alpha = exp2f(row_m[hf] - m_use);
      row_m[hf] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kBNW / 8; ++j)
#pragma unroll
        for (int e = 2 * hf; e < 2 * hf + 2; ++e) {
          const float p = exp2f(fmaf(s[j][e], smul, -m_use));
          s[j][e] = p;
          sum += p;
        }
      row_l[hf] = row_l[hf] * alpha + sum;
#pragma unroll
      for (int j = 0; j < DV / 8; ++j) {
        o[j][2 * hf] *= alpha;
        o[j][2 * hf + 1] *= alpha;
      }
    }

    // O += P V (P packed to 16 bits straight from the accumulators).
#pragma unroll
    for (int kk = 0; kk < kBNW / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = attn::pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = attn::pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = attn::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = attn::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < DV / 16; ++dp) {
        uint32_t bv[4];
        attn::ldsm_x4_trans(bv, va.at(kk * 16, dp + kV0 / 16) + stage);
        attn::mma16816<T>(o[2 * dp], pa, bv[0], bv[1]);
        attn::mma16816<T>(o[2 * dp + 1], pa, bv[2], bv[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // K/V buffers free: reused below as f32 staging

  // Every warp stages its (m, l, O) for its 16 rows; then the block merges the
  // kKS warps of each row tile: O = sum_w 2^(m_w - M) O_w, same for l.
  float* sO = reinterpret_cast<float*>(sK);  // [warps][16][kOP]
  float* sML = sO + kTcWarps * 16 * kOP;     // [warps][16][2]: m, l
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float l = row_l[hf];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int slot = warp * 16 + g + 8 * hf;
    float* orow = sO + slot * kOP;
#pragma unroll
    for (int j = 0; j < DV / 8; ++j) {
      *reinterpret_cast<float2*>(orow + 8 * j + 2 * t4) =
          make_float2(o[j][2 * hf], o[j][2 * hf + 1]);
    }
    if (t4 == 0) {
      sML[2 * slot] = row_m[hf];
      sML[2 * slot + 1] = l;
    }
  }
  __syncthreads();
  constexpr int kQuads = DV / 4;
  const int Dv = a.Dv;
  for (int idx = tid; idx < kBM * kQuads; idx += kThreads) {
    const int rr = idx / kQuads, d = (idx % kQuads) * 4;
    const int row = r0 + rr;
    if (rr >= rows_in_block || d >= Dv) continue;  // (Dv % 8 == 0: a quad is all in or out)
    const int base_slot = rr;  // = warp rr / 16 (the row tile's ks = 0 warp) x 16 + row rr % 16
    float mmax = -INFINITY;
#pragma unroll
    for (int w = 0; w < kKS; ++w) mmax = fmaxf(mmax, sML[2 * (base_slot + w * kRT * 16)]);
    float l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kKS; ++w) {
      const int slot = base_slot + w * kRT * 16;
      const float mw = sML[2 * slot];
      const float f = mw == -INFINITY ? 0.f : exp2f(mw - mmax);
      l += f * sML[2 * slot + 1];
      const float4 ov = *reinterpret_cast<const float4*>(sO + slot * kOP + d);
      acc.x += f * ov.x;
      acc.y += f * ov.y;
      acc.z += f * ov.z;
      acc.w += f * ov.w;
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int t = row / a.G;
    const long long orow =
        (static_cast<long long>(b) * a.T + t) * a.H + kvh * a.G + (row - t * a.G);
    if (a.nchunks == 1) {
      uint2 packed;
      packed.x = attn::pack2<T>(acc.x * inv, acc.y * inv);
      packed.y = attn::pack2<T>(acc.z * inv, acc.w * inv);
      *reinterpret_cast<uint2*>(static_cast<T*>(a.out) + orow * Dv + d) = packed;
    } else {
      const long long slot = orow * a.nchunks + chunk;
      *reinterpret_cast<float4*>(a.opart + slot * Dv + d) =
          make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
      if (d == 0) a.lse[slot] = l > 0.f ? mmax + log2f(l) : -INFINITY;
    }
  }
  if (a.arrivals) {
    __syncthreads();  // the staging in shared memory is read above; sw reuses it
    cached_chunk_arrive<kTcWarps>(a, b, kvh, r0, rows_in_block, reinterpret_cast<float*>(smem_raw));
  }
}

// One warp per query row (block row tile of kSimtWarps rows of one KV group):
// lane j scores key j0 + j of a 32-key group from the f32 query in shared
// memory, online softmax over the groups, then each lane adds p_j v_j to the
// head dims it owns (d = lane + 32 i). Cache elements are read as TC, q and
// out through their run-time dtypes.
template <typename TC, int kDPL>
__global__ void __launch_bounds__(kSimtWarps * 32) cached_simt_kernel(const CachedArgs a) {
  __shared__ float sq[kSimtWarps][kDPL * 32];
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int chunk = blockIdx.x;
  const int kvh = blockIdx.y / a.row_tiles;
  const int row = (blockIdx.y % a.row_tiles) * a.rpb + warp;
  const int b = blockIdx.z;
  if (row >= a.rows) return;  // the whole warp; no block barrier below
  const int t = row / a.G;
  const int n_vis = visible_keys(a, a.pos[b], t);
  const int chunk_keys = a.tpc * kTileKeys;
  const int k0 = chunk * chunk_keys;
  if (chunk > 0 && k0 >= n_vis) return;  // the combine reads only chunks the row sees
  const int k1 = min(k0 + chunk_keys, n_vis);
  const int D = a.D, Dv = a.Dv;  // key width; values: columns [a.v0, a.v0 + Dv)
  const long long orow = (static_cast<long long>(b) * a.T + t) * a.H + kvh * a.G + (row - t * a.G);
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    sq[warp][d] = d < D ? ld(a.q, a.q_dtype, orow * D + d) * a.sl2 : 0.f;
  }
  __syncwarp();
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;
  const long long kv_base = (static_cast<long long>(b) * a.smax * a.Hkv + kvh) * D;
  const TC* kb = static_cast<const TC*>(a.k) + kv_base;
  const TC* vb = static_cast<const TC*>(a.v) + kv_base + a.v0;
  // ALiBi: base-2 slope of this row's head; the query sits at n_vis - 1.
  const float slope2 = a.alibi ? a.alibi[kvh * a.G + (row - t * a.G)] * attn::kLog2e : 0.f;

  float m = -INFINITY, l = 0.f, acc[kDPL];
#pragma unroll
  for (int i = 0; i < kDPL; ++i) acc[i] = 0.f;
  for (int j0 = k0; j0 < k1; j0 += 32) {
    const int j = j0 + lane;
    float s = -INFINITY;
    if (j < k1) {
      const TC* kr = kb + j * kv_stride;
      float dot = 0.f;
      for (int d = 0; d < D; ++d) dot = fmaf(sq[warp][d], to_f<TC>(kr[d]), dot);
      s = fmaf(slope2, float(j - (n_vis - 1)), dot);
    }
    const float m_new = fmaxf(m, warp_max(s));  // finite: key j0 is visible
    const float alpha = exp2f(m - m_new);
    const float p = j < k1 ? exp2f(s - m_new) : 0.f;
    l = l * alpha + warp_sum(p);
#pragma unroll
    for (int i = 0; i < kDPL; ++i) acc[i] *= alpha;
    const int cnt = min(32, k1 - j0);
    for (int jj = 0; jj < cnt; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const TC* vr = vb + (j0 + jj) * kv_stride;
#pragma unroll
      for (int i = 0; i < kDPL; ++i) {
        const int d = lane + 32 * i;
        if (d < Dv) acc[i] = fmaf(pj, to_f<TC>(vr[d]), acc[i]);
      }
    }
    m = m_new;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  if (a.nchunks == 1) {
#pragma unroll
    for (int i = 0; i < kDPL; ++i) {
      const int d = lane + 32 * i;
      if (d < Dv) st(a.out, a.out_dtype, orow * Dv + d, acc[i] * inv);
    }
  } else {
    const long long slot = orow * a.nchunks + chunk;
#pragma unroll
    for (int i = 0; i < kDPL; ++i) {
      const int d = lane + 32 * i;
      if (d < Dv) a.opart[slot * Dv + d] = acc[i] * inv;
    }
    if (lane == 0) a.lse[slot] = l > 0.f ? m + log2f(l) : -INFINITY;
  }
}

// Launch shape of the cached attention (H100, cuda_decode_attention_bench and
// generate --bench at 8K context, docs/PERFORMANCE.md "MLA decode"):
//  * at most kChunkCap chunks per row: 64 made MLA's batch-1 decode 12%
//    slower than 32 (the merge reads every chunk's partial output);
//  * about kBlocksPerSm blocks per SM in all: 8 per SM made the merges of
//    batch 8 at 8K 15-30% slower than 2 for the same K/V reads;
//  * a KV group of 9 to 16 query rows (MLA's and MQA's 14 heads at one
//    query) split over two blocks that read the same K/V tiles (the second
//    from L2), each merging half the rows: MLA's attention at batch 1 and 8K
//    21.7 -> 15.8 us, MQA's 12.3 -> 8.8 us; but only while there are at most
//    kSplitMaxGroups (batch x KV head) groups: MLA at batch 32 and 8K took
//    72.4 us split against 57.4 us not (batch 8: 17.9 split, 20.0 not).
constexpr int kChunkCap = 32;
constexpr int kBlocksPerSm = 2;
static_assert(kChunkCap <= kMaxChunks, "the merge holds kMaxChunks weights");

constexpr int64_t kSplitMaxGroups = 16;

// Tuning switches for A/B runs of the launch shape (read once per process):
// EL_CACHED_CHUNK_CAP (1..kMaxChunks, default kChunkCap) and
// EL_CACHED_SPLIT_ROWS=0 / 1 (never / always split a 9-16 row group over two
// blocks; unset: while there are at most kSplitMaxGroups groups).
int chunk_cap() {
  static const int v = env_int("EL_CACHED_CHUNK_CAP", kChunkCap, 1, kMaxChunks);
  return v;
}
bool split_row_groups(int64_t groups) {
  static const int v = env_int("EL_CACHED_SPLIT_ROWS", -1, 0, 1);
  return v < 0 ? groups <= kSplitMaxGroups : v == 1;
}

// groups: batch x KV heads, the blocks there are before chunking.
int64_t tc_rows_per_block(int64_t rows, int rt, int64_t groups) {
  return rt == 1 && rows > 8 && split_row_groups(groups) ? (rows + 1) / 2 : 16 * rt;
}

// Value columns that do not start at column 0: the tensor-core kernel takes
// them at this offset only (MLA's RoPE key width in every card we know:
// DeepSeek-V2/V3 and the paper's use 64), from a 192- or 256-wide tile, the
// values in the next 128 / 192 columns; other offsets run on the SIMT path.
constexpr int kMlaValueOffset = 64;
bool tc_value_tile(int64_t d, int64_t dv, int64_t v0) {
  if (v0 == 0) return dv == d;
  const int64_t tile = d <= 192 ? 192 : 256;
  return v0 == kMlaValueOffset && d > 128 && dv % 8 == 0 && v0 + dv <= d &&
         dv <= tile - kMlaValueOffset;
}

// One warp per query row (b, t, h): cached_combine_row.
constexpr int kCombineWarps = 4;
__global__ void __launch_bounds__(kCombineWarps * 32)
    cached_combine_kernel(const CachedArgs a, long long total_rows) {
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const long long orow = static_cast<long long>(blockIdx.x) * kCombineWarps + threadIdx.x / 32;
  if (orow >= total_rows) return;
  cached_combine_row(a, orow, threadIdx.x % 32);
}

template <typename T, int D, int kRT, int DV = D, int kV0 = 0>
void launch_cached_tc(const CachedArgs& a, dim3 grid, cudaStream_t s) {
  using Cfg = TcCfg<T, D, kRT, DV>;
  auto kernel = cached_tc_kernel<T, D, kRT, DV, kV0>;
  // Once per instantiation (one GPU per process): not a stream operation, but
  // kept out of the per-step path all the same.
  static const cudaError_t attr = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Cfg::kSmem));
  EL_CUDA_CHECK(attr);
  launch_kernel(kernel, grid, kTcWarps * 32, Cfg::kSmem, s, a);
}

// MLA's value columns after its 64 RoPE columns (tc_value_tile): the
// latent's 128 (0.5B: 112 real) of a 192-wide tile, or 192 of 256 (1.5B).
template <typename T, int D, int DV>
void launch_cached_tc_latent(const CachedArgs& a, int rt, dim3 grid, cudaStream_t s) {
  if (rt == 1) return launch_cached_tc<T, D, 1, DV, kMlaValueOffset>(a, grid, s);
  if (rt == 2) return launch_cached_tc<T, D, 2, DV, kMlaValueOffset>(a, grid, s);
  return launch_cached_tc<T, D, 4, DV, kMlaValueOffset>(a, grid, s);
}

// The tile width for rows of a.D values: the smallest of 64, 128, 192, 256 that holds them.
template <typename T>
void launch_cached_tc_typed(const CachedArgs& a, int rt, dim3 grid, cudaStream_t s) {
  if (a.v0 != 0) {  // tc_value_tile admitted it: v0 = kMlaValueOffset
    if (a.D <= 192) return launch_cached_tc_latent<T, 192, 128>(a, rt, grid, s);
    return launch_cached_tc_latent<T, 256, 192>(a, rt, grid, s);
  }
  if (a.D <= 64) {
    if (rt == 1) return launch_cached_tc<T, 64, 1>(a, grid, s);
    if (rt == 2) return launch_cached_tc<T, 64, 2>(a, grid, s);
    return launch_cached_tc<T, 64, 4>(a, grid, s);
  }
  if (a.D <= 128) {
    if (rt == 1) return launch_cached_tc<T, 128, 1>(a, grid, s);
    if (rt == 2) return launch_cached_tc<T, 128, 2>(a, grid, s);
    return launch_cached_tc<T, 128, 4>(a, grid, s);
  }
  // MLA's latent rows (kv_lora_rank + rope: 112 + 64 at 0.5B, 128 + 64) with
  // every query head in one KV group: G = H rows per query position.
  if (a.D <= 192) {
    if (rt == 1) return launch_cached_tc<T, 192, 1>(a, grid, s);
    if (rt == 2) return launch_cached_tc<T, 192, 2>(a, grid, s);
    return launch_cached_tc<T, 192, 4>(a, grid, s);
  }
  if (rt == 1) return launch_cached_tc<T, 256, 1>(a, grid, s);
  if (rt == 2) return launch_cached_tc<T, 256, 2>(a, grid, s);
  return launch_cached_tc<T, 256, 4>(a, grid, s);
}

// The SIMT kernel with kDPL = dpl output dims per lane (one of the counts
// attention_cached picks).
template <typename TC>
void launch_cached_simt(const CachedArgs& a, int dpl, dim3 grid, cudaStream_t s) {
  switch (dpl) {
    case 1: return launch_kernel(cached_simt_kernel<TC, 1>, grid, kSimtWarps * 32, 0, s, a);
    case 2: return launch_kernel(cached_simt_kernel<TC, 2>, grid, kSimtWarps * 32, 0, s, a);
    case 4: return launch_kernel(cached_simt_kernel<TC, 4>, grid, kSimtWarps * 32, 0, s, a);
    case 6: return launch_kernel(cached_simt_kernel<TC, 6>, grid, kSimtWarps * 32, 0, s, a);
    case 8: return launch_kernel(cached_simt_kernel<TC, 8>, grid, kSimtWarps * 32, 0, s, a);
    case 10: return launch_kernel(cached_simt_kernel<TC, 10>, grid, kSimtWarps * 32, 0, s, a);
    case 12: return launch_kernel(cached_simt_kernel<TC, 12>, grid, kSimtWarps * 32, 0, s, a);
    default: return launch_kernel(cached_simt_kernel<TC, 18>, grid, kSimtWarps * 32, 0, s, a);
  }
}

}  // namespace

void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& positions, float scale, Tensor& out,
                      const Tensor& alibi_slopes, int64_t value_offset) {
  for (const Tensor* t : TensorPtrs{&q, &k_cache, &v_cache, &out}) {
    expect_cuda_float(*t, "attention_cached");
  }
  EL_CUDA_ENSURE(q.ndim() == 4 && k_cache.ndim() == 4 && k_cache.shape() == v_cache.shape() &&
                     k_cache.dtype() == v_cache.dtype() && out.ndim() == 4 &&
                     out.dim(0) == q.dim(0) && out.dim(1) == q.dim(1) && out.dim(2) == q.dim(2) &&
                     value_offset >= 0 && out.dim(3) > 0 &&
                     value_offset + out.dim(3) <= q.dim(3) && q.dim(0) == k_cache.dim(0) &&
                     q.dim(3) == k_cache.dim(3) && k_cache.dim(2) > 0 &&
                     q.dim(2) % k_cache.dim(2) == 0,
                 "cuda attention_cached: q {} / out {} (values from column {}) and caches {} {} / "
                 "{} {} do not match (expected q [B, T, H, D], out [B, T, H, Dv], caches [B, "
                 "Smax, Hkv, D] of one dtype, H % Hkv == 0)",
                 shape_str(q.shape()), shape_str(out.shape()), value_offset,
                 dtype_name(k_cache.dtype()), shape_str(k_cache.shape()),
                 dtype_name(v_cache.dtype()), shape_str(v_cache.shape()));
  expect_positions(positions, q.dim(0), "attention_cached");
  if (alibi_slopes.defined()) {
    expect_cuda_dtype(alibi_slopes, DType::f32, "attention_cached (alibi_slopes)");
    EL_CUDA_ENSURE(alibi_slopes.numel() == q.dim(2),
                   "cuda attention_cached: {} ALiBi slopes for {} heads", alibi_slopes.numel(),
                   q.dim(2));
  }
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3), dv = out.dim(3);
  const int64_t smax = k_cache.dim(1), hkv = k_cache.dim(2);
  EL_CUDA_ENSURE(d > 0 && d <= kMaxHeadDim, "cuda attention_cached: head dim {} outside [1, {}]", d,
                 kMaxHeadDim);
  EL_CUDA_ENSURE(std::isfinite(scale) && scale > 0.f,
                 "cuda attention_cached: scale {} must be positive", scale);
  if (b == 0 || t == 0 || h == 0) return;
  const int64_t group = h / hkv, rows = t * group;
  const DType cd = k_cache.dtype();
  const bool tc = q.dtype() == cd && out.dtype() == cd && (cd == DType::bf16 || cd == DType::f16) &&
                  d <= 256 && d % 8 == 0 && tc_value_tile(d, dv, value_offset) &&
                  aligned16(q.raw()) && aligned16(k_cache.raw()) && aligned16(v_cache.raw()) &&
                  aligned16(out.raw());
  const int rt = rows <= 16 ? 1 : (rows <= 32 ? 2 : 4);  // tensor-core warp row tiles per block
  const int64_t block_rows = tc ? tc_rows_per_block(rows, rt, b * hkv) : kSimtWarps;
  const int64_t row_tiles = (rows + block_rows - 1) / block_rows;
  EL_CUDA_ENSURE(
      b <= 65535 && hkv * row_tiles <= 65535 && smax <= INT32_MAX / 2 && b * t * h <= INT32_MAX,
      "cuda attention_cached: q {} / cache {} too large for the launch grid", shape_str(q.shape()),
      shape_str(k_cache.shape()));
  // Chunks of whole tiles: about kBlocksPerSm blocks per SM when the whole
  // cache is in use; fewer, larger chunks when rows and heads already fill
  // the GPU (the launch-shape comment above).
  Context& cx = ctx();
  const int64_t tiles = std::max<int64_t>(1, (smax + kTileKeys - 1) / kTileKeys);
  const int64_t base_blocks = b * hkv * row_tiles;
  const int64_t target = int64_t{kBlocksPerSm} * cx.sm_count;
  // At most kChunkCap chunks: the merge's latency grows with their count;
  // at batch 1 and 8K context, 128 one-tile chunks made the merge (then one
  // warp per row) 4x the attention itself.
  const int64_t want = std::clamp<int64_t>((target + base_blocks - 1) / base_blocks, 1,
                                           std::min<int64_t>(tiles, chunk_cap()));
  const int64_t tpc = (tiles + want - 1) / want;
  const int64_t nchunks = (tiles + tpc - 1) / tpc;

  CachedArgs a{};
  a.q = q.raw();
  a.k = k_cache.raw();
  a.v = v_cache.raw();
  a.out = out.raw();
  a.pos = positions.data<int32_t>();
  a.alibi = alibi_slopes.defined() ? alibi_slopes.data<float>() : nullptr;
  a.T = static_cast<int>(t);
  a.H = static_cast<int>(h);
  a.Hkv = static_cast<int>(hkv);
  a.G = static_cast<int>(group);
  a.D = static_cast<int>(d);
  a.Dv = static_cast<int>(dv);
  a.v0 = static_cast<int>(value_offset);
  a.smax = static_cast<int>(smax);
  a.rows = static_cast<int>(rows);
  a.row_tiles = static_cast<int>(row_tiles);
  a.rpb = static_cast<int>(block_rows);
  a.nchunks = static_cast<int>(nchunks);
  a.tpc = static_cast<int>(tpc);
  a.sl2 = scale * attn::kLog2e;
  a.q_dtype = q.dtype();
  a.out_dtype = out.dtype();
  Tensor scratch;  // chunk outputs and their log-sum-exps (cached allocator block)
  const int64_t total_rows = b * t * h;
  if (nchunks > 1) {
    const int64_t slots = total_rows * nchunks;
    scratch = Tensor::empty({slots * (dv + 1)}, DType::f32, q.device());
    a.opart = scratch.data<float>();
    a.lse = a.opart + slots * dv;
  }
  const dim3 grid(static_cast<unsigned>(nchunks), static_cast<unsigned>(hkv * row_tiles),
                  static_cast<unsigned>(b));
  // The tensor-core kernel merges its chunks in its last block per row tile
  // when the arrival counters suffice (one launch less per layer at decode).
  const bool self_merge = tc && nchunks > 1 && b * hkv * row_tiles <= kCounterSlots;
  a.arrivals = self_merge ? cx.counters : nullptr;
  if (tc) {
    if (cd == DType::bf16) {
      launch_cached_tc_typed<__nv_bfloat16>(a, rt, grid, cx.stream);
    } else {
      launch_cached_tc_typed<__half>(a, rt, grid, cx.stream);
    }
    EL_CUDA_CHECK_LAUNCH("cached_tc_kernel");
  } else {
    // Output dims per lane: ceil(d / 32) rounded up to an instantiated count.
    const int64_t need = (d + 31) / 32;
    int dpl = 18;
    for (int c : {1, 2, 4, 6, 8, 10, 12, 18}) {
      if (need <= c) {
        dpl = c;
        break;
      }
    }
    EL_DISPATCH_FLOAT(cd, TC, { launch_cached_simt<TC>(a, dpl, grid, cx.stream); });
    EL_CUDA_CHECK_LAUNCH("cached_simt_kernel");
  }
  if (nchunks > 1 && !self_merge) {
    const auto blocks = static_cast<unsigned>((total_rows + kCombineWarps - 1) / kCombineWarps);
    launch_kernel(cached_combine_kernel, blocks, kCombineWarps * 32, 0, cx.stream, a,
                  static_cast<long long>(total_rows));
    EL_CUDA_CHECK_LAUNCH("cached_combine_kernel");
  }
}

}  // namespace el::cuda
