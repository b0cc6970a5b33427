// cuda_gemv.h — the dense small-M GEMV behind cuda::gemm (decode steps):
// y[M, N] = alpha x[M, K] @ W[N, K]^T + beta y with bf16/f16 x and W, M <= 8.
//
// cuBLASLt reaches 24-82% of HBM bandwidth on the batch-1 decode shapes
// (2048 x 2048 .. 2048 x 32000); a warp per weight row with 16-byte loads,
// 8 of them in flight per lane, streams the weight near the bandwidth limit.
// cuda::gemm (cuda_gemm.cpp) routes a call here when dense_gemv_takes() says
// so; everything else stays on cuBLASLt.
#pragma once

#include "core/tensor.h"

namespace el::cuda {

// Largest M routed to the GEMV: EL_DENSE_GEMV_MAX_M (0 turns the GEMV off),
// default 8. Read once per process.
int dense_gemv_max_m();

// True when gemm(a, trans_a, b, trans_b, c, ...) is a linear the GEMV takes:
// !trans_a, trans_b, a [M, K] and b [N, K] of one dtype (bf16 or f16),
// c [M, N] of that dtype or f32, all contiguous, M <= dense_gemv_max_m(),
// K a multiple of 8, a and b 16-byte aligned, and sizes below 2^31.
bool dense_gemv_takes(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                      const Tensor& c);

// y[M, N] = alpha x[M, K] @ w[N, K]^T + beta y, f32 accumulation, one
// rounding to y's dtype; beta == 0 never reads y. Requires what
// dense_gemv_takes() checks except the M limit (any M works; it is just
// slower than cuBLASLt past ~8 tokens); throws on anything else.
void dense_gemv(const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta);

// The cuBLASLt GEMM without the GEMV dispatch (cuda_gemm.cpp), for the
// benchmark and tests that compare the two.
void gemm_cublaslt(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                   float alpha, float beta);

}  // namespace el::cuda
