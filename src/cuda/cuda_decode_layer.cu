// cuda_decode_layer.cu — one Llama-layout decoder layer of a batch-1 decode
// step in a single persistent kernel (Backend::decode_layer, ops/backend.h).
//
// Why: at batch 1 a layer is ~9 dependent kernels (norm, qkv GEMV, RoPE +
// cache write, attention, o GEMV, add + norm, gate/up GEMV, SwiGLU, down
// GEMV). Each pays a few microseconds of launch ramp and tail on top of its
// bytes, and the small ones read almost nothing, so the layered step reached
// only ~42% of HBM bandwidth. Here one block per SM runs the five phases of
// the layer, each waiting only for the values it reads, every small op
// living inside a GEMV as its prologue or epilogue:
//   A  every block: x -> RMSNorm (input_layernorm) into shared memory;
//      its rows of qkv = W_qkv x                                   -> qkv words
//   B  block (kv head g, chunk c) of the cache positions: RoPE on its q heads
//      (and on the new k, which the chunk holding the new position writes to
//      the cache with v); scores, softmax and P V over the chunk -> partials;
//      the chunks of kv head g merge them (attention_phase)  -> attention words
//      (the chunk's cache rows were copied into shared memory by cp.async
//      during phase A, for int4 / int8 layers after the first during the
//      previous layer's phase C, so B's loads are only the queries and the
//      partials)
//   C  its rows of o = W_o attn; x[r] += o[r] (the residual add)  -> x words
//   D  every block: x -> RMSNorm (post_attention_layernorm); its feature range
//      [f0, f1) of gate and of up; h = silu(gate) * up             -> h words
//   E  its rows of d = W_down h; x[r] += d[r]
// Rounding follows the layered path (each intermediate is rounded to the
// activation dtype where that path stores a tensor), so the two agree up to
// the order of f32 sums (tests/cuda/decode_layer_test.cpp).
//
// Weights stream, the activations wait: a block's weight rows for the whole
// layer are five row ranges (its qkv rows, o rows, gate rows, up rows, down
// rows) known before the layer starts. A producer warp copies them in windows
// of 16 rows x 1 KiB with the bulk copy engine (cp.async.bulk, marked
// evict-first in L2) into a ring of STAGES shared-memory slots,
// each completing on an mbarrier, without waiting for any phase: while the
// consumer warps wait for another phase's values or attend, the ring
// keeps filling, so HBM stays busy through them. Consumers take a window's
// 64-byte k-blocks a warp each as the A operand of tensor-core mma (the
// activation vector in shared memory is B), keep the window's row sums in the
// accumulators and store each warp's share to shared memory; the epilogue adds
// the shares (cuda_decode_stream.cuh). Weight-only quantized layers (int4 /
// int8, ops/quant_layout.h) stream the same windows, their 4-bit pieces fed
// to the mma as exact T (the scale and zero point applied per k-block after
// it where each k-block lies in one group, else dequantised in registers),
// their scales staged in shared memory by bulk copies (the first layer's
// before the kernel waits for its predecessor, the next layer's in two parts
// while this one runs: stage_layer); so are the two norms' weights.
//
// Hand-offs: each value a phase passes to other blocks is an 8-byte word
// {data, the launch's flag} in Context::handoff, stored and polled with
// relaxed 64-bit accesses (LLWord, cuda_decode_layer.cuh): a reader waits for
// exactly the words it needs, and nobody waits for a fence behind the weight
// copies in flight, which is what the grid barriers this replaced cost. The
// flag is the layer's number, from one counter every block adds 1 to
// (launch_flag). All blocks must be resident at once (a block may wait for
// any other's words), so the grid is one block per SM and the host checks
// that it fits.
//
// One launch runs a stack of up to kMaxLayers layers (decode_layers; the
// pointers of each are kernel parameters): phase E of a layer hands its rows
// of x to the next layer's phase A as words, each block keeps its own rows
// (its o rows are its down rows) in shared memory for the residual adds, and
// the producer streams on into the next layer's windows while the consumers
// finish this one. The words are reused from layer to layer, which is safe
// because no block can write a word of layer l + 1 before every block has
// read that word of layer l: each write of layer l + 1 depends (through the
// words it waited for) on every block having finished phase E of layer l, or
// for phase E's own words on every block having started layer l + 1.
// Measured (session 23, H100, generate TPOT at batch 1): int4 0.780 ms
// against 0.848 a launch per layer (session 22); bf16 1.002-1.014 against
// 1.010-1.016, where the chain of a layer's phases A-C still outlasts what
// the ring holds.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <span>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_decode_attention.cuh"
#include "cuda/cuda_decode_layer.cuh"
#include "cuda/cuda_decode_stream.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_plan_memo.h"

