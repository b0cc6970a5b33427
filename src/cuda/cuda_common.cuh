// cuda_common.cuh — device-side helpers shared by the kernels in src/cuda/*.cu.
//
// * element conversions: to_f<T>/from_f<T> for the storage types (float,
//   __nv_bfloat16, __half) and ld/st for a dtype known only at run time (a
//   uniform branch, cheap next to the memory access it guards);
// * Vec<T>: 16 bytes of T, the unit of the vectorised loads;
// * warp/block reductions (sum, max) with a fixed order, so a result does not
//   depend on timing;
// * EL_DISPATCH_FLOAT: a switch over f32/bf16/f16 that binds a type name;
// * grid_for(): a grid size for grid-stride loops;
// * report_device_error(): the sticky error record kernels use for invalid
//   indices (cuda_context.h explains why errors are deferred).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"

namespace el::cuda {

// ---- conversions ----------------------------------------------------------------
template <class T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half x) {
  return __half2float(x);
}

template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}

// Element i of a float tensor whose dtype is a run-time value.
__device__ __forceinline__ float ld(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::bf16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::f16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void st(void* p, DType t, int64_t i, float x) {
  switch (t) {
    case DType::bf16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x);
      return;
    case DType::f16:
      static_cast<__half*>(p)[i] = __float2half_rn(x);
      return;
    default:
      static_cast<float*>(p)[i] = x;
      return;
  }
}

// ---- launch set-up --------------------------------------------------------------
// Dynamic shared memory above the default 48 KiB needs the kernel's opt-in.
template <class K>
void allow_dynamic_smem(K* kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    EL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
  }
}

// ---- 16-byte vectors -------------------------------------------------------------
template <class T>
struct alignas(16) Vec {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

__host__ __device__ inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// ---- reductions -------------------------------------------------------------------
struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Over the 32 lanes of a warp (butterfly: every lane gets the result).
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T x, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Over the block, returned to every thread. `scratch` holds 32 values;
// blockDim.x must be a multiple of 32. Ends with a barrier, so scratch may be
// reused by the next call.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T x, T* scratch, T identity, Op op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  x = warp_reduce(x, op);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  T t = lane < nwarps ? scratch[lane] : identity;
  t = warp_reduce(t, op);
  __syncthreads();
  return t;
}

__device__ __forceinline__ float warp_sum(float x) { return warp_reduce(x, SumOp{}); }
__device__ __forceinline__ float warp_max(float x) { return warp_reduce(x, MaxOp{}); }
__device__ __forceinline__ double warp_sum_d(double x) { return warp_reduce(x, SumOp{}); }
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  return block_reduce(x, scratch, 0.f, SumOp{});
}
__device__ __forceinline__ float block_max(float x, float* scratch) {
  return block_reduce(x, scratch, -INFINITY, MaxOp{});
}
__device__ __forceinline__ double block_sum_d(double x, double* scratch) {
  return block_reduce(x, scratch, 0.0, SumOp{});
}

// ---- launch helpers -------------------------------------------------------------
// Blocks for a grid-stride loop over n items with `threads` per block: enough
// to fill the GPU a few times over, never more than the items need.
// A block of `threads` threads for kernels that walk rows of `per_row` items:
// x covers a row (the next power of two of per_row, at most `threads`), y the
// rows taken at once, so a thread finds its row and column without dividing.
// Its grid: grid_for(row_groups * threads, threads), grid_for counting threads.
inline dim3 row_block(int64_t per_row, int threads) {
  int x = 1;
  while (x < per_row && x < threads) x *= 2;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(threads / x));
}

inline int grid_for(int64_t n, int threads) {
  const int64_t need = (n + threads - 1) / threads;
  const int64_t cap = int64_t{ctx().sm_count} * (2048 / threads) * 2;
  const int64_t g = need < cap ? need : cap;
  return static_cast<int>(g < 1 ? 1 : g);
}

// Records the first invalid index a kernel meets (later ones are dropped);
// the host turns it into an el::Exception at the next check_device_errors().
__device__ __forceinline__ void report_device_error(DeviceErrorRecord* rec, int code, long long a,
                                                    long long b, long long c) {
  if (atomicCAS(&rec->code, 0, -1) == 0) {  // claim the record, then fill it
    rec->a = a;
    rec->b = b;
    rec->c = c;
    __threadfence();
    atomicExch(&rec->code, code);
  }
}

