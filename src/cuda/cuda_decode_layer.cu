// cuda_decode_layer.cu — one Llama-layout decoder layer of a batch-1 decode
// step in a single persistent kernel (Backend::decode_layer, ops/backend.h).
//
// Why: at batch 1 a layer is ~9 dependent kernels (norm, qkv GEMV, RoPE +
// cache write, attention, o GEMV, add + norm, gate/up GEMV, SwiGLU, down
// GEMV). Each pays a few microseconds of launch ramp and tail on top of its
// bytes, and the small ones read almost nothing, so the layered step reached
// only ~42% of HBM bandwidth. Here one block per SM runs the five phases of
// the layer with a grid-wide barrier between them, every small op living
// inside a GEMV as its prologue or epilogue:
//   A  every block: x -> RMSNorm (input_layernorm) into shared memory;
//      its rows of qkv = W_qkv x                                  -> qkv buffer
//   B  block (kv head g, chunk c) of the cache positions: RoPE on its q heads
//      (and on the new k, which the chunk holding the new position writes to
//      the cache with v); scores, softmax and P V over the chunk -> partials;
//      the last block of kv head g to arrive merges them      -> attention out
//   C  its rows of o = W_o attn; x[r] += o[r] (the residual add)
//   D  every block: x -> RMSNorm (post_attention_layernorm); its feature range
//      [f0, f1) of gate and of up; h = silu(gate) * up           -> h buffer
//   E  its rows of d = W_down h; x[r] += d[r]
// Rounding follows the layered path (each intermediate is rounded to the
// activation dtype where that path stores a tensor), so the two agree up to
// the order of f32 sums (tests/cuda/decode_layer_test.cpp).
//
// Weights stream, the activations wait: a block's weight rows for the whole
// layer are five contiguous byte ranges (its qkv rows, o rows, gate rows, up
// rows, down rows) known before the layer starts. A producer warp copies them
// in 16 KiB tiles with the bulk copy engine (cp.async.bulk) into a ring of
// kStages shared-memory slots, each completing on an mbarrier, without
// waiting for any phase: while the eight consumer warps sit at a grid barrier
// or in the attention phase, the ring keeps filling, so HBM stays busy
// through them. Consumers take a tile's packs (16 bytes = 8 weights) a warp
// each over a contiguous range, dot them with the activation vector in shared
// memory, and add row sums into shared memory when a warp's row changes.
//
// Grid barrier: blocks count arrivals in ctx().counters (zero between
// kernels): barrier k waits until the count reaches k x grid; the last block
// to leave sets the counters back to zero. All blocks must be resident at
// once, so the grid is one block per SM and the host checks that it fits.
// Data written by other blocks in this kernel is read with ld.global.cg (L2),
// never through a possibly stale L1 line.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_bulk.cuh"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_context.h"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kWarps = 16;                 // consumer warps
constexpr int kThreads = 32 * kWarps;      // consumer threads (named barrier 1)
constexpr int kBlockThreads = kThreads + 32;  // + the producer warp
constexpr int kTileBytes = 16 << 10;
constexpr int kStages = 6;
constexpr int kMaxGroup = 16;              // query heads per kv head
constexpr float kLog2e = 1.4426950408889634f;

struct LayerArgs {
  const void* x_in;            // [C] residual stream in
  void* x;                     // [C] residual stream out (does not alias x_in)
  const void* w_in_norm;       // [C]
  const void* w_qkv;           // [(H + 2 Hkv) D, C]
  const void* w_o;             // [C, H D]
  const void* w_post_norm;     // [C]
  const void* w_gate_up;       // [2F, C]: gate rows [0, F), up rows [F, 2F)
  const void* w_down;          // [C, F]
  const float* inv_freq;       // [D / 2] or nullptr (no RoPE)
  const int32_t* pos;          // [1]: cache position of the new token
  void* kc;                    // [1, Smax, Hkv, D]
  void* vc;
  void* qkv;                   // scratch [(H + 2 Hkv) D]
  void* attn;                  // scratch [H D]
  void* h;                     // scratch [F]
  float* part;                 // scratch [H, units_per_head, D + 2]: m, l, o
  unsigned* sync;              // [2 + Hkv] counters (barrier, exit, arrivals)
  DeviceErrorRecord* err;
  unsigned long long* trace;   // nullptr, or [grid, kTraceSlots] phase timestamps (bench only)
  int C, H, Hkv, D, F, smax, units_per_head, chunk_max, max_rows;
  float eps, sl2;              // sl2 = softmax scale x log2(e)
};

