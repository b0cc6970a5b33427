// cuda_decode_layer.cuh — internal to cuda_decode_layer.cu (the one-kernel
// decoder layer of a batch-1 decode step): the kernel's arguments, its launch
// constants and the small device helpers its phases share (trace stamps, the
// consumer warps' named barrier and sums, the flagged words that hand values
// from one phase to the next, the block's row range, the RMSNorm prologue).
// The weight stream is cuda_decode_stream.cuh (cuda_stream_gemv.cu uses it
// and these constants too), phase B's attention cuda_decode_attention.cuh.
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
// dependent load of phases A-C and every hand-off, against a fuller
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

// Layers one launch runs at most (decode_layers splits longer stacks):
// their pointers are kernel parameters (LayerArgs::layer, 136 bytes each).
constexpr int kMaxLayers = 32;

// One layer's tensors (the kernel's per-layer parameters).
struct LayerPtrs {
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
  const void* qkv_bias;        // [(H + 2 Hkv) D] or nullptr
  void* kc;                    // [1, Smax, Hkv, D]
  void* vc;
};

struct LayerArgs {
  const void* x_in;            // [C] residual stream into the first layer
  void* x;                     // [C] out of the last layer (does not alias x_in)
  LayerPtrs layer[kMaxLayers];  // [n_layers] (all of one shape and format)
  int n_layers;
  int group_size, sym_zero, qstage_bytes;  // qstage_bytes: smem for the block's scales
  // int4 / int8 whose groups are 2^kb_shift whole k-blocks (of 128 / 64 k):
  // the scale applied after each k-block's mma (consume_rows); -1 otherwise.
  int kb_shift;
  const float* inv_freq;       // [D / 2] or nullptr (no RoPE)
  const int32_t* pos;          // [1]: cache position of the new token
  // Hand-off words (in Context::handoff, handoff_layout()), see LLWord: qkv
  // [(H + 2 Hkv) D / 2], the attention partials [H, part_chunks, D + 2]
  // (m, l, o: a float each), the attention output [H D / 2], x after phase C
  // [C / 2], h [F / 2], x out of a layer that is not the launch's last [C / 2].
  unsigned long long *ll_qkv, *ll_part, *ll_attn, *ll_x, *ll_h, *ll_xo;
  unsigned long long* launches;  // the launches' counter (Context::layer_launches)
  DeviceErrorRecord* err;
  // nullptr, or [n_layers, grid, kTraceSlots] phase timestamps (bench only)
  unsigned long long* trace;
  int C, H, Hkv, D, F, smax, units_per_head, chunk_max, max_rows;
  int part_chunks;             // the most chunks a kv head's cache splits into
  int stage_keys;              // cache rows of k (and of v) an attention unit stages in smem
  float eps, sl2;              // sl2 = softmax scale x log2(e)
};

// ---- small device helpers ---------------------------------------------------------------
// The GPU's global nanosecond clock (%globaltimer), for the trace stamps.
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
// Phase timestamps for cuda_decode_layer_bench (decode_layer_trace): thread 0
// of each block writes %globaltimer (ns) to trace[block, slot]; the producer
// lane writes kTraceProducer when it has issued its last copy.
// Slots 0-12 mark the phases (cuda_decode_layer_bench names them; 4 is
// unused). Slots 13, 14, 16 and 19-20 are written only by the blocks that run
// an attention unit (after its scores, after its output or partials are
// written, after its queries are rotated, after its softmax, after thread 0
// stored its P V outputs), 17 only by the units that merge a kv head's
// partials (merge done); 0 elsewhere. 21: the x of phase A's RMSNorm has
// arrived. 18 and 22 are unused.
constexpr int kTraceScores = 13, kTracePartials = 14, kTraceProducer = 15, kTraceQuery = 16,
              kTraceMerged = 17, kTraceSoftmax = 19, kTracePV = 20, kTraceNormLoaded = 21;
