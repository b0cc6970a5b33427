// cuda_moe_gemm_wgmma.h — internal to src/cuda: the Hopper (sm_90a) path of
// the MoE grouped GEMMs (cuda_moe_gemm_wgmma.cu), called by cuda_moe_gemm.cu,
// which keeps the mma.sync and SIMT kernels for everything this path declines.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace el::cuda {

// The three problems of cuda_moe_gemm.cu (same meaning, same operands).
enum class MoeGemm : int {
  fwd = 0,  // c[r] = a[r] b_e^T     a [m, k] sorted rows, b [E, n, k], c [m, n]
  dx = 1,   // c[r] = a[r] b_e       a [m, k] sorted rows, b [E, k, n], c [m, n]
  dw = 2,   // c_e = a_e^T b_e       a [m, k] (dy), b [m, n] (x), c [E, k, n]; k = O here
};

struct MoeGemmOperands {
  MoeGemm mode;
  DType dtype;  // of a, b and c
  const void* a;
  const void* b;
  void* c;
  const int32_t* offsets;  // [experts + 1] on the device
  int experts;
  int64_t m, n, k;
  bool accumulate = false;  // dw only: c_e += a_e^T b_e (an expert without rows: c_e unchanged)
};

// Whether the current device runs the wgmma kernels: compute capability 9.0
// and sm_90a machine code in this binary (a build for another architecture
// compiles the kernels empty). Cached after the first call; no device sync.
bool moe_wgmma_supported();

// Queues the problem on the wgmma kernel and returns true, or returns false
// with nothing queued when this path does not take it: dtype not bf16 / f16,
// an empty or >= 2^31 dimension, n or k not a multiple of 8, a pointer not
// 16-byte aligned, more than 1024 experts, or no sm_90a device.
// tile_n: 0 picks the 128- or 256-column tile by the persistent grid's
// rounds; 128 or 256 forces one (EL_MOE_GEMM=wgmma128 / wgmma256).
bool moe_gemm_wgmma(const MoeGemmOperands& op, int tile_n);

}  // namespace el::cuda