// ---- small device helpers ---------------------------------------------------------------
// Phase timestamps for cuda_decode_layer_bench (decode_layer_trace): thread 0
// of each block writes %globaltimer (ns) to trace[block, slot]; the producer
// lane writes kTraceProducer when it has issued its last copy.
constexpr int kTraceSlots = 16, kTraceProducer = 15;
__device__ __forceinline__ void stamp(unsigned long long* trace, int slot) {
  if (trace && (threadIdx.x == 0 || slot == kTraceProducer)) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    trace[blockIdx.x * kTraceSlots + slot] = t;
  }
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The consumer warps only (the producer warp never joins): named barrier 1.
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory");
}

// Sum over the consumer threads, returned to each; red holds kWarps floats.
__device__ __forceinline__ float consumer_sum(float x, float* red) {
  x = warp_sum(x);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  consumer_sync();
  float t = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) t += red[w];
  consumer_sync();
  return t;
}

template <class T>
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b, float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = unpack2<T>(av[i]), fb = unpack2<T>(bv[i]);
    acc = fmaf(fa.x, fb.x, acc);
    acc = fmaf(fa.y, fb.y, acc);
  }
  return acc;
}

// Every block arrives, then waits for all `target` arrivals of this barrier.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned target) {
  consumer_sync();
  if (threadIdx.x == 0) {
    __threadfence();  // this block's writes before its arrival
    atomicAdd(counter, 1u);
    while (ld_acquire(counter) < target) {
    }
    __threadfence();
  }
  consumer_sync();
}

// Rows [r0, r1) of `n` split evenly over the grid.
__device__ __forceinline__ int2 block_rows(int n) {
  const int g = gridDim.x, b = blockIdx.x;
  return make_int2(static_cast<int>(int64_t{n} * b / g), static_cast<int>(int64_t{n} * (b + 1) / g));
}

// vec[0, n) = RMSNorm(x) * w rounded to T, or (w == nullptr) x itself. x is
// read through L2 (written by other blocks of this kernel); x and w are
// loaded together (one memory round trip), n / 8 <= kMaxNormPacks x kThreads.
constexpr int kMaxNormPacks = 4;
template <class T>
__device__ void load_vector(T* vec, const T* x, const T* w, int n, float eps, float* red) {
  const int packs = n / 8;
  const uint4* xp = reinterpret_cast<const uint4*>(x);
  uint4* vp = reinterpret_cast<uint4*>(vec);
  if (!w) {
    for (int i = threadIdx.x; i < packs; i += kThreads) vp[i] = __ldcg(xp + i);
    return;
  }
  const uint4* wp = reinterpret_cast<const uint4*>(w);
  uint4 xv[kMaxNormPacks], wv[kMaxNormPacks];
#pragma unroll
  for (int k = 0; k < kMaxNormPacks; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < packs) {
      xv[k] = __ldcg(xp + i);
      wv[k] = __ldg(wp + i);
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxNormPacks; ++k) {
    if (threadIdx.x + k * kThreads < packs) {
      const uint32_t vv[4] = {xv[k].x, xv[k].y, xv[k].z, xv[k].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = unpack2<T>(vv[e]);
        ss = fmaf(f.x, f.x, fmaf(f.y, f.y, ss));
      }
    }
  }
  const float r = rsqrtf(consumer_sum(ss, red) / static_cast<float>(n) + eps);
#pragma unroll
  for (int k = 0; k < kMaxNormPacks; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < packs) {
      Pack<T, 8> xs, ws, o;
      memcpy(&xs, &xv[k], sizeof(xs));
      memcpy(&ws, &wv[k], sizeof(ws));
#pragma unroll
      for (int e = 0; e < 8; ++e) o.v[e] = from_f<T>(to_f<T>(xs.v[e]) * r * to_f<T>(ws.v[e]));
      memcpy(&vp[i], &o, sizeof(o));
    }
  }
}