namespace el::cuda {
namespace {

using namespace decode;  // NOLINT: this file is the kernel's only user

// ---- the layer kernel ----------------------------------------------------------------------
// Rows 2i, 2i + 1 of the block's residual stream plus its GEMV rows, rounded
// as the layered path rounds (the GEMV output to T, then the sum to T): into
// sum and back into xres.
template <class T>
__device__ __forceinline__ void add_residual_pair(float* xres, const float* wpart, int ld, int i,
                                                  float (&sum)[2]) {
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const float y = to_f<T>(from_f<T>(row_total(wpart, ld, 2 * i + e)));
    sum[e] = to_f<T>(from_f<T>(xres[2 * i + e] + y));
    xres[2 * i + e] = sum[e];
  }
}

// BITS: 16 for dense weights in T, 4 or 8 for the quantized layouts;
// STAGES: the ring's slots. Runs layers [0, a.n_layers) of the launch.
template <class T, int DL, int BITS, int STAGES>
__global__ void __launch_bounds__(kBlockThreads, 1)
    decode_layer_kernel(const __grid_constant__ LayerArgs a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ float red[32];
  constexpr int kStages = STAGES;
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int C = a.C, F = a.F, HD = a.H * 32 * DL;
  const int nqkv = (a.H + 2 * a.Hkv) * 32 * DL;
  unsigned char* ring = smem_raw;  // [kStages, kSlotBytes]
  T* vec = reinterpret_cast<T*>(smem_raw + kStages * kSlotBytes);  // [max(C, H D, F)]
  const int vec_elems = max(max(C, HD), F);
  // [kWarps, max_rows] each consumer warp's share of the block's row sums
  float* wpart = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(vec) +
                                          ((vec_elems * sizeof(T) + 15) / 16) * 16);
  const int ld = a.max_rows;
  // [max_rows] the block's rows of the residual stream (its o rows = its down
  // rows, so across layers it is the block's own rows of the layer output)
  float* xres = wpart + kWarps * ld;
  // [vec_elems / k-block] the GEMV input's sums over k-blocks (int4 / int8,
  // prepare_input; none for dense weights, whose deeper ring needs the room)
  float* xsum = xres + a.max_rows;
  const int xsum_n = xsum_count(BITS, vec_elems);
  // [2, C] the two norms' weights (16-byte aligned)
  T* normw = reinterpret_cast<T*>(
      (reinterpret_cast<uintptr_t>(xsum + xsum_n) + 15) & ~uintptr_t{15});
  // (16-byte aligned: phase B reads its queries as float4)
  unsigned char* qstage = reinterpret_cast<unsigned char*>(normw + 2 * C);
  float* attn_smem = reinterpret_cast<float*>(qstage + a.qstage_bytes);
  // [2, stage_keys, D] cache rows of the block's attention unit (16-byte aligned)
  T* kv_stage = reinterpret_cast<T*>(
      (reinterpret_cast<uintptr_t>(
           attn_smem + attention_smem_floats(a.H / a.Hkv, 32 * DL, a.chunk_max)) + 15) &
      ~uintptr_t{15});
  const int2 rq = block_rows(nqkv), ro = block_rows(C), rf = block_rows(F);
  const int nf = rf.y - rf.x;
  // The five row ranges (qkv, o, gate, up, down), the same in every layer.
  // They live in shared memory, not registers: held in registers across the
  // phases they spilled.
  __shared__ RowSeg seg[5];
  if (threadIdx.x == 0) {
    const int mat[5] = {0, 1, 2, 2, 3};
    const int row0[5] = {rq.x, ro.x, rf.x, F + rf.x, ro.x};
    const int rows[5] = {rq.y - rq.x, ro.y - ro.x, nf, nf, ro.y - ro.x};
    const int kin[5] = {C, HD, C, C, F};
    for (int s = 0; s < 5; ++s) {
      seg[s].mat = mat[s];
      seg[s].row0 = row0[s];
      seg[s].rows = rows[s];
      seg[s].row_bytes = kin[s] * BITS / 8;
      seg[s].groups = BITS != 16 ? kin[s] / a.group_size : 0;
      seg[s].scale_off = -1;
      seg[s].zero_off = -1;
    }
  }
  __syncthreads();
  // The first layer's scales and norms depend on no kernel: into shared
  // memory now (thread 0 points seg at its scales; the barrier below
  // publishes them). stage_bar: the early and late parts' barriers, whose
  // phase l is layer l's staging.
  __shared__ __align__(8) uint64_t stage_bar[2];
  if (threadIdx.x == 0) {
    mbar_init(&stage_bar[0], 1);
    mbar_init(&stage_bar[1], 1);
    mbar_init_fence();
    stage_layer<T, BITS>(a, a.layer[0], seg, smem_raw, qstage, normw, true, kStageEarly,
                         &stage_bar[0]);
    stage_layer<T, BITS>(a, a.layer[0], seg, smem_raw, qstage, normw, true, kStageLate,
                         &stage_bar[1]);
  }
  // One GEMV segment: wpart[., base + r] = the warps' shares of W[r] . vec.
  RingPos<kStages> ring_pos;
#ifdef EL_DECODE_WINDOW_TRACE
  const RingView<kStages> rv{ring, smem_addr(full), smem_addr(empty), &ring_pos, a.trace,
                             windows_per_layer(seg)};
#else
  const RingView<kStages> rv{ring, smem_addr(full), smem_addr(empty), &ring_pos};
#endif
  const auto gemv = [&](int s, int base) {
    consume_rows<T, BITS, kStages>(seg[s], vec, wpart, ld, base, rv, a.group_size, a.sym_zero,
                                   xsum, a.kb_shift);
  };
  // Before each GEMV (vec written, a consumer_sync since): the block sums the
  // int4 / int8 paths subtract the zero points with and vec in B's order
  // (prepare_input), then a consumer_sync.
  const auto input_ready = [&](int n) {
    if (BITS != 16 && a.kb_shift >= 0) {
      prepare_input<T, BITS>(vec, n, xsum);
      consumer_sync();
    }
  };
  init_ring<kStages>(full, empty);
  __syncthreads();  // the last block-wide barrier: the producer leaves below
  if (threadIdx.x >= kThreads) {
    // Weights depend on no kernel: the stream starts before the wait.
    produce_rows<kStages>(seg, a, ring, full, empty, a.trace);
    return;
  }
  const int64_t trace_stride = int64_t{gridDim.x} * kTraceSlots;  // a layer's stamps
  stamp(a.trace, 0);
  pdl_wait();
  pdl_trigger();
  stamp(a.trace, 1);
  __shared__ uint32_t flag_smem;
  if (threadIdx.x == 0) flag_smem = launch_flag(a.launches);  // (read after a consumer_sync)
  T* x = static_cast<T*>(a.x);
  const int p = a.pos[0];  // (first used after the norm: the loads overlap)
  const bool p_ok = p >= 0 && p < a.smax;
  if (!p_ok && blockIdx.x == 0 && threadIdx.x == 0)
    report_device_error(a.err, kErrKvCachePosition, 0, p, a.smax);
  uint32_t* vec_words = reinterpret_cast<uint32_t*>(vec);