// The two 16-bit values of a word as f32, low half first (bf16 or f16
// weights unpacked in the GEMV inner loops).
template <class T>
__device__ __forceinline__ float2 unpack2(uint32_t v);
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t v) {
  return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xFFFF0000u));
}
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t v) {
  __half2 h;
  memcpy(&h, &v, sizeof(h));
  return __half22float2(h);
}

// N consecutive elements of T moved as one aligned access.
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// ---- cp.async (sm_80+), shared by the attention and quantized-matmul kernels ----------
// 16 bytes global -> shared; with pred false the destination is zero-filled
// and nothing is read (src must still be a valid address).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool pred) {
  const int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n)
               : "memory");
}
// 4 bytes, the same contract (through L1: small tables staged once).
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool pred) {
  const int n = pred ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(n)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- programmatic dependent launch (sm_90+) ----------------------------------------
// A kernel launched by launch_kernel() with ctx().pdl set may be scheduled
// while the kernel before it in the stream is still running. The contract
// every such kernel keeps: pdl_wait() (all prerequisite grids complete, their
// writes visible) before it reads anything an earlier kernel wrote and before
// it writes global memory, in every thread that does either; pdl_trigger()
// right after the wait lets the next kernel launch. Triggering only after the
// wait keeps the look-ahead at one kernel, and since every kernel waits, the
// completion of kernel n implies that of all before it. Without the launch
// attribute (EL_PDL=0, older GPUs) both are no-ops.
// What may go before the wait: reads of memory no kernel in flight writes,
// and L2 prefetches of any memory (prefetch_l2: L2 is the point of coherence,
// so a prefetched line never hides a later write; the loads after the wait
// just find the bytes close).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Asynchronous prefetch of [p, p + bytes) into L2; p 16-byte aligned, bytes a
// multiple of 16 (the TMA bulk prefetch).
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// The 16-byte aligned part of [p, p + bytes) into L2 (nothing when it is empty).
__device__ __forceinline__ void prefetch_l2_span(const void* p, int64_t bytes) {
  const auto lo = (reinterpret_cast<uintptr_t>(p) + 15) & ~uintptr_t{15};
  const auto hi = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~uintptr_t{15};
  for (uintptr_t a = lo; a < hi; a += uintptr_t{1} << 30) {  // the size operand is 32-bit
    const uintptr_t n = hi - a < (uintptr_t{1} << 30) ? hi - a : (uintptr_t{1} << 30);
    prefetch_l2(reinterpret_cast<const void*>(a), static_cast<uint32_t>(n));
  }
}

// kernel<<<grid, block, smem, stream>>>(args...) with the programmatic
// stream serialization attribute when ctx().pdl is set; the kernel must keep
// the pdl_wait() contract above.
template <class... KernelArgs, class... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = ctx().pdl ? 1 : 0;
  // Errors surface through EL_CUDA_CHECK_LAUNCH (cudaGetLastError) as with <<<>>>.
  (void)cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace el::cuda

// EL_DISPATCH_FLOAT(dtype, T, body): runs body with T bound to the storage type
// of dtype (float, __nv_bfloat16, __half); any other dtype is a bug (throws).
#define EL_DISPATCH_FLOAT(dtype, T, ...)                                                      \
  do {                                                                                        \
    switch (dtype) {                                                                          \
      case ::el::DType::f32: {                                                                \
        using T = float;                                                                      \
        __VA_ARGS__;                                                                          \
        break;                                                                                \
      }                                                                                       \
      case ::el::DType::bf16: {                                                               \
        using T = __nv_bfloat16;                                                              \
        __VA_ARGS__;                                                                          \
        break;                                                                                \
      }                                                                                       \
      case ::el::DType::f16: {                                                                \
        using T = __half;                                                                     \
        __VA_ARGS__;                                                                          \
        break;                                                                                \
      }                                                                                       \
      default:                                                                                \
        EL_CUDA_ENSURE(false, "cuda: dtype {} is not a float type", ::el::dtype_name(dtype)); \
    }                                                                                         \
  } while (0)
