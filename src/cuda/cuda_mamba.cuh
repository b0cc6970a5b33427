// cuda_mamba.cuh — internal to src/cuda: the element functions the Mamba-1
// kernels share (cuda_mamba.cu: conv, state update, column copy;
// cuda_mamba_scan.cu: the selective scan), and the entry points of the
// scan's second design (cuda_mamba_scan_v2.cu).
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"
#include "core/tensor.h"
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

// The scan's checkpoint interval, read once per process:
// EL_MAMBA_SCAN_CHUNK = 16, 32, 64 or 128 (default) steps (what
// mamba_scan_chunk() returns): fewer steps, less recomputation in the
// backward, more checkpoint memory.
int64_t scan_v2_chunk();
// Segments over time of the scan (cuda_mamba_scan_v2.cuh): -1 =
// auto, 0 = off, n > 0 = n (clamped to the checkpoint chunks); returns the
// setting before. Starts from EL_MAMBA_SCAN_SEGMENTS; a test hook (tests
// declare it themselves: this header is CUDA-only). Not thread-safe.
int scan_set_segments(int n);
// The segments of the last forward without a state (backward = false) or
// backward (true): what the heuristic picked (benchmarks).
int scan_last_segments(bool backward);
// The kernels, called by cuda_mamba_scan.cu's mamba_scan_forward /
// mamba_scan_backward after their checks (outputs of the backward zeroed;
// u non-empty), with their arguments.
void scan_v2_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                     const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                     const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints);
void scan_v2_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A_log,
                      const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                      const Tensor& delta_bias, const Tensor& checkpoints, Tensor& du,
                      Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC, Tensor& dD,
                      Tensor& dz, Tensor& ddelta_bias);

}  // namespace el::cuda::mamba
