// cuda_stream_gemv.cu — the weight-only int4 / int8 GEMV of one token
// (quant_matmul's QuantPath::stream) on the decode layer kernel's weight
// stream (cuda_decode_stream.cuh): one persistent block per SM takes an
// even share of the rows; its producer warp copies them in 16-row windows
// through a ring of shared-memory slots with bulk copies, never waiting for
// the consumers' input, while 16 consumer warps take each window on tensor
// cores (the scale after each k-block's mma where the groups allow it).
//
// Why: at batch 1 a decode step that the fused decoder stack does not take
// (cuda_decode_layer.cu: other architectures, EL_DECODE_LAYER=0) runs every
// int4 / int8 projection as a one-token GEMV, and so does a quantized
// lm_head (`quantize --include-lm-head`). The block-per-16-rows GEMV
// (cuda_quant_gemv.cu) streams those at 23-54% of HBM; this kernel at 40-70%
// (session 27, H100, cuda_quant_bench --m 1: int4 lm_head 21.1 -> 15.9 us,
// gate_up 9.9 -> 7.1, down 7.8 -> 4.5, o 4.2 -> 3.9; layered int4 decode
// TPOT 0.981 -> 0.79 ms, int8 1.252 -> 0.984). Smaller weights (automatic:
// under 2 MiB) stay on the GEMV: here a block would get a window or less. The
// scales of a block's rows are staged in shared memory by cp.async and the
// weight stream starts before the kernel waits for the one that writes x
// (programmatic dependent launch).
#include <algorithm>
#include <bit>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_decode_stream.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_plan_memo.h"

namespace el::cuda {
namespace {

using namespace decode;  // NOLINT: the stream's tiles and constants

struct StreamArgs {
  quant::QArgs q;
  int kb_shift;      // as LayerArgs::kb_shift: groups of 2^kb_shift k-blocks, or -1
  int max_rows;      // the most rows a block takes (the row sums' stride)
  int vec_bytes;     // shared memory for x (16-byte aligned)
  int xsum_floats;   // for x's sums over k-blocks (a multiple of 4)
};

// Ring depths the kernel is built with: the deeper where it fits.
constexpr int kStreamStages[2] = {8, 4};

// Rows [r0, r1) of n for block b of g: an even share.
__device__ __forceinline__ int2 share(int n, int b, int g) {
  return make_int2(static_cast<int>(int64_t{n} * b / g),
                   static_cast<int>(int64_t{n} * (b + 1) / g));
}

template <class T, int BITS, int STAGES>
__global__ void __launch_bounds__(kBlockThreads, 1)
    stream_gemv_kernel(const __grid_constant__ StreamArgs sa) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const quant::QArgs& a = sa.q;
  const int2 rr = share(a.n, blockIdx.x, gridDim.x);
  RowSeg seg{};
  seg.row0 = rr.x;
  seg.rows = rr.y - rr.x;
  seg.row_bytes = a.row_bytes;
  seg.groups = a.groups;
  // [STAGES, kSlotBytes] ring (the base the scale offsets are taken from),
  // x [k], its k-block sums, the warps' row sums [kWarps, max_rows], then the
  // block's scales and zero points.
  unsigned char* ring = smem_raw;
  T* vec = reinterpret_cast<T*>(smem_raw + STAGES * kSlotBytes);
  float* xsum = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(vec) + sa.vec_bytes);
  float* wpart = xsum + sa.xsum_floats;
  unsigned char* qstage = reinterpret_cast<unsigned char*>(wpart + kWarps * sa.max_rows);
  {  // the scales depend on no kernel: staged before the wait (every consumer thread)
    unsigned char* cursor = qstage;
    const bool issue = threadIdx.x < kThreads;
    const int64_t first = int64_t{seg.row0} * seg.groups, n = int64_t{seg.rows} * seg.groups;
    const unsigned char* sc = stage_rows(cursor, a.scales, 2 * first, 2 * n, issue);
    const unsigned char* zp = a.zeros ? stage_rows(cursor, a.zeros, first, n, issue) : nullptr;
    seg.scale_off = static_cast<int>(sc - smem_raw);
    seg.zero_off = zp ? static_cast<int>(zp - smem_raw) : -1;
    if (issue) cp_async_commit();
  }
  init_ring<STAGES>(full, empty);
  __syncthreads();  // the last block-wide barrier: the producer leaves below
  if (threadIdx.x >= kThreads) {  // the weights depend on no kernel: streamed before the wait
    unsigned tile = 0;
    produce_segment<STAGES>(seg, a.qw + int64_t{seg.row0} * seg.row_bytes, ring, full, empty,
                            l2_evict_first_policy(), tile);
    return;
  }
  pdl_wait();
  pdl_trigger();
  const uint4* x = static_cast<const uint4*>(a.x);
  for (int i = threadIdx.x; i < a.k / 8; i += kThreads) reinterpret_cast<uint4*>(vec)[i] = x[i];
  consumer_sync();
  if (sa.kb_shift >= 0) prepare_input<T, BITS>(vec, a.k, xsum);
  cp_async_wait<0>();
  consumer_sync();
  RingPos<STAGES> pos;
  const RingView<STAGES> rv{ring, smem_addr(full), smem_addr(empty), &pos};
  consume_rows<T, BITS, STAGES>(seg, vec, wpart, sa.max_rows, 0, rv, a.group_size, a.sym_zero,
                                xsum, sa.kb_shift);
  consumer_sync();
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  for (int i = threadIdx.x; i < seg.rows; i += kThreads) {
    float s = row_total(wpart, sa.max_rows, i);
    if (bias) s += to_f<T>(bias[seg.row0 + i]);
    y[seg.row0 + i] = from_f<T>(s);
  }
}

