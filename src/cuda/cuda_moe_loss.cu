// cuda_moe_loss.cu — the CUDA backend's MoE router losses (contracts in
// ops/backend.h, "mixture of experts"): the load-balancing loss and the
// z-loss, forward and backward. The rest of the MoE launchers are in
// cuda_moe.cu, the grouped GEMMs in cuda_moe_gemm.cu.
//
// Each forward is ONE launch: every block sums its tokens in a fixed order
// (each warp its tokens in turn, then the warps in order) into a partial; the
// last block to finish (arrival counter in ctx().counters) sums the partials,
// the whole block at it, in an order fixed by the indices (lane-strided f64
// sums, a butterfly, then the warps in order), so the result is
// deterministic. The balance forward counts the expert ids on the way; the
// balance backward, which needs the counts before its first token, counts
// them again in every block (n k ints from L2 per block, on a grid of a few
// blocks per SM) instead of launching a counting kernel first.
#include <algorithm>
#include <cmath>

#include "cuda/cuda_kernels.h"
#include "cuda/cuda_moe.cuh"

namespace el::cuda {
namespace {

using moe::kMaxExperts;
using moe::kPerLane;
using moe::kWarpsPerBlock;

// Blocks of a loss forward: a warp per token, at most 4 blocks per SM.
int loss_blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kWarpsPerBlock - 1) / kWarpsPerBlock,
                                            int64_t{ctx().sm_count} * 4));
}

// Warp w of the block holds f64 sums of column x = w, w + 8, ... of
// partial[blocks, e] (lane-strided over the blocks, then a butterfly): calls
// f(x, sum, int sum of ipartial) in every lane. ipartial may be null.
template <class F>
__device__ __forceinline__ void sum_columns(const float* partial, const int* ipartial, int blocks,
                                            int e, F&& f) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int x = warp; x < e; x += blockDim.x >> 5) {
    double p = 0.0;
    long long c = 0;
    for (int b = lane; b < blocks; b += 32) {
      p += __ldcg(partial + static_cast<int64_t>(b) * e + x);
      if (ipartial) c += __ldcg(ipartial + static_cast<int64_t>(b) * e + x);
    }
    p = warp_sum_d(p);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
    f(x, p, c);
  }
}

// Balance loss forward in one launch: per block, the score distribution
// summed over its tokens and the expert counts of its tokens' ids; the last
// block: loss = E sum_e (count_e / n) (P_e / n).
template <class T>
__global__ void balance_forward_kernel(const T* logits, const int32_t* ids, int64_t n, int e,
                                       int k, bool sigmoid, float* partial, int* count_partial,
                                       int* arrivals, float* loss) {
  __shared__ float sh[kWarpsPerBlock][kMaxExperts];
  __shared__ int cnt[kMaxExperts];
  __shared__ double scratch[kWarpsPerBlock];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int x = threadIdx.x; x < e; x += blockDim.x) cnt[x] = 0;
  __syncthreads();
  float acc[kPerLane] = {};
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; t < n;
       t += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    float s[kPerLane];
    moe::load_scores(logits + t * e, e, sigmoid, s, 0.f);
    if (sigmoid) {
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) sum += s[i];
      const float inv = 1.f / warp_sum(sum);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) s[i] *= inv;
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] += s[i];
    for (int j0 = 0; j0 < k; j0 += 32) {
      const int j = j0 + lane;
      moe::count_id_warp(j < k ? ids[t * k + j] : -1, e, cnt);
    }
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    if (lane + 32 * i < e) sh[warp][lane + 32 * i] = acc[i];
  }
  __syncthreads();
  for (int x = threadIdx.x; x < e; x += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < kWarpsPerBlock; ++w) v += sh[w][x];
    partial[blockIdx.x * static_cast<int64_t>(e) + x] = v;
    count_partial[blockIdx.x * static_cast<int64_t>(e) + x] = cnt[x];
  }
  if (!moe::last_block_arrives(arrivals)) return;
  double term = 0.0;
  sum_columns(partial, count_partial, gridDim.x, e,
              [&](int, double p, long long c) { term += static_cast<double>(c) * p; });
  if (lane == 0) scratch[warp] = term;
  __syncthreads();
  if (threadIdx.x == 0) {
    double v = 0.0;
    for (int w = 0; w < kWarpsPerBlock; ++w) v += scratch[w];
    const double nn = static_cast<double>(n);
    loss[0] = static_cast<float>(static_cast<double>(e) * v / (nn * nn));
  }
}