// ---- the weight stream -----------------------------------------------------------------------
// The block's five weight ranges in stream order (qkv, o, gate, up, down).
struct Segment {
  const unsigned char* p;
  int64_t bytes;
};
struct Stream {
  Segment seg[5];
};

// The producer (one lane): every tile of every segment into the ring, a slot
// reused only after the consumers released it.
__device__ void produce(const Stream& s, unsigned char* ring, uint64_t* full, uint64_t* empty) {
  unsigned tile = 0;
  for (int k = 0; k < 5; ++k) {
    for (int64_t off = 0; off < s.seg[k].bytes; off += kTileBytes, ++tile) {
      const int64_t rem = s.seg[k].bytes - off;
      const unsigned n = static_cast<unsigned>(rem < kTileBytes ? rem : kTileBytes);
      const unsigned slot = tile % kStages, round = tile / kStages;
      if (round > 0) mbar_wait(&empty[slot], (round - 1) & 1);
      mbar_expect_tx(&full[slot], n);
      bulk_copy(ring + slot * kTileBytes, s.seg[k].p + off, n, &full[slot]);
    }
  }
}

// The consumers' side of one segment: rowsum[row] += W[row] . vec for the
// segment's rows (row 0 = its first), K inputs per row. A warp takes a
// contiguous run of a tile's packs; its running sum goes to shared memory
// (atomicAdd) when its row changes. tile: the stream position (advanced).
template <class T>
__device__ void consume_gemv(const Segment& sg, int k, const T* vec, float* rowsum,
                             const unsigned char* ring, uint64_t* full, uint64_t* empty,
                             unsigned& tile) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kp = k / 8;  // packs per row
  const uint4* xv = reinterpret_cast<const uint4*>(vec);
  int cur = -1;
  float acc = 0.f;
  for (int64_t off = 0; off < sg.bytes; off += kTileBytes, ++tile) {
    const int64_t rem = sg.bytes - off;
    const int packs = static_cast<int>((rem < kTileBytes ? rem : kTileBytes) / 16);
    const unsigned slot = tile % kStages;
    mbar_wait(&full[slot], (tile / kStages) & 1);
    const uint4* wt = reinterpret_cast<const uint4*>(ring + slot * kTileBytes);
    const int groups = (packs + 31) / 32;
    const int g0 = groups * warp / kWarps, g1 = groups * (warp + 1) / kWarps;
    const int q_base = static_cast<int>(off / 16);
    // The lane's row and offset in it, by one division per tile; the warp's
    // groups are consecutive, so each later group moves at most a few rows.
    int row = (q_base + g0 * 32 + lane) / kp;
    int rel = q_base + g0 * 32 + lane - row * kp;
    for (int gi = g0; gi < g1; ++gi, rel += 32) {
      while (rel >= kp) {
        rel -= kp;
        ++row;
      }
      const int q = gi * 32 + lane;
      const bool valid = q < packs;
      const int row0 = __shfl_sync(0xffffffffu, row, 0);
      const bool uniform = __all_sync(0xffffffffu, !valid || row == row0);
      if (!uniform || row0 != cur) {
        const float t = warp_sum(acc);
        if (lane == 0 && cur >= 0) atomicAdd(&rowsum[cur], t);
        acc = 0.f;
        cur = row0;
      }
      const float prod = valid ? dot8<T>(wt[q], xv[rel], 0.f) : 0.f;
      if (uniform) {
        acc += prod;
      } else if (valid) {
        atomicAdd(&rowsum[row], prod);  // a run across a row end (K % 256 != 0)
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[slot]);
  }
  const float t = warp_sum(acc);
  if (lane == 0 && cur >= 0) atomicAdd(&rowsum[cur], t);
}

__device__ __forceinline__ void zero_rows(float* rowsum, int n) {
  for (int i = threadIdx.x; i < n; i += kThreads) rowsum[i] = 0.f;
}

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