using StreamKernel = void (*)(const StreamArgs);

template <class T>
StreamKernel stream_kernel_for(int bits, int stages) {
  if (bits == 4) {
    return stages == kStreamStages[0] ? stream_gemv_kernel<T, 4, kStreamStages[0]>
                                      : stream_gemv_kernel<T, 4, kStreamStages[1]>;
  }
  return stages == kStreamStages[0] ? stream_gemv_kernel<T, 8, kStreamStages[0]>
                                    : stream_gemv_kernel<T, 8, kStreamStages[1]>;
}

struct StreamPlan {
  int grid = 0, stages = 0;
  size_t smem = 0;
  StreamArgs args{};
  cudaError_t attr_error = cudaSuccess;  // setting the kernel's shared memory failed
};

constexpr size_t kMaxStreamSmem = 220 * 1024;

// The launch for a (m = 1) or grid 0 where the block's share does not fit
// in shared memory.
StreamPlan stream_plan(const quant::QArgs& a, DType t, int bits) {
  StreamPlan pl;
  Context& cx = ctx();
  const int64_t grid = std::min<int64_t>(cx.sm_count, (a.n + 15) / 16);
  if (grid < 1) return pl;
  StreamArgs& sa = pl.args;
  sa.q = a;
  sa.kb_shift = -1;
  const int64_t kb_k = kblock_k(bits);
  if (a.group_size % kb_k == 0) {
    const auto kbs = static_cast<uint64_t>(a.group_size / kb_k);
    if (std::has_single_bit(kbs)) sa.kb_shift = std::countr_zero(kbs);
  }
  sa.max_rows = static_cast<int>((a.n + grid - 1) / grid);
  sa.vec_bytes = static_cast<int>((int64_t{a.k} * 2 + 15) / 16 * 16);
  sa.xsum_floats = static_cast<int>((xsum_count<int64_t>(bits, a.k) + 3) / 4 * 4);
  // the block's staged scales / zero points (stage_rows: + up to 6 bytes of alignment, to 16)
  const int64_t entries = int64_t{sa.max_rows} * a.groups;
  int64_t qstage = (2 * entries + 6 + 15) / 16 * 16;
  if (a.zeros) qstage += (entries + 6 + 15) / 16 * 16;
  const size_t rest = static_cast<size_t>(sa.vec_bytes) + 4 * static_cast<size_t>(sa.xsum_floats) +
                      4 * static_cast<size_t>(kWarps) * sa.max_rows + static_cast<size_t>(qstage);
  for (int stages : kStreamStages) {
    const size_t smem = size_t(stages) * kSlotBytes + rest;
    if (smem > kMaxStreamSmem) continue;
    const StreamKernel k = t == DType::bf16 ? stream_kernel_for<__nv_bfloat16>(bits, stages)
                                            : stream_kernel_for<__half>(bits, stages);
    pl.attr_error = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (pl.attr_error != cudaSuccess) {
      (void)cudaGetLastError();
      return pl;
    }
    pl.grid = static_cast<int>(grid);
    pl.stages = stages;
    pl.smem = smem;
    return pl;
  }
  return pl;
}