  for (int l = 0; l < a.n_layers; ++l) {
    const LayerPtrs& lw = a.layer[l];
    unsigned long long* trace = a.trace ? a.trace + l * trace_stride : nullptr;
    // A: qkv = W_qkv RMSNorm(x). The first layer reads x from memory (the
    // kernel before wrote it), the others the words the previous layer's
    // phase E stored.
    // The early part of the layer's staging (its input norm, qkv and o
    // scales): phase l of stage_bar[0].
    if (l == 0) {
      mbar_wait(&stage_bar[0], 0);
      norm_vector(vec, static_cast<const T*>(a.x_in), normw, C, a.eps, red, trace,
                  kTraceNormLoaded);
      if (p_ok) stage_attention_rows<T>(a, lw, p, kv_stage);
      cp_async_commit();  // (the cache rows' group; later layers' start in phase C)
    } else {
      stamp(trace, 0);
      stamp(trace, 1);
      ll_read(vec_words, a.ll_xo, C / 2, flag_smem + l - 1);
      mbar_wait(&stage_bar[0], l & 1);
      consumer_sync();
      norm_vector(vec, static_cast<const T*>(nullptr), normw, C, a.eps, red, trace,
                  kTraceNormLoaded);
      if (BITS == 16) {  // (dense layers' cache rows: see phase C)
        if (p_ok) stage_attention_rows<T>(a, lw, p, kv_stage);
        cp_async_commit();
      }
    }
    consumer_sync();
    const uint32_t flag = flag_smem + l;  // (thread 0 wrote it before this barrier)
    input_ready(C);
    stamp(trace, 2);
    gemv(0, 0);
    consumer_sync();
    const T* qkv_bias = static_cast<const T*>(lw.qkv_bias);
    for (int i = threadIdx.x; i < (rq.y - rq.x) / 2; i += kThreads) {
      const int r = rq.x + 2 * i;
      const float b0 = qkv_bias ? to_f<T>(qkv_bias[r]) : 0.f;
      const float b1 = qkv_bias ? to_f<T>(qkv_bias[r + 1]) : 0.f;
      ll_store(a.ll_qkv + r / 2,
               pack2<T>(row_total(wpart, ld, 2 * i) + b0, row_total(wpart, ld, 2 * i + 1) + b1),
               flag);
    }
    stamp(trace, 3);

    // B: attention (skipped, with the error reported, for a position outside
    // the cache); its units wait for their heads' q, k and v words only.
    if (p_ok) attention_phase<T, DL, BITS == 16>(a, lw, p, attn_smem, kv_stage, flag, trace);
    // The block's rows of x for phase C's residual add, off its critical path
    // (after the first layer xres holds them already).
    if (l == 0) {
      const T* x_in = static_cast<const T*>(a.x_in);
      for (int i = threadIdx.x; i < ro.y - ro.x; i += kThreads)
        xres[i] = to_f<T>(__ldcg(x_in + ro.x + i));
    }
    stamp(trace, 5);

    // C: x += W_o attn
    if (p_ok) {
      ll_read(vec_words, a.ll_attn, HD / 2, flag);
    } else {
      for (int i = threadIdx.x; i < HD / 2; i += kThreads) vec_words[i] = 0u;
    }
    consumer_sync();
    input_ready(HD);
    stamp(trace, 6);
    gemv(1, 0);
    consumer_sync();
    for (int i = threadIdx.x; i < (ro.y - ro.x) / 2; i += kThreads) {
      float sum[2];
      add_residual_pair<T>(xres, wpart, ld, i, sum);  // (phase E adds to xres)
      ll_store(a.ll_x + (ro.x / 2 + i), pack2<T>(sum[0], sum[1]), flag);
    }
    // The next layer's early part (this layer is done with its input norm
    // and its qkv / o scales). Quantized layers start the next layer's
    // cache rows now too (phase B is done with the room; phase B waits for
    // every cp.async group); dense ones in their phase A, as before
    // (session 31: here, bf16 generate 0.891-0.894 against 0.888-0.889 ms;
    // int8 0.763 against 0.787, int4 0.598 against 0.609).
    if (l + 1 < a.n_layers) {
      if (threadIdx.x == 0) {
        stage_layer<T, BITS>(a, a.layer[l + 1], seg, smem_raw, qstage, normw, false,
                             kStageEarly, &stage_bar[0]);
      }
      if (BITS != 16 && p_ok) stage_attention_rows<T>(a, a.layer[l + 1], p, kv_stage);
      if (BITS != 16) cp_async_commit();
    }
    stamp(trace, 7);

    // D: h = silu(gate) * up of W_gate_up RMSNorm(x), features [f0, f1)
    ll_read(vec_words, a.ll_x, C / 2, flag);
    consumer_sync();
    stamp(trace, 8);
    mbar_wait(&stage_bar[1], l & 1);  // the late part: post-attention norm, gate/up and down scales
    norm_vector(vec, static_cast<const T*>(nullptr), normw + C, C, a.eps, red);
    consumer_sync();
    input_ready(C);
    stamp(trace, 9);
    gemv(2, 0);
    gemv(3, nf);
    consumer_sync();
    for (int i = threadIdx.x; i < nf / 2; i += kThreads) {
      float hv[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float gt = to_f<T>(from_f<T>(row_total(wpart, ld, 2 * i + e)));
        const float up = to_f<T>(from_f<T>(row_total(wpart, ld, nf + 2 * i + e)));
        hv[e] = gt * (1.f / (1.f + expf(-gt))) * up;
      }
      ll_store(a.ll_h + (rf.x / 2 + i), pack2<T>(hv[0], hv[1]), flag);
    }
    stamp(trace, 10);

    // E: x += W_down h: to memory after the launch's last layer, else as
    // words for the next layer's phase A.
    ll_read(vec_words, a.ll_h, F / 2, flag);
    consumer_sync();
    input_ready(F);
    stamp(trace, 11);
    gemv(4, 0);
    consumer_sync();
    const bool last = l + 1 == a.n_layers;
    for (int i = threadIdx.x; i < (ro.y - ro.x) / 2; i += kThreads) {
      float sum[2];
      add_residual_pair<T>(xres, wpart, ld, i, sum);
      if (last) {
        x[ro.x + 2 * i] = from_f<T>(sum[0]);
        x[ro.x + 2 * i + 1] = from_f<T>(sum[1]);
      } else {
        ll_store(a.ll_xo + (ro.x / 2 + i), pack2<T>(sum[0], sum[1]), flag);
      }
    }
    stamp(trace, 12);
    if (!last && threadIdx.x == 0) {  // the next layer's late part (this layer is done with it)
      stage_layer<T, BITS>(a, a.layer[l + 1], seg, smem_raw, qstage, normw, false, kStageLate,
                           &stage_bar[1]);
    }
  }
}

