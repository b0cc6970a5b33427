// cuda_stream_probe.cu — the decode layer kernel's weight stream alone
// (cuda_decode_stream.cuh without the arithmetic, the barriers and the
// attention), for cuda_stream_bench: how fast can one block per SM move a
// weight matrix through a ring of shared-memory slots with bulk copies, per
// copy pattern? The layer kernel's phases can go no faster than this.
//
// Modes (StreamProbe::mode):
//   0  windows of `rows` rows x `span` bytes, one bulk copy per row (the
//      layer kernel's pattern: 16 copies of 1 KiB a window);
//   1  the same windows as one contiguous bulk copy each (a layout where each
//      window is stored tiled, one copy of rows x span bytes);
//   2  plain 16-byte loads by every thread, no ring (the read-bandwidth
//      yardstick of a streaming kernel).
// The consumer warps read the first 16 bytes of each slot and hand it back.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_bulk.cuh"
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_context.h"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kProbeWarps = 16, kProbeThreads = 32 * (kProbeWarps + 1), kProbeMaxStages = 16;

__global__ void __launch_bounds__(kProbeThreads, 1)
    stream_probe_kernel(const unsigned char* w, int64_t n_rows, int row_bytes, int rows, int span,
                        int stages, int mode, unsigned* sink) {
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ __align__(8) uint64_t full[kProbeMaxStages], empty[kProbeMaxStages];
  const int64_t r0 = n_rows * blockIdx.x / gridDim.x, r1 = n_rows * (blockIdx.x + 1) / gridDim.x;
  unsigned acc = 0;
  if (mode == 2) {
    const uint4* p = reinterpret_cast<const uint4*>(w + r0 * row_bytes);
    const int64_t n = (r1 - r0) * row_bytes / 16;
    for (int64_t i = threadIdx.x; i < n; i += 4 * kProbeThreads) {
      uint4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t j = i + u * kProbeThreads;
        v[u] = j < n ? __ldcs(p + j) : uint4{};
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].w;
    }
    if (acc == 0x9e3779b9u) *sink = acc;  // (keeps the loads)
    return;
  }
  const int slot_bytes = rows * span;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kProbeWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  unsigned tile = 0;
  if (warp == kProbeWarps) {
    const uint64_t policy = l2_evict_first_policy();
    for (int64_t r = r0; r < r1; r += rows) {
      const int nrows = static_cast<int>(r1 - r < rows ? r1 - r : rows);
      for (int off = 0; off < row_bytes; off += span, ++tile) {
        const unsigned n = static_cast<unsigned>(min(span, row_bytes - off));
        const unsigned slot = tile % stages, round = tile / stages;
        if (round > 0) mbar_wait(&empty[slot], (round - 1) & 1);
        if (lane == 0) mbar_expect_tx(&full[slot], n * static_cast<unsigned>(nrows));
        __syncwarp();
        if (mode == 0 && lane < nrows) {
          bulk_copy(ring + slot * slot_bytes + lane * span, w + (r + lane) * row_bytes + off, n,
                    &full[slot], policy);
        } else if (mode == 1 && lane == 0) {  // window (r, off) of a tiled layout
          bulk_copy(ring + slot * slot_bytes, w + r * row_bytes + int64_t{off} * nrows,
                    n * static_cast<unsigned>(nrows), &full[slot], policy);
        }
      }
    }
    return;
  }
  for (int64_t r = r0; r < r1; r += rows) {
    for (int off = 0; off < row_bytes; off += span, ++tile) {
      const unsigned slot = tile % stages;
      mbar_wait(&full[slot], (tile / stages) & 1);
      // (the slot's first 16 bytes: a slot has at least 16)
      acc ^= reinterpret_cast<const unsigned*>(ring + slot * slot_bytes)[lane & 3];
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[slot]);
    }
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

}  // namespace

void stream_probe(const Tensor& w, int64_t row_bytes, const StreamProbe& p) {
  EL_CUDA_ENSURE(w.device().kind == DeviceKind::cuda && w.is_contiguous() && aligned16(w.raw()) &&
                     row_bytes > 0 && row_bytes % 16 == 0 && w.nbytes() % row_bytes == 0,
                 "cuda stream_probe: w must be a contiguous 16-byte aligned device buffer of whole "
                 "{}-byte rows",
                 row_bytes);
  EL_CUDA_ENSURE(p.mode >= 0 && p.mode <= 2 && p.rows >= 1 && p.rows <= 32 && p.span >= 16 &&
                     p.span % 16 == 0 && row_bytes % p.span == 0 && p.stages >= 1 &&
                     p.stages <= kProbeMaxStages,
                 "cuda stream_probe: mode {} rows {} span {} stages {} out of range", p.mode,
                 p.rows, p.span, p.stages);
  Context& cx = ctx();
  Tensor sink = Tensor::empty({4}, DType::i32, w.device());  // (never written in practice)
  const size_t smem = p.mode == 2 ? 0 : size_t(p.stages) * p.rows * p.span;
  EL_CUDA_CHECK(cudaFuncSetAttribute(stream_probe_kernel,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  stream_probe_kernel<<<cx.sm_count, kProbeThreads, smem, cx.stream>>>(
      static_cast<const unsigned char*>(w.raw()), static_cast<int64_t>(w.nbytes() / row_bytes),
      static_cast<int>(row_bytes), p.rows, p.span, p.stages, p.mode,
      static_cast<unsigned*>(sink.raw()));
  EL_CUDA_CHECK_LAUNCH("stream_probe_kernel");
}

}  // namespace el::cuda
