// cuda_mamba.cuh — internal to src/cuda: the element functions the Mamba-1
// kernels share (cuda_mamba.cu: conv, state update, column copy;
// cuda_mamba_scan.cu: the selective scan).
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace el::cuda::mamba {

// torch's softplus (beta 1, threshold 20), sigmoid, SiLU and SiLU's derivative.
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }
__device__ __forceinline__ float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

// 2^x by the MUFU unit alone (relative error ~2^-22; flushes subnormal
// results to 0, which the scan's decays exp(dt A) <= 1 never need).
__device__ __forceinline__ float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Throws for a failed kernel launch (cudaGetLastError), naming `what`.
inline void check_launch(const char* what) {
  const cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) throw Exception(cuda_error(rc, what, __FILE__, __LINE__));
}

}  // namespace el::cuda::mamba