constexpr size_t kMaxSmem = 220 * 1024;

struct Plan {
  int grid = 0;
  size_t smem = 0;
  int max_rows = 0, units_per_head = 0, chunk_max = 0, qstage_bytes = 0, stage_keys = 0;
  int part_chunks = 0;  // chunks of a kv head at most (attention_unit: min(units, smax / kMinChunk))
  int stages = 0;  // the ring's slots
};

// The longest GEMV input (the kernel's vec_elems).
int64_t vec_elems(const DecodeLayerWeights& w, int64_t C, int64_t F) {
  return std::max({C, w.n_head * w.head_dim, F});
}

// 16 for dense weights, else the quantized bits.
int weight_bits(const DecodeLayerWeights& w) { return w.quantized() ? w.q_qkv.bits : 16; }

using KernelPtr = void (*)(const LayerArgs);

// stages: kQuantStages for bits 4 / 8, one of kDenseStages for 16.
template <class T, int DL>
KernelPtr kernel_for(int bits, int stages) {
  if (bits == 4) return decode_layer_kernel<T, DL, 4, kQuantStages>;
  if (bits == 8) return decode_layer_kernel<T, DL, 8, kQuantStages>;
  return stages == kDenseStages[0] ? decode_layer_kernel<T, DL, 16, kDenseStages[0]>
                                   : decode_layer_kernel<T, DL, 16, kDenseStages[1]>;
}

KernelPtr pick_kernel(DType t, int64_t d, int bits, int stages) {
  if (t == DType::bf16) {
    return d == 64 ? kernel_for<__nv_bfloat16, 2>(bits, stages)
                   : kernel_for<__nv_bfloat16, 4>(bits, stages);
  }
  return d == 64 ? kernel_for<__half, 2>(bits, stages) : kernel_for<__half, 4>(bits, stages);
}

// The most rows block_rows gives a block of `n` (even) over `grid` blocks.
int64_t pair_rows_max(int64_t n, int64_t grid) { return 2 * ((n / 2 + grid - 1) / grid); }