// ---- the layer kernel ----------------------------------------------------------------------
template <class T, int DL>
__global__ void __launch_bounds__(kBlockThreads, 1) decode_layer_kernel(const LayerArgs a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ float red[32];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int C = a.C, F = a.F, HD = a.H * 32 * DL;
  const int nqkv = (a.H + 2 * a.Hkv) * 32 * DL;
  unsigned char* ring = smem_raw;  // [kStages, kTileBytes]
  T* vec = reinterpret_cast<T*>(smem_raw + kStages * kTileBytes);  // [max(C, H D, F)]
  const int vec_elems = max(max(C, HD), F);
  float* rowsum = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(vec) +
                                           ((vec_elems * sizeof(T) + 15) / 16) * 16);
  float* xres = rowsum + a.max_rows;  // [max_rows] the block's rows of the residual stream
  float* attn_smem = xres + a.max_rows;
  const int2 rq = block_rows(nqkv), ro = block_rows(C), rf = block_rows(F);
  const int nf = rf.y - rf.x;
  const auto* wqkv = static_cast<const T*>(a.w_qkv);
  const auto* wgu = static_cast<const T*>(a.w_gate_up);
  Stream st;
  st.seg[0] = {reinterpret_cast<const unsigned char*>(wqkv + int64_t{rq.x} * C),
               int64_t{rq.y - rq.x} * C * int64_t{sizeof(T)}};
  st.seg[1] = {reinterpret_cast<const unsigned char*>(static_cast<const T*>(a.w_o) +
                                                      int64_t{ro.x} * HD),
               int64_t{ro.y - ro.x} * HD * int64_t{sizeof(T)}};
  st.seg[2] = {reinterpret_cast<const unsigned char*>(wgu + int64_t{rf.x} * C),
               int64_t{nf} * C * int64_t{sizeof(T)}};
  st.seg[3] = {reinterpret_cast<const unsigned char*>(wgu + (int64_t{F} + rf.x) * C),
               int64_t{nf} * C * int64_t{sizeof(T)}};
  st.seg[4] = {reinterpret_cast<const unsigned char*>(static_cast<const T*>(a.w_down) +
                                                      int64_t{ro.x} * F),
               int64_t{ro.y - ro.x} * F * int64_t{sizeof(T)}};
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();  // the only block-wide barrier: the producer leaves below
  if (threadIdx.x >= kThreads) {
    // Weights depend on no kernel: the stream starts before the wait.
    if (threadIdx.x == kThreads) {
      produce(st, ring, full, empty);
      stamp(a.trace, kTraceProducer);
    }
    return;
  }
  stamp(a.trace, 0);
  pdl_wait();
  pdl_trigger();
  stamp(a.trace, 1);
  const T* x_in = static_cast<const T*>(a.x_in);
  T* x = static_cast<T*>(a.x);
  const int p = a.pos[0];
  const bool p_ok = p >= 0 && p < a.smax;
  if (!p_ok && blockIdx.x == 0 && threadIdx.x == 0)
    report_device_error(a.err, kErrKvCachePosition, 0, p, a.smax);
  const unsigned grid = gridDim.x;
  unsigned tile = 0;

  // A: qkv = W_qkv RMSNorm(x)
  load_vector(vec, x_in, static_cast<const T*>(a.w_in_norm), C, a.eps, red);
  zero_rows(rowsum, rq.y - rq.x);
  consumer_sync();
  stamp(a.trace, 2);
  consume_gemv<T>(st.seg[0], C, vec, rowsum, ring, full, empty, tile);
  consumer_sync();
  for (int i = threadIdx.x; i < rq.y - rq.x; i += kThreads)
    static_cast<T*>(a.qkv)[rq.x + i] = from_f<T>(rowsum[i]);
  stamp(a.trace, 3);
  grid_barrier(&a.sync[0], grid);
  stamp(a.trace, 4);

  // B: attention (skipped, with the error reported, for a position outside the cache)
  if (p_ok) attention_phase<T, DL>(a, p, attn_smem);
  // The block's rows of x_in for phase C's residual add, off its critical path.
  for (int i = threadIdx.x; i < ro.y - ro.x; i += kThreads) xres[i] = to_f<T>(__ldcg(x_in + ro.x + i));
  stamp(a.trace, 5);
  grid_barrier(&a.sync[0], 2 * grid);
  stamp(a.trace, 6);

  // C: x = x_in + W_o attn
  load_vector(vec, static_cast<const T*>(a.attn), static_cast<const T*>(nullptr), HD, 0.f, red);
  zero_rows(rowsum, ro.y - ro.x);
  consumer_sync();
  consume_gemv<T>(st.seg[1], HD, vec, rowsum, ring, full, empty, tile);
  consumer_sync();
  for (int i = threadIdx.x; i < ro.y - ro.x; i += kThreads) {
    const T sum = from_f<T>(xres[i] + to_f<T>(from_f<T>(rowsum[i])));
    x[ro.x + i] = sum;
    xres[i] = to_f<T>(sum);  // phase E adds to it
  }
  stamp(a.trace, 7);
  grid_barrier(&a.sync[0], 3 * grid);
  stamp(a.trace, 8);

  // D: h = silu(gate) * up of W_gate_up RMSNorm(x), features [f0, f1)
  load_vector(vec, static_cast<const T*>(x), static_cast<const T*>(a.w_post_norm), C, a.eps, red);
  zero_rows(rowsum, 2 * nf);
  consumer_sync();
  stamp(a.trace, 9);
  consume_gemv<T>(st.seg[2], C, vec, rowsum, ring, full, empty, tile);
  consume_gemv<T>(st.seg[3], C, vec, rowsum + nf, ring, full, empty, tile);
  consumer_sync();
  for (int i = threadIdx.x; i < nf; i += kThreads) {
    const float gt = to_f<T>(from_f<T>(rowsum[i])), up = to_f<T>(from_f<T>(rowsum[nf + i]));
    static_cast<T*>(a.h)[rf.x + i] = from_f<T>(gt * (1.f / (1.f + expf(-gt))) * up);
  }
  stamp(a.trace, 10);
  grid_barrier(&a.sync[0], 4 * grid);
  stamp(a.trace, 11);

  // E: x += W_down h
  load_vector(vec, static_cast<const T*>(a.h), static_cast<const T*>(nullptr), F, 0.f, red);
  zero_rows(rowsum, ro.y - ro.x);
  consumer_sync();
  consume_gemv<T>(st.seg[4], F, vec, rowsum, ring, full, empty, tile);
  consumer_sync();
  for (int i = threadIdx.x; i < ro.y - ro.x; i += kThreads)
    x[ro.x + i] = from_f<T>(xres[i] + to_f<T>(from_f<T>(rowsum[i])));
  stamp(a.trace, 12);
  // The last block out resets the barrier for the next kernel.
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(&a.sync[1], 1u) == grid - 1) {
      a.sync[0] = 0;
      a.sync[1] = 0;
    }
  }
}

