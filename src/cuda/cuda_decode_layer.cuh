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

// Consumer warps. 16 + the producer cap each thread at 96 registers; a full
// span's 16 k-blocks give each warp one per slot.
constexpr int kWarps = 16;
constexpr int kThreads = 32 * kWarps;      // consumer threads (named barrier 1)
constexpr int kBlockThreads = kThreads + 32;  // + the producer warp
// A ring slot holds up to 16 rows x kSpan bytes (one tensor-core row window,
// 16 k-blocks of 64 bytes), each row padded to kRowStride so the lanes'
// 16-byte reads of rows g and g + 8 fall in distinct banks.
constexpr int kSpan = 1024;
constexpr int kRowStride = kSpan + 64;
constexpr int kSlotBytes = 16 * kRowStride;
// Ring slots. Deeper rings keep more bytes in flight, which lengthens every
// dependent load of phases A-C and every grid barrier, against a fuller
// stream through them. Dense weights take the deepest of kDenseStages that
// fits in shared memory (the plan's choice), quantized ones kQuantStages.
// Measured (generate TPOT at batch 1, H100, interleaved runs): dense bf16 10
// slots 1.036-1.038 ms against 8 slots 1.059-1.063 and 11 slots 1.070-1.082
// (session 21; 11 leaves too little room for the staged cache rows), 6 slots
// 1.099-1.104 (session 20); int4 / int8 6 slots 0.849 / 1.006 ms against 8
// slots 0.858 / 1.010 (session 20). The stream alone reaches 88% of the HBM
// peak with 6-12 slots (cuda_stream_bench): the depth matters only as a
// buffer through the layer's dependent phases.
constexpr int kDenseStages[2] = {10, 8};
constexpr int kQuantStages = 6;
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
  unsigned* sync;              // [Hkv] counters: kv head g's merge arrivals
  unsigned long long* epoch;   // the grid barrier's arrivals (Context::layer_barrier)
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
// elsewhere. Slot 18: phase C has its attention vector in shared memory;
// 21 / 22: the x of phase A's / D's RMSNorm has arrived.
constexpr int kTraceSlots = 23, kTraceScores = 13, kTracePartials = 14, kTraceProducer = 15,
              kTraceQuery = 16, kTraceArrived = 17, kTraceCVector = 18, kTraceSoftmax = 19,
              kTracePV = 20, kTraceNormLoaded = 21, kTraceNorm2Loaded = 22;
__device__ __forceinline__ void stamp(unsigned long long* trace, int slot) {
  if (trace && (threadIdx.x == 0 || slot == kTraceProducer)) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    trace[blockIdx.x * kTraceSlots + slot] = t;
  }
}

__device__ __forceinline__ unsigned long long ld_acquire(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
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

// The grid barrier counts arrivals on one 64-bit counter that is never reset:
// every launch adds exactly kBarriers x grid, so a block that reads it after
// the PDL wait (every earlier launch complete, none of this one's barriers
// complete without this block) finds its launch's base by rounding down.
// No block has to learn that it is the last one out (a fence and an atomic
// round trip on every block's exit, which delayed the next layer's start).
constexpr int kBarriers = 4;
__device__ __forceinline__ unsigned long long barrier_base(const unsigned long long* counter) {
  const unsigned long long per_launch = static_cast<unsigned long long>(kBarriers) * gridDim.x;
  const unsigned long long v = ld_acquire(counter);
  return v - v % per_launch;
}

// Every block arrives, then waits until the counter reaches `target`
// (thread 0 only: base + k x grid for the launch's barrier k). The arrival is
// a release reduction after the block's barrier (so it orders every consumer
// thread's writes before it) and the wait an acquire load, as CUTLASS's
// GenericBarrier does (46.6 against 48.6 us a layer with __threadfence() +
// atomicAdd + __threadfence(), session 20: the SC fences wait behind the
// weight stream in flight).
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long target) {
  consumer_sync();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(counter) : "memory");
    while (ld_acquire(counter) < target) {
    }
  }
  consumer_sync();
}

// Rows [r0, r1) of `n` split evenly over the grid.
__device__ __forceinline__ int2 block_rows(int n) {
  const int g = gridDim.x, b = blockIdx.x;
  return make_int2(static_cast<int>(int64_t{n} * b / g), static_cast<int>(int64_t{n} * (b + 1) / g));
}

// vec[0, n) = RMSNorm(x) * w rounded to T. x is read through L2 (written by
// other blocks or by the kernel before), one 16-byte pack per thread per
// round trip, and kept raw in vec across the block sum; w is the norm's
// weight row, staged in shared memory by cp.async before the PDL wait (this
// thread's copies are waited for here, the others' by the sum's barrier).
// Holding x and w in registers instead spilled them. trace / slot: the stamp
// once x has arrived (bench only).
template <class T>
__device__ void norm_vector(T* vec, const T* x, const T* w_smem, int n, float eps, float* red,
                            unsigned long long* trace = nullptr, int slot = 0) {
  const int packs = n / 8;
  const uint4* xp = reinterpret_cast<const uint4*>(x);
  uint4* vp = reinterpret_cast<uint4*>(vec);
  float ss = 0.f;
  for (int i = threadIdx.x; i < packs; i += kThreads) {
    const uint4 xv = __ldcg(xp + i);
    const uint32_t vv[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = unpack2<T>(vv[e]);
      ss = fmaf(f.x, f.x, fmaf(f.y, f.y, ss));
    }
    vp[i] = xv;
  }
  cp_async_wait<0>();
  stamp(trace, slot);
  const float r = rsqrtf(consumer_sum(ss, red) / static_cast<float>(n) + eps);
  const uint4* wp = reinterpret_cast<const uint4*>(w_smem);
  for (int i = threadIdx.x; i < packs; i += kThreads) {
    Pack<T, 8> xs, ws, o;
    const uint4 xv = vp[i], wv = wp[i];
    memcpy(&xs, &xv, sizeof(xs));
    memcpy(&ws, &wv, sizeof(ws));
#pragma unroll
    for (int e = 0; e < 8; ++e) o.v[e] = from_f<T>(to_f<T>(xs.v[e]) * r * to_f<T>(ws.v[e]));
    memcpy(&vp[i], &o, sizeof(o));
  }
}

// vec[0, n) = x (through L2), n % 8 == 0.
template <class T>
__device__ void copy_vector(T* vec, const T* x, int n) {
  const uint4* xp = reinterpret_cast<const uint4*>(x);
  uint4* vp = reinterpret_cast<uint4*>(vec);
  for (int i = threadIdx.x; i < n / 8; i += kThreads) vp[i] = __ldcg(xp + i);
}

}  // namespace el::cuda::decode