// Shared memory for a block's staged scales and zero points (the kernel's
// stage_span: each segment's rows rounded out to 16-byte boundaries, up to
// 30 bytes more), bounded with the most rows any block gets.
int qstage_bound(const DecodeLayerWeights& w, int64_t C, int64_t F, int64_t grid) {
  if (!w.quantized()) return 0;
  const int64_t HD = w.n_head * w.head_dim, gs = w.q_qkv.group_size;
  const int64_t nqkv = (w.n_head + 2 * w.n_kv_head) * w.head_dim;
  const int64_t seg[5][2] = {{nqkv, C}, {C, HD}, {F, C}, {F, C}, {C, F}};  // rows N, inputs K
  int64_t total = 0;
  for (const auto& sk : seg) {
    const int64_t n = pair_rows_max(sk[0], grid) * (sk[1] / gs);
    total += (2 * n + 30) / 16 * 16;  // (the span rounded out to 16 bytes: stage_span)
    if (!w.q_qkv.symmetric) total += (n + 30) / 16 * 16;
  }
  return static_cast<int>(std::min<int64_t>(total, int64_t{1} << 30));
}

// The launch shape: one block per SM (all resident at once, the grid
// barrier's condition), or grid 0 when one block does not fit on an SM.
Plan compute_plan(const DecodeLayerWeights& w, int64_t C, int64_t F, int64_t smax, DType t) {
  Plan pl;
  Context& cx = ctx();
  const int bits = weight_bits(w);
  const int64_t g_min = cx.sm_count;
  const int64_t nqkv = (w.n_head + 2 * w.n_kv_head) * w.head_dim;
  pl.max_rows = static_cast<int>(std::max({pair_rows_max(nqkv, g_min), pair_rows_max(C, g_min),
                                           2 * pair_rows_max(F, g_min)}) + 1);
  const int64_t units_per_head = std::max<int64_t>(1, g_min / w.n_kv_head);
  pl.qstage_bytes = qstage_bound(w, C, F, g_min);
  const int group = static_cast<int>(w.n_head / w.n_kv_head);
  pl.chunk_max = static_cast<int>(
      std::max<int64_t>(kMinChunk, (smax + units_per_head - 1) / units_per_head));
  const int64_t vec_n = vec_elems(w, C, F);
  const int64_t xsum_n = xsum_count(bits, vec_n);  // the kernel's xsum
  const size_t rest = static_cast<size_t>((vec_n * 2 + 15) / 16 * 16) +
                      sizeof(float) * (kWarps + 1) * pl.max_rows +
                      sizeof(float) * static_cast<size_t>(xsum_n) + 16 +
                      size_t{2} * static_cast<size_t>(C) * dtype_size(t) +
                      static_cast<size_t>(pl.qstage_bytes) +
                      sizeof(float) * static_cast<size_t>(attention_smem_floats(
                                          group, static_cast<int>(w.head_dim), pl.chunk_max)) + 16;
  // The attention unit's k and v rows in shared memory: the whole chunk when
  // it fits, else as many rows as fit (the rest are read from L2). Dense
  // weights take the deeper ring only where the whole chunk still fits.
  const size_t row_pair =
      size_t{2} * static_cast<size_t>(stage_stride(static_cast<int>(w.head_dim))) * dtype_size(t);
  pl.stages = bits == 16 ? kDenseStages[1] : kQuantStages;
  const size_t whole_chunk = pl.chunk_max * row_pair;
  if (bits == 16 && static_cast<size_t>(kDenseStages[0]) * kSlotBytes + rest + whole_chunk <= kMaxSmem)
    pl.stages = kDenseStages[0];
  pl.smem = size_t(pl.stages) * kSlotBytes + rest;
  if (pl.smem > kMaxSmem) return pl;
  pl.stage_keys = static_cast<int>(std::min<size_t>(pl.chunk_max, (kMaxSmem - pl.smem) / row_pair));
  pl.smem += pl.stage_keys * row_pair;
  const KernelPtr k = pick_kernel(t, w.head_dim, bits, pl.stages);
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
  // Every block must be resident at once (the phases wait for each other's
  // words): never more than fit.
  const int64_t part_chunks = std::min(units_per_head, (smax + kMinChunk - 1) / kMinChunk);
  // (A guard: where the shared memory above fits, the words need at most
  // ~430K of the 512K on up to ~150 SMs: H x units_per_head <= 16 x grid
  // partials of D + 2, the vectors bounded by the shared-memory vec.)
  if (handoff_layout(C, w.n_head, w.n_kv_head, w.head_dim, F, part_chunks).total > kHandoffWords)
    return pl;
  pl.grid = cx.sm_count;
  pl.units_per_head = static_cast<int>(units_per_head);
  pl.part_chunks = static_cast<int>(part_chunks);
  return pl;
}

// compute_plan, remembered per shape (eager decoding asks once per layer and step).
Plan make_plan(const DecodeLayerWeights& w, int64_t C, int64_t F, int64_t smax, DType t) {
  static thread_local PlanMemo<Plan, 10> memo;
  const bool quant = w.quantized();
  return memo.get({static_cast<int64_t>(t), w.head_dim, w.n_head, w.n_kv_head, C, F, smax,
                   weight_bits(w), quant ? w.q_qkv.group_size : 0, quant && !w.q_qkv.symmetric},
                  [&] { return compute_plan(w, C, F, smax, t); });
}