struct Plan {
  int grid = 0;
  size_t smem = 0;
  int max_rows = 0, units_per_head = 0, chunk_max = 0;
};

size_t vec_bytes(const DecodeLayerWeights& w, int64_t C, int64_t F) {
  const int64_t n = std::max({C, w.n_head * w.head_dim, F});
  return static_cast<size_t>((n * 2 + 15) / 16 * 16);
}

template <class T, int DL>
auto kernel_for() {
  return decode_layer_kernel<T, DL>;
}

using KernelPtr = void (*)(const LayerArgs);

KernelPtr pick_kernel(DType t, int64_t d) {
  if (t == DType::bf16) return d == 64 ? kernel_for<__nv_bfloat16, 2>() : kernel_for<__nv_bfloat16, 4>();
  return d == 64 ? kernel_for<__half, 2>() : kernel_for<__half, 4>();
}

// The launch shape: one block per SM (all resident at once, the grid
// barrier's condition), or grid 0 when one block does not fit on an SM.
Plan compute_plan(const DecodeLayerWeights& w, int64_t C, int64_t F, int64_t smax, DType t) {
  Plan pl;
  Context& cx = ctx();
  const KernelPtr k = pick_kernel(t, w.head_dim);
  const int64_t g_min = cx.sm_count;
  const int64_t nqkv = (w.n_head + 2 * w.n_kv_head) * w.head_dim;
  pl.max_rows = static_cast<int>(std::max({(nqkv + g_min - 1) / g_min, (C + g_min - 1) / g_min,
                                           2 * ((F + g_min - 1) / g_min)}) + 1);
  const int64_t uph_min = std::max<int64_t>(1, g_min / w.n_kv_head);
  pl.chunk_max = static_cast<int>(std::max<int64_t>(kMinChunk, (smax + uph_min - 1) / uph_min));
  const int group = static_cast<int>(w.n_head / w.n_kv_head);
  pl.smem = size_t{kStages} * kTileBytes + vec_bytes(w, C, F) +
            sizeof(float) * static_cast<size_t>(
                                2 * pl.max_rows + attention_smem_floats(
                                                      group, static_cast<int>(w.head_dim), pl.chunk_max));
  if (pl.smem > 220 * 1024) return pl;
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(pl.smem)) != cudaSuccess) {
    (void)cudaGetLastError();
    return pl;
  }
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kBlockThreads, pl.smem) !=
          cudaSuccess ||
      per_sm < 1) {
    (void)cudaGetLastError();
    return pl;
  }
  // Every block must be resident at once (grid barrier): never more than fit.
  pl.grid = cx.sm_count;
  pl.units_per_head = std::max<int>(1, pl.grid / static_cast<int>(w.n_kv_head));
  return pl;
}

