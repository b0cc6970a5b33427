// cuda_wgmma.cuh — Hopper (sm_90a) building blocks of the wgmma kernels
// (cuda_moe_gemm_wgmma.cu): TMA tile loads completing on an mbarrier, named
// barriers, the wgmma fence / commit / wait and the m64nNk16 instructions
// (N 128 or 256, or 128 into the left half of a 256-wide accumulator; f32
// accumulators in registers, A and B from shared-memory descriptors, K- or
// MN-major by the transpose immediates), the 128-byte swizzle descriptor,
// and a two-value pack. Device code for the sm_90a pass
// only: the declarations exist in that pass alone (__CUDA_ARCH_FEAT_SM90_ALL).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/cuda_bulk.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace el::cuda::wg {

// ---- PTX wrappers ----------------------------------------------------------------------
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1,
                                            uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];" ::"r"(smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads across the asynchronous
// wgmma (the asm statements above do not name the registers).
template <int N>
__device__ __forceinline__ void fence_acc(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading
// byte offset (MN-major: the distance between 64-element atoms along M/N;
// K-major: unused, 16), stride byte offset (8-row groups: 1024), all >> 4.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo) {
  return uint64_t((addr >> 4) & 0x3FFF) | uint64_t((lbo >> 4) & 0x3FFF) << 16 |
         uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

#define EL_D8(i)                                                                             \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define EL_D64(i)                                                                     \
  EL_D8(i), EL_D8(i + 8), EL_D8(i + 16), EL_D8(i + 24), EL_D8(i + 32), EL_D8(i + 40), \
      EL_D8(i + 48), EL_D8(i + 56)
#define EL_REGS_0_63                                                                \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "          \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define EL_REGS_64_127                                                                    \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "      \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "      \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, " \
  "%111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, "   \
  "%125, %126, %127"
// d (+)= A B for one k16 step; scale_d 0 overwrites d.
#define EL_WGMMA_N256(TY)                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY                     \
               " {" EL_REGS_0_63 ", " EL_REGS_64_127 "}, %128, %129, p, 1, 1, %131, %132;\n}" \
               : EL_D64(0), EL_D64(64)                                                      \
               : "l"(da), "l"(db), "r"(scale_d), "n"(TA), "n"(TB))
#define EL_WGMMA_N128(TY)                                                 \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"               \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY   \
               " {" EL_REGS_0_63 "}, %64, %65, p, 1, 1, %67, %68;\n}"     \
               : EL_D64(0)                                                \
               : "l"(da), "l"(db), "r"(scale_d), "n"(TA), "n"(TB))

template <class T, int BN, int TA, int TB>
__device__ __forceinline__ void wgmma(float (&d)[BN / 2], uint64_t da, uint64_t db, int scale_d) {
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (BN == 256) {
    if constexpr (kBf16) {
      EL_WGMMA_N256("bf16");
    } else {
      EL_WGMMA_N256("f16");
    }
  } else {
    if constexpr (kBf16) {
      EL_WGMMA_N128("bf16");
    } else {
      EL_WGMMA_N128("f16");
    }
  }
}

// The left 128 columns of a 256-wide accumulator (d[0..63]: the n128
// fragment is the n256 one's first half), for a tile whose right half lies
// past the matrix: half the tensor-core work of the full-width instruction.
template <class T, int TA, int TB, int N>
__device__ __forceinline__ void wgmma_left128(float (&d)[N], uint64_t da, uint64_t db,
                                              int scale_d) {
  static_assert(N >= 64, "the n128 fragment is 64 registers");
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    EL_WGMMA_N128("bf16");
  } else {
    EL_WGMMA_N128("f16");
  }
}

template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, 4);
  }
  return r;
}

}  // namespace el::cuda::wg
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