bool on_cuda(const Tensor& t) { return t.defined() && t.device().kind == DeviceKind::cuda; }
bool dense_ok(const Tensor& t, DType dt, int64_t rows, int64_t cols) {
  return on_cuda(t) && t.dtype() == dt && t.ndim() == 2 && t.dim(0) == rows && t.dim(1) == cols &&
         t.is_contiguous() && aligned16(t.raw());
}
bool vec_ok(const Tensor& t, DType dt, int64_t n) {
  return on_cuda(t) && t.dtype() == dt && t.numel() == n && t.is_contiguous();
}
// A norm weight the kernel stages with a bulk copy (16-byte aligned).
bool norm_ok(const Tensor& t, DType dt, int64_t n) { return vec_ok(t, dt, n) && aligned16(t.raw()); }
// A [rows, cols] table the kernel stages with bulk copies of 16-byte aligned
// spans (stage_span): 16-byte aligned, its size a multiple of 16, so a span
// rounded out to 16 bytes stays inside it. (Other tables take the layered path.)
bool table_ok(const Tensor& t, DType dt, int64_t rows, int64_t cols) {
  return on_cuda(t) && t.dtype() == dt && t.ndim() == 2 && t.dim(0) == rows && t.dim(1) == cols &&
         t.is_contiguous() && aligned16(t.raw()) && t.nbytes() % 16 == 0;
}
// A quantized [n, k] weight in the layout the kernel streams: int4 / int8,
// 16-byte chunks inside one group, rows of whole 64-byte k-blocks (bulk copies
// of 16-byte aligned rows), the format of `ref` (the layer's qkv).
bool quant_ok(const QuantizedWeight& q, const QuantizedWeight& ref, int64_t n, int64_t k) {
  if (q.bits != ref.bits || q.group_size != ref.group_size || q.symmetric != ref.symmetric ||
      q.out_features != n || q.in_features != k || (q.bits != 4 && q.bits != 8))
    return false;
  const int64_t chunk_k = q.bits == 4 ? 32 : 16, row_bytes = k * q.bits / 8;
  if (q.group_size <= 0 || q.group_size % chunk_k != 0 || k % q.group_size != 0 ||
      row_bytes % 64 != 0 || row_bytes > (int64_t{1} << 30))
    return false;
  const int64_t groups = k / q.group_size;
  return dense_ok(q.qweight, DType::u8, n, row_bytes) && table_ok(q.scales, DType::f16, n, groups) &&
         (q.symmetric ? !q.zeros.defined() : table_ok(q.zeros, DType::u8, n, groups));
}

unsigned long long* g_trace = nullptr;  // decode_layer_trace

}  // namespace

int decode_layer_trace(unsigned long long* buffer) {
  g_trace = buffer;
  return kTraceSlots;
}

namespace {
// -1: follow EL_DECODE_LAYER; 0 / 1: set_decode_layer_enabled.
int g_enabled_override = -1;
}  // namespace