// compute_plan, remembered per shape (eager decoding asks once per layer and step).
Plan make_plan(const DecodeLayerWeights& w, int64_t C, int64_t F, int64_t smax, DType t) {
  struct Entry {
    int64_t key[7];
    Plan plan;
  };
  static thread_local std::vector<Entry> cache;
  const int64_t key[7] = {static_cast<int64_t>(t), w.head_dim, w.n_head, w.n_kv_head, C, F, smax};
  for (const Entry& e : cache) {
    if (std::equal(std::begin(key), std::end(key), std::begin(e.key))) return e.plan;
  }
  Entry e{};
  std::copy(std::begin(key), std::end(key), std::begin(e.key));
  e.plan = compute_plan(w, C, F, smax, t);
  if (cache.size() < 64) cache.push_back(e);
  return e.plan;
}

bool dense_ok(const Tensor& t, DType dt, int64_t rows, int64_t cols) {
  return t.defined() && t.device().kind == DeviceKind::cuda && t.dtype() == dt && t.ndim() == 2 &&
         t.dim(0) == rows && t.dim(1) == cols && t.is_contiguous() && aligned16(t.raw());
}
bool vec_ok(const Tensor& t, DType dt, int64_t n) {
  return t.defined() && t.device().kind == DeviceKind::cuda && t.dtype() == dt && t.numel() == n &&
         t.is_contiguous();
}

unsigned long long* g_trace = nullptr;  // decode_layer_trace

}  // namespace

int decode_layer_trace(unsigned long long* buffer) {
  g_trace = buffer;
  return kTraceSlots;
}