#ifdef EL_DECODE_WINDOW_TRACE
// Diagnostic builds only (-DEL_DECODE_WINDOW_TRACE=1 on this file's
// translation units, tools/cuda_variant_build.sh): per window w < 16 of each
// layer, when the producer issued its copies (slot 23 + w) and when consumer
// warp 0 got past its "full" wait (39 + w); cuda_decode_layer_bench --trace
// prints their means. Off, the kernel has no per-window branch.
constexpr int kTraceWin = 16, kTraceWinIssue = 23, kTraceWinReady = kTraceWinIssue + kTraceWin;
constexpr int kTraceSlots = kTraceWinReady + kTraceWin;
__device__ __forceinline__ void stamp_window(unsigned long long* trace, int per_layer,
                                             unsigned tile, int base) {
  const unsigned l = tile / per_layer, w = tile % per_layer;
  if (w < kTraceWin)
    trace[(int64_t{l} * gridDim.x + blockIdx.x) * kTraceSlots + base + w] = global_ns();
}
#else
constexpr int kTraceSlots = 23;
#endif
__device__ __forceinline__ void stamp(unsigned long long* trace, int slot) {
  if (trace && (threadIdx.x == 0 || slot == kTraceProducer))
    trace[blockIdx.x * kTraceSlots + slot] = global_ns();
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

// ---- hand-offs: flagged words instead of grid barriers ------------------------------------
// A value one phase hands to the blocks of the next (qkv, the attention
// partials and output, x after phase C, h) goes to global memory as one
// 8-byte word {data, flag} written by one relaxed 64-bit store; a reader
// polls the word with relaxed 64-bit loads until its flag is the launch's
// epoch. An aligned 64-bit access is single-copy atomic, so a word that
// carries the flag carries its data: no fence and no grid barrier (NCCL's
// LL protocol). Why: a release arrival (or any gpu-scope fence) waits until
// the block's weight copies in flight have landed, so each of the four grid
// barriers this replaced passed 2.3-2.6 us after its last arrival; with
// relaxed arrivals (wrong, timing only) 0.9-1.3 us. Measured (session 22,
// H100, interleaved): generate TPOT 1.010-1.016 against 1.040-1.043 ms with
// the barriers. A poll is still a loaded round trip (1-1.5 us while the
// weight stream runs).
// Data is 2 values of T (qkv, attention output, x, h: the phases' row
// ranges are whole pairs) or one f32 (partials).
using LLWord = unsigned long long;

__device__ __forceinline__ void ll_store(LLWord* p, uint32_t data, uint32_t flag) {
  const LLWord v = (static_cast<LLWord>(flag) << 32) | data;
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ LLWord ll_load(const LLWord* p) {
  LLWord v;
  asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
// What a poll takes for "no word": a value that already carries `flag`, so
// it is never reloaded.
__device__ __forceinline__ LLWord ll_no_word(uint32_t flag) {
  return static_cast<LLWord>(flag) << 32;
}

// Waits until the words v[k], loaded from addr(k), all carry `flag` (v:
// their first loads, issued early; ll_no_word for none). Each round reloads
// every word still without it, so a thread pays one round trip a round, not
// one a word: settled one by one, a thread's later words each paid another
// round trip after the first had arrived, and phase E's h (5-6 words a
// thread) arrived 2.5 us after its last store against ~1 us for x (2 words
// a thread) (session 25 trace).
template <int N, class Addr>
__device__ __forceinline__ void ll_settle_each(LLWord (&v)[N], uint32_t flag, Addr&& addr) {
  for (;;) {
    bool stale = false;
#pragma unroll
    for (int k = 0; k < N; ++k) stale |= static_cast<uint32_t>(v[k] >> 32) != flag;
    if (!stale) return;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (static_cast<uint32_t>(v[k] >> 32) != flag) v[k] = ll_load(addr(k));
    }
  }
}
// The same for words p[0, N).
template <int N>
__device__ __forceinline__ void ll_settle_all(const LLWord* const (&p)[N], LLWord (&v)[N],
                                              uint32_t flag) {
  ll_settle_each(v, flag, [&](int k) { return p[k]; });
}

// out[0, n) = the data of words src[0, n) (every consumer thread; a
// consumer_sync before anyone reads out). kLLBatch loads per thread go out
// before the first is checked, and are settled together (ll_settle_each's
// rounds; a word past n is ll_no_word, never loaded).
constexpr int kLLBatch = 8;
__device__ __forceinline__ void ll_read(uint32_t* out, const LLWord* src, int n, uint32_t flag) {
  const LLWord settled = ll_no_word(flag);
  for (int i0 = threadIdx.x; i0 < n; i0 += kLLBatch * kThreads) {
    LLWord v[kLLBatch];
#pragma unroll
    for (int k = 0; k < kLLBatch; ++k) {
      const int i = i0 + k * kThreads;
      v[k] = i < n ? ll_load(src + i) : settled;
    }
    ll_settle_each(v, flag, [&](int k) { return src + i0 + k * kThreads; });
#pragma unroll
    for (int k = 0; k < kLLBatch; ++k) {
      const int i = i0 + k * kThreads;
      if (i < n) out[i] = static_cast<uint32_t>(v[k]);
    }
  }
}

// Two values rounded to T, the first in the low half (unpack2's order).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const T a = from_f<T>(lo), b = from_f<T>(hi);
  uint16_t ua, ub;
  memcpy(&ua, &a, 2);
  memcpy(&ub, &b, 2);
  return uint32_t{ua} | (uint32_t{ub} << 16);
}

// The flag of the launch's first layer (thread 0 of each block, after the
// PDL wait); layer l's is that + l. The counter is never reset and every
// launch adds exactly one per block, so a block that reads it after the PDL
// wait (every earlier launch complete, at most grid - 1 of this one's
// arrivals in) finds its launch's number n by rounding down; its layers
// take flags n kMaxLayers + 1 + l, so no two layers of any launches share
// one until the 32-bit flag wraps (2^27 launches: a word left from then
// could pass for a new one only if no launch since rewrote it, i.e. after a
// change of shape). Flag 0 (zeroed words) is never a layer's.
__device__ __forceinline__ uint32_t launch_flag(unsigned long long* counter) {
  const unsigned long long v = ld_acquire(counter);
  asm volatile("red.relaxed.gpu.global.add.u64 [%0], 1;" ::"l"(counter) : "memory");
  return static_cast<uint32_t>(v / gridDim.x) * kMaxLayers + 1u;
}

// Hand-off words the kernel uses (the host checks they fit Context::handoff),
// and where each part starts.
struct HandoffLayout {
  int64_t qkv, part, attn, x, h, xo, total;
};
inline HandoffLayout handoff_layout(int64_t C, int64_t H, int64_t Hkv, int64_t D,
                                                        int64_t F, int64_t part_chunks) {
  HandoffLayout l{};
  l.qkv = 0;
  l.part = l.qkv + (H + 2 * Hkv) * D / 2;
  l.attn = l.part + H * part_chunks * (D + 2);  // [H, part_chunks, D + 2]: m, l, o
  l.x = l.attn + H * D / 2;
  l.h = l.x + C / 2;
  l.xo = l.h + F / 2;
  l.total = l.xo + C / 2;
  return l;
}

// Rows [r0, r1) of `n` (even) split evenly over the grid in whole pairs (a
// hand-off word holds two).
__device__ __forceinline__ int2 block_rows(int n) {
  const int g = gridDim.x, b = blockIdx.x, pairs = n / 2;
  return make_int2(2 * static_cast<int>(int64_t{pairs} * b / g),
                   2 * static_cast<int>(int64_t{pairs} * (b + 1) / g));
}

// vec[0, n) = RMSNorm(x) * w rounded to T. x is read through L2 (written by
// the kernel before), one 16-byte pack per thread per round trip, and kept
// raw in vec across the block sum; x == nullptr: vec holds it already (a
// consumer_sync after it was written). w is the norm's weight row in shared
// memory (staged: the caller waited for it). Holding x and w in
// registers instead spilled them. trace / slot: the stamp once x has arrived
// (bench only).
template <class T>
__device__ void norm_vector(T* vec, const T* x, const T* w_smem, int n, float eps, float* red,
                            unsigned long long* trace = nullptr, int slot = 0) {
  const int packs = n / 8;
  const uint4* xp = reinterpret_cast<const uint4*>(x);
  uint4* vp = reinterpret_cast<uint4*>(vec);
  float ss = 0.f;
  for (int i = threadIdx.x; i < packs; i += kThreads) {
    const uint4 xv = x ? __ldcg(xp + i) : vp[i];
    const uint32_t vv[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = unpack2<T>(vv[e]);
      ss = fmaf(f.x, f.x, fmaf(f.y, f.y, ss));
    }
    if (x) vp[i] = xv;
  }
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

}  // namespace el::cuda::decode