bool decode_layer_enabled() {
  static const bool from_env = [] {  // on unless EL_DECODE_LAYER=0
    const char* e = std::getenv("EL_DECODE_LAYER");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return g_enabled_override < 0 ? from_env : g_enabled_override == 1;
}

void set_decode_layer_enabled(int enabled) { g_enabled_override = enabled < 0 ? -1 : enabled != 0; }

bool decode_layer_takes(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                        const Tensor& k_cache, const Tensor& v_cache) {
  if (!x.defined() || x.device().kind != DeviceKind::cuda) return false;
  const DType t = x.dtype();
  if (t != DType::bf16 && t != DType::f16) return false;
  if (x.numel() != x.dim(-1) || !x.is_contiguous() || !aligned16(x.raw())) return false;
  const int64_t C = x.dim(-1), H = w.n_head, Hkv = w.n_kv_head, D = w.head_dim;
  if (H <= 0 || Hkv <= 0 || H % Hkv != 0 || H / Hkv > kMaxGroup || (D != 64 && D != 128))
    return false;
  const bool quant = w.quantized();
  if (quant ? w.q_gate_up.out_features % 2 != 0
            : !w.gate_up.defined() || w.gate_up.ndim() != 2 || w.gate_up.dim(0) % 2 != 0)
    return false;
  const int64_t F = w.d_ff(), nqkv = (H + 2 * Hkv) * D;
  // (16-byte packs of x and of weight rows; the plan bounds the shared memory)
  if (C % 8 != 0 || F % 8 != 0 || C > (1 << 20) || F > (1 << 20)) return false;
  if (!norm_ok(w.input_norm, t, C) || !norm_ok(w.post_norm, t, C)) return false;
  if (w.qkv_bias.defined() && !vec_ok(w.qkv_bias, t, nqkv)) return false;
  if (quant) {
    const QuantizedWeight& r = w.q_qkv;
    if (!quant_ok(w.q_qkv, r, nqkv, C) || !quant_ok(w.q_o, r, C, H * D) ||
        !quant_ok(w.q_gate_up, r, 2 * F, C) || !quant_ok(w.q_down, r, C, F))
      return false;
  } else if (!dense_ok(w.qkv, t, nqkv, C) || !dense_ok(w.o, t, C, H * D) ||
             !dense_ok(w.gate_up, t, 2 * F, C) || !dense_ok(w.down, t, C, F)) {
    return false;
  }
  if (inv_freq.defined() && (inv_freq.dtype() != DType::f32 || inv_freq.numel() != D / 2 ||
                             inv_freq.device().kind != DeviceKind::cuda))
    return false;
  for (const Tensor* c : {&k_cache, &v_cache}) {
    if (!c->defined() || c->dtype() != t || c->ndim() != 4 || c->dim(0) != 1 ||
        c->dim(2) != Hkv || c->dim(3) != D || !c->is_contiguous() || !aligned16(c->raw()) ||
        c->device().kind != DeviceKind::cuda)
      return false;
  }
  if (k_cache.dim(1) != v_cache.dim(1) || k_cache.dim(1) >= (int64_t{1} << 30)) return false;
  return make_plan(w, C, F, k_cache.dim(1), t).grid > 0;
}

namespace {

// Layers a decode_layers launch takes at most: kMaxLayers, or fewer with
// EL_DECODE_LAYERS_PER_LAUNCH=n (1: a launch per layer, the session-22
// path, for A/B runs).
int layers_per_launch() {
  static const int n = [] {
    const char* e = std::getenv("EL_DECODE_LAYERS_PER_LAUNCH");
    const int v = e ? std::atoi(e) : kMaxLayers;
    return std::clamp(v, 1, kMaxLayers);
  }();
  return n;
}

// Whether two layers can share a launch: everything the plan and the
// launch's common arguments depend on is equal (the rest is per layer).
bool same_format(const DecodeLayerWeights& a, const DecodeLayerWeights& b, const Tensor& ka,
                 const Tensor& kb) {
  const bool qa = a.quantized(), qb = b.quantized();
  if (qa != qb || a.n_head != b.n_head || a.n_kv_head != b.n_kv_head ||
      a.head_dim != b.head_dim || a.d_ff() != b.d_ff() || a.eps != b.eps ||
      ka.dim(1) != kb.dim(1))
    return false;
  return !qa || (a.q_qkv.bits == b.q_qkv.bits && a.q_qkv.group_size == b.q_qkv.group_size &&
                 a.q_qkv.symmetric == b.q_qkv.symmetric);
}

LayerPtrs layer_ptrs(const DecodeLayerWeights& w, Tensor& k_cache, Tensor& v_cache) {
  LayerPtrs lp{};
  lp.w_in_norm = w.input_norm.raw();
  lp.w_post_norm = w.post_norm.raw();
  const bool quant = w.quantized();
  const Tensor* dense[4] = {&w.qkv, &w.o, &w.gate_up, &w.down};
  const QuantizedWeight* qw[4] = {&w.q_qkv, &w.q_o, &w.q_gate_up, &w.q_down};
  const void** wp[4] = {&lp.w_qkv, &lp.w_o, &lp.w_gate_up, &lp.w_down};
  for (int m = 0; m < 4; ++m) {
    *wp[m] = quant ? qw[m]->qweight.raw() : dense[m]->raw();
    lp.scales[m] = quant ? static_cast<const uint16_t*>(qw[m]->scales.raw()) : nullptr;
    lp.zeros[m] =
        quant && !qw[m]->symmetric ? static_cast<const uint8_t*>(qw[m]->zeros.raw()) : nullptr;
  }
  lp.qkv_bias = w.qkv_bias.defined() ? w.qkv_bias.raw() : nullptr;
  lp.kc = k_cache.raw();
  lp.vc = v_cache.raw();
  return lp;
}

// One launch over layers [0, n) of w (n <= kMaxLayers, all taken by
// decode_layer_takes and of one format): x in, out the last layer's output.
void launch_layers(const Tensor& x, const DecodeLayerWeights* w, Tensor* k_caches,
                   Tensor* v_caches, int n, const Tensor& inv_freq, const Tensor& positions,
                   Tensor& out) {
  Context& cx = ctx();
  const DecodeLayerWeights& w0 = w[0];
  const int64_t C = x.dim(-1), F = w0.d_ff(), H = w0.n_head, Hkv = w0.n_kv_head,
                D = w0.head_dim, smax = k_caches[0].dim(1);
  const Plan pl = make_plan(w0, C, F, smax, x.dtype());
  const DType t = x.dtype();
  LayerArgs a{};
  a.x_in = x.raw();
  a.x = out.raw();
  for (int l = 0; l < n; ++l) a.layer[l] = layer_ptrs(w[l], k_caches[l], v_caches[l]);
  a.n_layers = n;
  const bool quant = w0.quantized();
  a.group_size = quant ? static_cast<int>(w0.q_qkv.group_size) : 0;
  a.sym_zero = quant ? w0.q_qkv.symmetric_zero() : 0;
  a.kb_shift = -1;
  const int64_t kb_k = quant ? kblock_k(w0.q_qkv.bits) : 0;
  if (quant && w0.q_qkv.group_size % kb_k == 0) {
    const auto kbs = static_cast<uint64_t>(w0.q_qkv.group_size / kb_k);  // k-blocks a group
    if (std::has_single_bit(kbs)) a.kb_shift = std::countr_zero(kbs);
  }
  a.qstage_bytes = pl.qstage_bytes;
  a.inv_freq = inv_freq.defined() ? inv_freq.data<float>() : nullptr;
  a.pos = positions.data<int32_t>();
  const HandoffLayout hl = handoff_layout(C, H, Hkv, D, F, pl.part_chunks);
  a.ll_qkv = cx.handoff + hl.qkv;
  a.ll_part = cx.handoff + hl.part;
  a.ll_attn = cx.handoff + hl.attn;
  a.ll_x = cx.handoff + hl.x;
  a.ll_h = cx.handoff + hl.h;
  a.ll_xo = cx.handoff + hl.xo;
  a.launches = cx.layer_launches;
  a.err = cx.dev_error;
  a.trace = g_trace;
  a.C = static_cast<int>(C);
  a.H = static_cast<int>(H);
  a.Hkv = static_cast<int>(Hkv);
  a.D = static_cast<int>(D);
  a.F = static_cast<int>(F);
  a.smax = static_cast<int>(smax);
  a.units_per_head = pl.units_per_head;
  a.part_chunks = pl.part_chunks;
  a.chunk_max = pl.chunk_max;
  a.max_rows = pl.max_rows;
  a.stage_keys = pl.stage_keys;
  a.eps = w0.eps;
  a.sl2 = (1.0f / std::sqrt(static_cast<float>(D))) * kLog2e;
  launch_kernel(pick_kernel(t, D, weight_bits(w0), pl.stages), dim3(static_cast<unsigned>(pl.grid)),
                dim3(kBlockThreads), pl.smem, cx.stream, a);
  EL_CUDA_CHECK_LAUNCH("decode_layer_kernel");
}

void check_positions_and_out(const Tensor& x, const Tensor& positions, const Tensor& out) {
  EL_CUDA_ENSURE(positions.dtype() == DType::i32 && positions.numel() == 1,
                 "cuda decode_layer: positions must be i32 [1], got {} {}",
                 dtype_name(positions.dtype()), shape_str(positions.shape()));
  EL_CUDA_ENSURE(out.dtype() == x.dtype() && out.numel() == x.numel() && out.is_contiguous() &&
                     out.raw() != x.raw(),
                 "cuda decode_layer: out {} {} must be a separate tensor like x {} {}",
                 shape_str(out.shape()), dtype_name(out.dtype()), shape_str(x.shape()),
                 dtype_name(x.dtype()));
}

}  // namespace

void decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                  const Tensor& positions, Tensor& k_cache, Tensor& v_cache, Tensor& out) {
  EL_CUDA_ENSURE(decode_layer_takes(x, w, inv_freq, k_cache, v_cache),
                 "cuda decode_layer: unsupported shapes or dtypes (x {} {}); check "
                 "decode_layer_takes() first",
                 shape_str(x.shape()), dtype_name(x.dtype()));
  check_positions_and_out(x, positions, out);
  launch_layers(x, &w, &k_cache, &v_cache, 1, inv_freq, positions, out);
}

void decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w, const Tensor& inv_freq,
                   const Tensor& positions, std::span<Tensor> k_caches, std::span<Tensor> v_caches,
                   Tensor& out) {
  const size_t n = w.size();
  EL_CUDA_ENSURE(n > 0 && k_caches.size() == n && v_caches.size() == n,
                 "cuda decode_layers: {} layers with {} k and {} v caches (expected the same "
                 "number, at least one)",
                 n, k_caches.size(), v_caches.size());
  for (size_t i = 0; i < n; ++i) {
    EL_CUDA_ENSURE(decode_layer_takes(x, w[i], inv_freq, k_caches[i], v_caches[i]),
                   "cuda decode_layers: layer {} has unsupported shapes or dtypes (x {} {}); "
                   "check decode_layer_takes() first",
                   i, shape_str(x.shape()), dtype_name(x.dtype()));
  }
  check_positions_and_out(x, positions, out);
  // Runs of consecutive layers of one format, at most layers_per_launch()
  // each, one launch per run; between runs the stream goes through scratch
  // tensors.
  const size_t per_launch = static_cast<size_t>(layers_per_launch());
  Tensor cur = x, spare[2];
  int which = 0;
  for (size_t i0 = 0; i0 < n;) {
    size_t i1 = i0 + 1;
    while (i1 < n && i1 - i0 < per_launch &&
           same_format(w[i0], w[i1], k_caches[i0], k_caches[i1]))
      ++i1;
    Tensor* dst = &out;
    if (i1 < n) {
      if (!spare[which].defined()) spare[which] = Tensor::empty(x.shape(), x.dtype(), x.device());
      dst = &spare[which];
      which ^= 1;
    }
    launch_layers(cur, w.data() + i0, k_caches.data() + i0, v_caches.data() + i0,
                  static_cast<int>(i1 - i0), inv_freq, positions, *dst);
    cur = *dst;
    i0 = i1;
  }
}

}  // namespace el::cuda
