// cuda_cached_attention.cuh — internal to src/cuda/cuda_infer.cu: the
// arguments of the decode attention over the KV cache (attention_cached, the
// file comment of cuda_infer.cu explains the scheme) and the chunk merge its
// kernels share: the keys a query row sees, a row's chunk weights, one warp
// merging one row (the combine kernel), and the tensor-core kernel's own
// merge by the last block of a row tile to arrive. Device code only; kept
// apart so cuda_infer.cu holds the kernels and the launch shape.
#pragma once

#include <cmath>

#include "cuda/attention_device.cuh"
#include "cuda/cuda_common.cuh"

namespace el::cuda {
namespace {
constexpr int kTileKeys = 64;  // keys per K/V tile; chunks are whole tiles on both paths
constexpr int kMaxChunks = 64;  // chunks per row: two weights per lane in the merge
constexpr int kTcWarps = 4;
constexpr int kSimtWarps = 4;
// The SIMT path's limit: MLA's absorbed decode attends over cache rows of
// kv_lora_rank + qk_rope_head_dim values (DeepSeek-V2/V3: 512 + 64).
constexpr int kMaxHeadDim = 576;

struct CachedArgs {
  const void* q;  // [B, T, H, D]
  const void* k;  // [B, Smax, Hkv, D]
  const void* v;
  void* out;           // [B, T, H, Dv]
  float* opart;        // [B * T * H, nchunks, Dv] f32 chunk outputs (nchunks > 1)
  float* lse;          // [B * T * H, nchunks] f32 base-2 log-sum-exp of sl2 * q.k per chunk
  // [B * Hkv * row_tiles] arrival counters (ctx().counters) when the
  // tensor-core kernel merges the chunks itself (its last block per row tile
  // does); nullptr: cached_combine_kernel runs after it.
  int* arrivals;
  const int32_t* pos;  // [B]
  const float* alibi;  // [H] ALiBi slopes, or nullptr
  int T, H, Hkv, G, D, smax;  // D: the rows' head dim (the tensor-core tile may be wider)
  int Dv, v0;  // values: columns [v0, v0 + Dv) of the V rows; the output's width Dv
  int rows;                  // T * G query rows per KV group
  int row_tiles;             // blocks along those rows
  int rpb;                   // query rows per block (tensor cores: <= 16 kRT, the MMA rows)
  int nchunks;               // key chunks (grid x)
  int tpc;                   // tiles of kTileKeys keys per chunk
  float sl2;                 // scale * log2(e)
  DType q_dtype, out_dtype;  // SIMT path and combine (the tensor-core path is one type)
};

// Keys [0, n) that query t of a row at cache position `pos` sees, clamped to the cache.
__device__ __forceinline__ int visible_keys(const CachedArgs& a, int pos, int t) {
  const long long n = static_cast<long long>(pos) + t + 1;
  return static_cast<int>(n < 0 ? 0 : (n > a.smax ? a.smax : n));
}

// The number of chunks query row orow = (b, t, h) sees (each holds a key it sees).
__device__ __forceinline__ int row_chunks(const CachedArgs& a, long long orow) {
  const long long bt = orow / a.H;
  const int t = static_cast<int>(bt % a.T);
  const int b = static_cast<int>(bt / a.T);
  const int chunk_keys = a.tpc * kTileKeys;
  return min(a.nchunks, (visible_keys(a, a.pos[b], t) + chunk_keys - 1) / chunk_keys);
}

// Row orow's chunk weights 2^(lse_c - max) for chunks lane and lane + 32
// (0 past its n_c chunks); returns their sum over the warp.
__device__ __forceinline__ float chunk_weights(const CachedArgs& a, long long orow, int n_c,
                                               int lane, float& w0, float& w1) {
  const float* lse = a.lse + orow * a.nchunks;
  const float lc0 = lane < n_c ? __ldcg(lse + lane) : -INFINITY;
  const float lc1 = lane + 32 < n_c ? __ldcg(lse + lane + 32) : -INFINITY;
  const float mx = warp_max(fmaxf(lc0, lc1));
  w0 = lane < n_c ? exp2f(lc0 - mx) : 0.f;
  w1 = lane + 32 < n_c ? exp2f(lc1 - mx) : 0.f;
  return warp_sum(w0 + w1);
}

// Query row orow = (b, t, h), one warp: out = sum_c 2^(lse_c - M) O_c / sum_c
// 2^(lse_c - M) over the chunks c the row sees, in chunk order. The chunk
// results are read through L2 (__ldcg): in the tensor-core kernel's own merge
// other blocks wrote them during this kernel. Lane c holds chunk c's weight
// (and chunk 32 + c's: kMaxChunks <= 64), broadcast by shuffles, so the chunk outputs' loads do
// not wait on anything and many are in flight: with a dependent lse load per
// chunk, or one float per lane and load, the merge of MLA's 14 heads x 32
// chunks x 176 dims took longer than the attention itself (L2 round trips in
// series). Every chunk c < n_c holds a key the row sees, so it was written
// and its lse is finite.
__device__ void cached_combine_row(const CachedArgs& a, long long orow, int lane) {
  static_assert(kMaxChunks <= 64, "two chunk weights per lane");
  const int n_c = row_chunks(a, orow);
  float w0, w1;
  const float l = chunk_weights(a, orow, n_c, lane, w0, w1);
  const float inv = l > 0.f ? 1.f / l : 0.f;
  const int D = a.Dv;
  const float* o = a.opart + orow * a.nchunks * D;
  if (D % 4 == 0) {
    // Lane owns the 16-byte column groups lane, lane + 32, ... (at most 144 at D 576).
    constexpr int kQPL = (kMaxHeadDim / 4 + 31) / 32;
    const int quads = D / 4;
    float4 acc[kQPL];
#pragma unroll
    for (int i = 0; i < kQPL; ++i) acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int j = 0; j < n_c; ++j) {
      const float w = __shfl_sync(0xffffffffu, j < 32 ? w0 : w1, j & 31);
      const float4* oj = reinterpret_cast<const float4*>(o + static_cast<long long>(j) * D);
#pragma unroll
      for (int i = 0; i < kQPL; ++i) {
        const int qd = lane + 32 * i;
        if (qd < quads) {
          const float4 v = __ldcg(oj + qd);
          acc[i].x = fmaf(w, v.x, acc[i].x);
          acc[i].y = fmaf(w, v.y, acc[i].y);
          acc[i].z = fmaf(w, v.z, acc[i].z);
          acc[i].w = fmaf(w, v.w, acc[i].w);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kQPL; ++i) {
      const int qd = lane + 32 * i;
      if (qd >= quads) continue;
      const long long d = orow * D + 4 * qd;
      st(a.out, a.out_dtype, d, acc[i].x * inv);
      st(a.out, a.out_dtype, d + 1, acc[i].y * inv);
      st(a.out, a.out_dtype, d + 2, acc[i].z * inv);
      st(a.out, a.out_dtype, d + 3, acc[i].w * inv);
    }
    return;
  }
  constexpr int kDPL = kMaxHeadDim / 32;
  float acc[kDPL];
#pragma unroll
  for (int i = 0; i < kDPL; ++i) acc[i] = 0.f;
#pragma unroll 4
  for (int j = 0; j < n_c; ++j) {
    const float w = __shfl_sync(0xffffffffu, j < 32 ? w0 : w1, j & 31);
#pragma unroll
    for (int i = 0; i < kDPL; ++i) {
      const int d = lane + 32 * i;
      if (d < D) acc[i] = fmaf(w, __ldcg(o + static_cast<long long>(j) * D + d), acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    const int d = lane + 32 * i;
    if (d < D) st(a.out, a.out_dtype, orow * D + d, acc[i] * inv);
  }
}

// The end of a chunk block of the tensor-core kernel when it merges its own
// chunks (a.arrivals): the block's chunk results are written; the last of the
// row tile's nchunks blocks to arrive merges them and sets the counter back to
// zero. Called by every thread of the block; sw is free shared memory for
// rows_in_block x kSwPitch floats. The merge is spread over the whole block: a warp
// per row turns the chunks' lse into normalised weights (sw), then every
// thread takes (row, 16-byte column group) items and adds that group over the
// row's chunks, loads independent of each other. (One warp per row walking
// its chunks was the decode attention's bottleneck at 8K context with 14 rows
// per KV head: the other warps waited while each walked 3-4 rows in turn.)
constexpr int kSwPitch = kMaxChunks + 1;  // a row's chunk weights, then its chunk count

template <int kWarps>
__device__ void cached_chunk_arrive(const CachedArgs& a, int b, int kvh, int r0, int rows_in_block,
                                    float* sw) {
  static_assert(kMaxChunks <= 64, "two chunk weights per lane");
  __shared__ int s_last;
  __threadfence();  // this block's opart / lse before its arrival
  __syncthreads();
  int* counter = a.arrivals + (static_cast<long long>(b) * gridDim.y + blockIdx.y);
  if (threadIdx.x == 0) s_last = atomicAdd(counter, 1) == a.nchunks - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();  // the other blocks' results, read below through L2
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto orow_of = [&](int r) {
    const int row = r0 + r, t = row / a.G;
    return (static_cast<long long>(b) * a.T + t) * a.H + kvh * a.G + (row - t * a.G);
  };
  for (int r = warp; r < rows_in_block; r += kWarps) {
    const long long orow = orow_of(r);
    const int n_c = row_chunks(a, orow);
    float w0, w1;
    const float l = chunk_weights(a, orow, n_c, lane, w0, w1);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    sw[r * kSwPitch + lane] = w0 * inv;
    sw[r * kSwPitch + 32 + lane] = w1 * inv;
    if (lane == 0) sw[r * kSwPitch + kMaxChunks] = __int_as_float(n_c);
  }
  __syncthreads();
  const int quads = a.Dv / 4;  // (the tensor-core path has Dv % 8 == 0)
  for (int item = threadIdx.x; item < rows_in_block * quads; item += kWarps * 32) {
    const int r = item / quads, qd = item - r * quads;
    const long long orow = orow_of(r);
    const int n_c = __float_as_int(sw[r * kSwPitch + kMaxChunks]);
    const float4* o = reinterpret_cast<const float4*>(a.opart + orow * a.nchunks * a.Dv) + qd;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int c = 0; c < n_c; ++c) {
      const float w = sw[r * kSwPitch + c];
      const float4 v = __ldcg(o + static_cast<long long>(c) * quads);
      acc.x = fmaf(w, v.x, acc.x);
      acc.y = fmaf(w, v.y, acc.y);
      acc.z = fmaf(w, v.z, acc.z);
      acc.w = fmaf(w, v.w, acc.w);
    }
    const long long d = orow * a.Dv + 4 * qd;
    st(a.out, a.out_dtype, d, acc.x);
    st(a.out, a.out_dtype, d + 1, acc.y);
    st(a.out, a.out_dtype, d + 2, acc.z);
    st(a.out, a.out_dtype, d + 3, acc.w);
  }
  if (threadIdx.x == 0) *counter = 0;
}

}  // namespace
}  // namespace el::cuda