// dlogits for dq[e] = dloss E count_e / n^2 (the same for every token); each
// block first counts all n k ids itself.
template <class T>
__global__ void balance_backward_kernel(const float* dloss, const int32_t* ids, int64_t slots,
                                        const T* logits, int64_t n, int e, bool sigmoid,
                                        T* dlogits) {
  __shared__ int cnt[kMaxExperts];
  for (int x = threadIdx.x; x < e; x += blockDim.x) cnt[x] = 0;
  __syncthreads();
  {
    constexpr int kBatch = 8;  // independent loads in flight per thread
    const int64_t step = static_cast<int64_t>(blockDim.x) * kBatch;
    for (int64_t s0 = 0; s0 < slots; s0 += step) {  // uniform trip count: whole warps
      int v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int64_t s = s0 + u * static_cast<int64_t>(blockDim.x) + threadIdx.x;
        v[u] = s < slots ? __ldg(ids + s) : -1;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) moe::count_id_warp(v[u], e, cnt);
    }
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const float scale = dloss[0] * static_cast<float>(e) / (static_cast<float>(n) * n);
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    float s[kPerLane], g[kPerLane];
    moe::load_scores(logits + t * e, e, sigmoid, s, 0.f);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      g[i] = c < e ? scale * static_cast<float>(cnt[c]) : 0.f;
      sum += s[i];
    }
    // q = s (softmax) or s / S (sigmoid): dl = (g - <g, q>) / norm * (s or s (1 - s)).
    const float norm = sigmoid ? warp_sum(sum) : 1.f;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) dot += g[i] * s[i] / norm;
    dot = warp_sum(dot);
    T* out = dlogits + t * e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c >= e) continue;
      const float d = (g[i] - dot) / norm;
      out[c] = from_f<T>(sigmoid ? d * s[i] * (1.f - s[i]) : d * s[i]);
    }
  }
}

template <class T>
__device__ __forceinline__ float row_lse(const T* l, int e) {
  const int lane = threadIdx.x & 31;
  float mx = -INFINITY;
  for (int i = lane; i < e; i += 32) mx = fmaxf(mx, to_f<T>(l[i]));
  mx = warp_max(mx);
  float sum = 0.f;
  for (int i = lane; i < e; i += 32) sum += expf(to_f<T>(l[i]) - mx);
  return mx + logf(warp_sum(sum));
}

// Z-loss forward in one launch: per-block sums of lse^2; the last block:
// loss = their sum / n.
template <class T>
__global__ void z_forward_kernel(const T* logits, int64_t n, int e, float* partial, int* arrivals,
                                 float* loss) {
  __shared__ float sh[kWarpsPerBlock];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float acc = 0.f;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; t < n;
       t += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float lse = row_lse(logits + t * e, e);
    acc += lse * lse;
  }
  if (lane == 0) sh[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float v = 0.f;
    for (int w = 0; w < kWarpsPerBlock; ++w) v += sh[w];
    partial[blockIdx.x] = v;
  }
  if (!moe::last_block_arrives(arrivals)) return;
  if (warp != 0) return;
  sum_columns(partial, nullptr, gridDim.x, 1, [&](int, double v, long long) {
    if (lane == 0) loss[0] = static_cast<float>(v / static_cast<double>(n));
  });
}