// stream_plan, remembered per shape (the attribute call costs a driver round trip).
StreamPlan cached_plan(const quant::QArgs& a, DType t, int bits) {
  static thread_local PlanMemo<StreamPlan, 6> memo;
  return memo.get({static_cast<int64_t>(t), bits, a.n, a.k, a.group_size, a.zeros != nullptr},
                  [&] { return stream_plan(a, t, bits); },
                  [](const StreamPlan& p) { return p.attr_error == cudaSuccess; });
}

// What the stream path needs that the operands lack, or nullptr with the
// launch's plan in *plan (one lookup for the check and the launch).
const char* check_stream(const quant::QArgs& a, DType t, int bits, StreamPlan* plan) {
  // One token, 16-byte pieces of x, rows of whole 64-byte k-blocks (the
  // tiles read k-blocks; bulk copies of 16-byte aligned rows), scale and
  // zero-point tables the 4-byte staging copies may read whole.
  if (a.m != 1) return "one token only";
  if ((t != DType::bf16 && t != DType::f16) || (bits != 4 && bits != 8))
    return "bf16 / f16 activations and 4 / 8-bit weights only";
  if (a.k % 8 != 0 || a.row_bytes % 64 != 0 || a.groups < 1 || a.k % a.group_size != 0)
    return "rows of whole 64-byte k-blocks (K a multiple of 128 int4 / 64 int8) in whole groups";
  const int64_t entries = int64_t{a.n} * a.groups;
  if ((2 * entries) % 4 != 0 || (a.zeros && entries % 4 != 0))
    return "scale and zero-point tables of a multiple of 4 bytes";
  if (reinterpret_cast<uintptr_t>(a.x) % 16 != 0 || reinterpret_cast<uintptr_t>(a.qw) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(a.scales) % 4 != 0 ||
      (a.zeros && reinterpret_cast<uintptr_t>(a.zeros) % 4 != 0))
    return "16-byte aligned x and weight rows, 4-byte aligned scales and zero points";
  *plan = cached_plan(a, t, bits);
  const StreamPlan& pl = *plan;
  if (pl.attr_error != cudaSuccess) {
    static thread_local std::string why;
    why = std::string("its shared memory set (cudaFuncSetAttribute: ") +
          cudaGetErrorName(pl.attr_error) + ")";
    return why.c_str();
  }
  if (pl.grid <= 0)
    return "a block's share of the rows (their scales and row sums) fits in shared memory";
  return nullptr;
}

}  // namespace

namespace quant {

bool stream_gemv_takes(const QArgs& a, DType t, int bits) {
  StreamPlan pl;
  return check_stream(a, t, bits, &pl) == nullptr;
}

void launch_stream_gemv(const QArgs& a, DType t, int bits, cudaStream_t stream) {
  StreamPlan pl;
  const char* refusal = check_stream(a, t, bits, &pl);
  EL_CUDA_ENSURE(refusal == nullptr,
                 "cuda quant_matmul: the stream path does not take N {}, K {}, {} bits, group "
                 "{}, {} token(s): it needs {}",
                 a.n, a.k, bits, a.group_size, a.m, refusal ? refusal : "");
  pl.args.q = a;  // (the cached plan's pointers are another call's)
  const StreamKernel k = t == DType::bf16 ? stream_kernel_for<__nv_bfloat16>(bits, pl.stages)
                                          : stream_kernel_for<__half>(bits, pl.stages);
  launch_kernel(k, dim3(static_cast<unsigned>(pl.grid)), dim3(kBlockThreads), pl.smem, stream,
                pl.args);
  EL_CUDA_CHECK_LAUNCH("stream_gemv_kernel");
}

}  // namespace quant
}  // namespace el::cuda