bool decode_layer_enabled() {
  static const bool v = [] {
    const char* e = std::getenv("EL_DECODE_LAYER");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return v;
}

bool decode_layer_takes(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                        const Tensor& k_cache, const Tensor& v_cache) {
  if (!x.defined() || x.device().kind != DeviceKind::cuda) return false;
  const DType t = x.dtype();
  if (t != DType::bf16 && t != DType::f16) return false;
  if (x.numel() != x.dim(-1) || !x.is_contiguous() || !aligned16(x.raw())) return false;
  const int64_t C = x.dim(-1), H = w.n_head, Hkv = w.n_kv_head, D = w.head_dim;
  if (H <= 0 || Hkv <= 0 || H % Hkv != 0 || H / Hkv > kMaxGroup || (D != 64 && D != 128))
    return false;
  if (!w.gate_up.defined() || w.gate_up.ndim() != 2 || w.gate_up.dim(0) % 2 != 0) return false;
  const int64_t F = w.gate_up.dim(0) / 2;
  // (the norm prologue holds C / 8 packs in kMaxNormPacks registers per thread)
  if (C % 8 != 0 || F % 8 != 0 || C > 8 * kMaxNormPacks * kThreads || F > (1 << 20)) return false;
  if (!dense_ok(w.qkv, t, (H + 2 * Hkv) * D, C) || !dense_ok(w.o, t, C, H * D) ||
      !dense_ok(w.gate_up, t, 2 * F, C) || !dense_ok(w.down, t, C, F) ||
      !vec_ok(w.input_norm, t, C) || !vec_ok(w.post_norm, t, C))
    return false;
  if (inv_freq.defined() && (inv_freq.dtype() != DType::f32 || inv_freq.numel() != D / 2 ||
                             inv_freq.device().kind != DeviceKind::cuda))
    return false;
  for (const Tensor* c : {&k_cache, &v_cache}) {
    if (!c->defined() || c->dtype() != t || c->ndim() != 4 || c->dim(0) != 1 ||
        c->dim(2) != Hkv || c->dim(3) != D || !c->is_contiguous() ||
        c->device().kind != DeviceKind::cuda)
      return false;
  }
  if (k_cache.dim(1) != v_cache.dim(1) || k_cache.dim(1) >= (int64_t{1} << 30)) return false;
  return make_plan(w, C, F, k_cache.dim(1), t).grid > 0;
}

void decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                  const Tensor& positions, Tensor& k_cache, Tensor& v_cache, Tensor& out) {
  EL_CUDA_ENSURE(decode_layer_takes(x, w, inv_freq, k_cache, v_cache),
                 "cuda decode_layer: unsupported shapes or dtypes (x {} {}); check "
                 "decode_layer_takes() first",
                 shape_str(x.shape()), dtype_name(x.dtype()));
  EL_CUDA_ENSURE(positions.dtype() == DType::i32 && positions.numel() == 1,
                 "cuda decode_layer: positions must be i32 [1], got {} {}",
                 dtype_name(positions.dtype()), shape_str(positions.shape()));
  EL_CUDA_ENSURE(out.dtype() == x.dtype() && out.numel() == x.numel() && out.is_contiguous() &&
                     out.raw() != x.raw(),
                 "cuda decode_layer: out {} {} must be a separate tensor like x {} {}",
                 shape_str(out.shape()), dtype_name(out.dtype()), shape_str(x.shape()),
                 dtype_name(x.dtype()));
  Context& cx = ctx();
  const int64_t C = x.dim(-1), F = w.gate_up.dim(0) / 2, H = w.n_head, Hkv = w.n_kv_head,
                D = w.head_dim, smax = k_cache.dim(1);
  const Plan pl = make_plan(w, C, F, smax, x.dtype());
  EL_CUDA_ENSURE(2 + Hkv <= kCounterSlots, "cuda decode_layer: {} kv heads exceed the counters", Hkv);
  // Scratch from the caching allocator: qkv, attention output, h, partials.
  const DType t = x.dtype();
  Tensor qkv = Tensor::empty({(H + 2 * Hkv) * D}, t, x.device());
  Tensor attn = Tensor::empty({H * D}, t, x.device());
  Tensor h = Tensor::empty({F}, t, x.device());
  Tensor part = Tensor::empty({H * pl.units_per_head * (D + 2)}, DType::f32, x.device());
  LayerArgs a{};
  a.x_in = x.raw();
  a.x = out.raw();
  a.w_in_norm = w.input_norm.raw();
  a.w_qkv = w.qkv.raw();
  a.w_o = w.o.raw();
  a.w_post_norm = w.post_norm.raw();
  a.w_gate_up = w.gate_up.raw();
  a.w_down = w.down.raw();
  a.inv_freq = inv_freq.defined() ? inv_freq.data<float>() : nullptr;
  a.pos = positions.data<int32_t>();
  a.kc = k_cache.raw();
  a.vc = v_cache.raw();
  a.qkv = qkv.raw();
  a.attn = attn.raw();
  a.h = h.raw();
  a.part = part.data<float>();
  a.sync = reinterpret_cast<unsigned*>(cx.counters);
  a.err = cx.dev_error;
  a.trace = g_trace;
  a.C = static_cast<int>(C);
  a.H = static_cast<int>(H);
  a.Hkv = static_cast<int>(Hkv);
  a.D = static_cast<int>(D);
  a.F = static_cast<int>(F);
  a.smax = static_cast<int>(smax);
  a.units_per_head = pl.units_per_head;
  a.chunk_max = pl.chunk_max;
  a.max_rows = pl.max_rows;
  a.eps = w.eps;
  a.sl2 = (1.0f / std::sqrt(static_cast<float>(D))) * kLog2e;
  launch_kernel(pick_kernel(t, D), dim3(static_cast<unsigned>(pl.grid)), dim3(kBlockThreads),
                pl.smem, cx.stream, a);
  EL_CUDA_CHECK_LAUNCH("decode_layer_kernel");
}

}  // namespace el::cuda