template <class T>
__global__ void z_backward_kernel(const float* dloss, const T* logits, int64_t n, int e,
                                  T* dlogits) {
  const int lane = threadIdx.x & 31;
  const float scale = 2.f * dloss[0] / static_cast<float>(n);
  for (int64_t t = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    const T* l = logits + t * e;
    const float lse = row_lse(l, e);
    for (int i = lane; i < e; i += 32) {
      dlogits[t * e + i] = from_f<T>(scale * lse * expf(to_f<T>(l[i]) - lse));
    }
  }
}

}  // namespace

void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                              Tensor& loss) {
  expect_cuda_float(logits, "moe_balance_loss_forward (logits)");
  expect_cuda_dtype(ids, DType::i32, "moe_balance_loss_forward (ids)");
  expect_cuda_dtype(loss, DType::f32, "moe_balance_loss_forward (loss)");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  moe::check_experts(e, "moe_balance_loss_forward");
  Context& cx = ctx();
  const int blocks = loss_blocks(n);
  Tensor partial = Tensor::empty({int64_t{blocks} * e}, DType::f32, logits.device());
  Tensor counts = Tensor::empty({int64_t{blocks} * e}, DType::i32, logits.device());
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    balance_forward_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, cx.stream>>>(
        logits.data<T>(), ids.data<int32_t>(), n, static_cast<int>(e), static_cast<int>(k),
        score == MoeScore::sigmoid, partial.data<float>(), counts.data<int32_t>(), cx.counters,
        loss.data<float>());
  });
  EL_CUDA_CHECK_LAUNCH("balance_forward_kernel");
}

void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits, const Tensor& ids,
                               MoeScore score, Tensor& dlogits) {
  expect_cuda_dtype(dloss, DType::f32, "moe_balance_loss_backward (dloss)");
  expect_cuda_dtype(ids, DType::i32, "moe_balance_loss_backward (ids)");
  expect_cuda_dtype(dlogits, logits.dtype(), "moe_balance_loss_backward (dlogits)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  moe::check_experts(e, "moe_balance_loss_backward");
  Context& cx = ctx();
  // Every block counts all ids: a couple of blocks per SM, each walking many tokens.
  const int grid = std::min(moe::warp_grid(n), cx.sm_count * 2);
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    balance_backward_kernel<T><<<grid, kWarpsPerBlock * 32, 0, cx.stream>>>(
        dloss.data<float>(), ids.data<int32_t>(), ids.numel(), logits.data<T>(), n,
        static_cast<int>(e), score == MoeScore::sigmoid, dlogits.data<T>());
  });
  EL_CUDA_CHECK_LAUNCH("balance_backward_kernel");
}

void moe_z_loss_forward(const Tensor& logits, Tensor& loss) {
  expect_cuda_float(logits, "moe_z_loss_forward (logits)");
  expect_cuda_dtype(loss, DType::f32, "moe_z_loss_forward (loss)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  Context& cx = ctx();
  const int blocks = loss_blocks(n);
  Tensor partial = Tensor::empty({blocks}, DType::f32, logits.device());
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    z_forward_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, cx.stream>>>(
        logits.data<T>(), n, static_cast<int>(e), partial.data<float>(), cx.counters,
        loss.data<float>());
  });
  EL_CUDA_CHECK_LAUNCH("z_forward_kernel");
}

void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits) {
  expect_cuda_dtype(dloss, DType::f32, "moe_z_loss_backward (dloss)");
  expect_cuda_dtype(dlogits, logits.dtype(), "moe_z_loss_backward (dlogits)");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    z_backward_kernel<T><<<moe::warp_grid(n), kWarpsPerBlock * 32, 0, ctx().stream>>>(
        dloss.data<float>(), logits.data<T>(), n, static_cast<int>(e), dlogits.data<T>());
  });
  EL_CUDA_CHECK_LAUNCH("z_backward_kernel");
}

}  // namespace el::cuda
