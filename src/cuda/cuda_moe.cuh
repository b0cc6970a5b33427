// cuda_moe.cuh — what the mixture-of-experts kernels of cuda_moe.cu (router,
// grouping, gather / combine) and cuda_moe_loss.cu (router losses) share:
// the expert limit, the warp-per-token launch shape, the score loader, and
// the "last block finishes" arrival helper.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace el::cuda::moe {

constexpr int kMaxExperts = 256;            // router / loss / grouping kernels
constexpr int kPerLane = kMaxExperts / 32;  // scores per lane
constexpr int kWarpsPerBlock = 8;           // warp-per-token kernels: 256 threads

inline void check_experts(int64_t e, const char* what) {
  EL_CUDA_ENSURE(e >= 1 && e <= kMaxExperts,
                 "cuda {}: {} experts; the CUDA MoE kernels take 1 to {} (scores in registers)",
                 what, e, kMaxExperts);
}

inline int warp_grid(int64_t warps) { return grid_for(warps * 32, kWarpsPerBlock * 32); }

// Scores of one token into registers: lane holds experts lane + 32 i.
// softmax (mx, sum over the warp) or sigmoid; entries past E are `pad`.
template <class T>
__device__ __forceinline__ void load_scores(const T* l, int e, bool sigmoid, float (&s)[kPerLane],
                                            float pad) {
  const int lane = threadIdx.x & 31;
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int c = lane + 32 * i;
    s[i] = c < e ? to_f<T>(l[c]) : -INFINITY;
    mx = fmaxf(mx, s[i]);
  }
  if (sigmoid) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      s[i] = lane + 32 * i < e ? 1.f / (1.f + expf(-s[i])) : pad;
    }
    return;
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    s[i] = lane + 32 * i < e ? expf(s[i] - mx) : 0.f;
    sum += s[i];
  }
  const float inv = 1.f / warp_sum(sum);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) s[i] = lane + 32 * i < e ? s[i] * inv : pad;
}

// The end of a block of a kernel whose last block finishes the work of all
// (one launch instead of a partial kernel and a one-block finish kernel):
// the block's global writes are made visible, the block counts its arrival
// in `*arrivals` (a ctx().counters slot: zero between kernels), and true
// comes back, in every thread, only to the last block, which has set the
// counter back to zero and may read the other blocks' writes (through L2:
// __ldcg). Called by every thread of the block.
__device__ __forceinline__ bool last_block_arrives(int* arrivals) {
  __shared__ bool s_last;
  __threadfence();  // this block's partials before its arrival
  __syncthreads();
  if (threadIdx.x == 0) {
    s_last = atomicAdd(arrivals, 1) == static_cast<int>(gridDim.x) - 1;
    if (s_last) *arrivals = 0;  // every block has arrived: nobody counts here any more
  }
  __syncthreads();
  if (s_last) __threadfence();  // the other blocks' partials, read below
  return s_last;
}

// Counts expert ids into the block's shared counts sh[E] (int atomics: exact),
// one warp-aggregated atomic per distinct id in a warp. Called by whole
// warps: every lane passes an id (-1 or out of range: not counted).
__device__ __forceinline__ void count_id_warp(int x, int e, int* sh) {
  const bool ok = x >= 0 && x < e;
  const unsigned same = __match_any_sync(0xffffffffu, ok ? x : -1);
  const int lane = threadIdx.x & 31;
  if (ok && (same & ((1u << lane) - 1u)) == 0) atomicAdd(&sh[x], __popc(same));
}

}  // namespace el::cuda::moe
