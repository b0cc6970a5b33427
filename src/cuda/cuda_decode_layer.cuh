// cuda_decode_layer.cuh — internal to cuda_decode_layer.cu (the one-kernel
// decoder layer of a batch-1 decode step): the kernel's arguments, its launch
// constants and the small device helpers its phases share (trace stamps, the
// consumer warps' named barrier and sums, the grid barrier, the block's row
// range, the RMSNorm prologue). The weight stream is cuda_decode_stream.cuh,
// phase B's attention cuda_decode_attention.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "cuda/cuda_bulk.cuh"
#include "cuda/cuda_common.cuh"

namespace el::cuda::decode {

// Consumer warps. 16 + the producer cap each thread at 96 registers (the
// kernel spills a little); 15 would leave 128, but a 16 KiB tile's 32 pack
// groups then split unevenly and the streaming phases ran 20% slower
// (docs/PERFORMANCE.md, session 18).
constexpr int kWarps = 16;
constexpr int kThreads = 32 * kWarps;      // consumer threads (named barrier 1)
constexpr int kBlockThreads = kThreads + 32;  // + the producer warp
constexpr int kTileBytes = 16 << 10;       // dense: one ring slot, a run of whole packs
// Quantized weights: a slot holds up to 16 rows x kSpan bytes (one tensor-core
// row window, 16 k-blocks of 64 bytes), each row padded to kRowStride so the
// lanes' 16-byte reads of rows g and g + 8 fall in distinct banks.
constexpr int kSpan = 1024;
constexpr int kRowStride = kSpan + 64;
constexpr int kQuantSlotBytes = 16 * kRowStride;
template <int BITS>
constexpr int slot_bytes() {
  return BITS == 16 ? kTileBytes : kQuantSlotBytes;
}
// Ring slots. Deeper rings measured slower (session 19, per layer: 6 slots
// 60.7-61.1 us, 8: 62.1, 10: 67.3, 12: 69.4): the extra tiles in flight
// lengthen every dependent load of phases A-C (docs/PERFORMANCE.md).
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
  // Quantized layouts (the kernel's BITS 4 / 8): w_qkv .. w_down are the u8
  // qweight rows, these the f16 scales [N, K / group_size] and the zero
  // points (nullptr when symmetric) of qkv, o, gate_up, down.
  const uint16_t* scales[4];
  const uint8_t* zeros[4];
  int group_size, sym_zero, qstage_bytes;  // qstage_bytes: smem for the block's scales
  const void* qkv_bias;        // [(H + 2 Hkv) D] or nullptr
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
  int stage_keys;              // cache rows of k (and of v) an attention unit stages in smem
  float eps, sl2;              // sl2 = softmax scale x log2(e)
};

// ---- small device helpers ---------------------------------------------------------------
// Phase timestamps for cuda_decode_layer_bench (decode_layer_trace): thread 0
// of each block writes %globaltimer (ns) to trace[block, slot]; the producer
// lane writes kTraceProducer when it has issued its last copy.
// Slots 13, 14, 16-17 and 19-20 are written only by the blocks that run an
// attention unit (after its scores, after its output or partials are
// written, after its queries are rotated, after it arrived on the merge
// counter, after its softmax, after thread 0 stored its P V outputs); 0
// elsewhere. Slot 18: phase C has its attention vector in shared memory.
constexpr int kTraceSlots = 21, kTraceScores = 13, kTracePartials = 14, kTraceProducer = 15,
              kTraceQuery = 16, kTraceArrived = 17, kTraceCVector = 18, kTraceSoftmax = 19,
              kTracePV = 20;
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

__device__ __forceinline__ void zero_rows(float* rowsum, int n) {
  for (int i = threadIdx.x; i < n; i += kThreads) rowsum[i] = 0.f;
}

}  // namespace el::cuda::decode
