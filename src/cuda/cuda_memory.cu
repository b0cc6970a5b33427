// cuda_memory.cu — fill and dtype-converting copy (host<->device, device<->device).
//
// Conversion rules are the CPU backend's (cpu/cpu_memory.cpp), so a tensor
// converted on either device holds the same bits:
//   * float -> float goes through f32 (bf16/f16 round to nearest even);
//   * int -> int goes through int64 and saturates at the target's range;
//   * float -> int rounds toward zero and saturates; NaN becomes 0;
//   * int -> float rounds to the nearest f32, then to the target.
// Host<->device copies move the bytes in the source dtype (host -> device) or
// the destination dtype (device -> host) and convert on the GPU. A copy to the
// host waits for the stream (the caller reads the host buffer next) and then
// reports any deferred kernel error (cuda_context.h).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

// Per-storage-type conversions (device side), mirroring cpu_memory.cpp's Elem.
template <class T>
struct E;
template <>
struct E<float> {
  static constexpr bool kInt = false;
  __device__ static float to_f(float x) { return x; }
  __device__ static float from_f(float f) { return f; }
};
template <>
struct E<__nv_bfloat16> {
  static constexpr bool kInt = false;
  __device__ static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_f(float f) { return __float2bfloat16_rn(f); }
};
template <>
struct E<__half> {
  static constexpr bool kInt = false;
  __device__ static float to_f(__half x) { return __half2float(x); }
  __device__ static __half from_f(float f) { return __float2half_rn(f); }
};
template <class I>
struct EInt {
  static constexpr bool kInt = true;
  __device__ static float to_f(I x) { return static_cast<float>(x); }
  __device__ static I from_f(float f) {
    if (isnan(f)) return 0;
    const double t = trunc(static_cast<double>(f));
    if (t <= static_cast<double>(std::numeric_limits<I>::min()))
      return std::numeric_limits<I>::min();
    if (t >= static_cast<double>(std::numeric_limits<I>::max()))
      return std::numeric_limits<I>::max();
    return static_cast<I>(t);
  }
  __device__ static int64_t to_i(I x) { return static_cast<int64_t>(x); }
  __device__ static I from_i(int64_t v) {
    if (v < static_cast<int64_t>(std::numeric_limits<I>::min()))
      return std::numeric_limits<I>::min();
    if (v > static_cast<int64_t>(std::numeric_limits<I>::max()))
      return std::numeric_limits<I>::max();
    return static_cast<I>(v);
  }
};
template <>
struct E<int32_t> : EInt<int32_t> {};
template <>
struct E<int64_t> : EInt<int64_t> {};
template <>
struct E<uint8_t> : EInt<uint8_t> {};

template <class S, class D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    if constexpr (E<S>::kInt && E<D>::kInt) {
      dst[i] = E<D>::from_i(E<S>::to_i(src[i]));
    } else {
      dst[i] = E<D>::from_f(E<S>::to_f(src[i]));
    }
  }
}

// Writes an element bit pattern of 2, 4 or 8 bytes.
template <class W>
__global__ void fill_kernel(W* __restrict__ p, W value, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) p[i] = value;
}

#define EL_DISPATCH_ALL(dtype, T, ...) \
  switch (dtype) {                     \
    case DType::f32: {                 \
      using T = float;                 \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case DType::bf16: {                \
      using T = __nv_bfloat16;         \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case DType::f16: {                 \
      using T = __half;                \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case DType::i32: {                 \
      using T = int32_t;               \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case DType::i64: {                 \
      using T = int64_t;               \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case DType::u8: {                  \
      using T = uint8_t;               \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
  }

// dst (device, dtype dt) = convert(src (device, dtype st)), n elements.
void convert_on_device(const void* src, DType st, void* dst, DType dt, int64_t n) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int grid = grid_for(n, kThreads);
  cudaStream_t s = ctx().stream;
  EL_DISPATCH_ALL(st, S, {
    EL_DISPATCH_ALL(dt, D, {
      convert_kernel<S, D>
          <<<grid, kThreads, 0, s>>>(static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
  EL_CUDA_CHECK_LAUNCH("convert_kernel");
}

// Host-side bit pattern of `value` as dtype t (the CPU backend's fill rules).
template <class I>
I host_float_to_int(float f) {
  if (std::isnan(f)) return 0;
  const double t = std::trunc(static_cast<double>(f));
  if (t <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (t >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(t);
}

void expect_contiguous_any(const Tensor& t, const char* what) {
  EL_CUDA_ENSURE(t.defined() && t.is_contiguous(), "cuda {}: expected a contiguous tensor", what);
}

}  // namespace

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attr{};
  return cudaFuncGetAttributes(&attr, fill_kernel<uint32_t>);
}

void fill(Tensor& dst, float value) {
  expect_cuda(dst, "fill");
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = ctx().stream;
  const bool zero_bits = value == 0.0f && !std::signbit(value);
  if (zero_bits || dst.dtype() == DType::u8) {
    const int byte = zero_bits ? 0 : host_float_to_int<uint8_t>(value);
    EL_CUDA_CHECK(cudaMemsetAsync(dst.raw(), byte, dst.nbytes(), s));
    return;
  }
  constexpr int kThreads = 256;
  const int grid = grid_for(n, kThreads);
  switch (dst.dtype()) {
    case DType::f32: {
      uint32_t bits;
      std::memcpy(&bits, &value, 4);
      fill_kernel<uint32_t><<<grid, kThreads, 0, s>>>(dst.data<uint32_t>(), bits, n);
      break;
    }
    case DType::bf16:
      fill_kernel<uint16_t><<<grid, kThreads, 0, s>>>(dst.data<uint16_t>(), f32_to_bf16(value), n);
      break;
    case DType::f16:
      fill_kernel<uint16_t><<<grid, kThreads, 0, s>>>(dst.data<uint16_t>(), f32_to_f16(value), n);
      break;
    case DType::i32:
      fill_kernel<uint32_t><<<grid, kThreads, 0, s>>>(
          dst.data<uint32_t>(), static_cast<uint32_t>(host_float_to_int<int32_t>(value)), n);
      break;
    case DType::i64:
      fill_kernel<uint64_t><<<grid, kThreads, 0, s>>>(
          dst.data<uint64_t>(), static_cast<uint64_t>(host_float_to_int<int64_t>(value)), n);
      break;
    case DType::u8:
      break;  // memset above
  }
  EL_CUDA_CHECK_LAUNCH("fill_kernel");
}

void copy(const Tensor& src, Tensor& dst) {
  expect_contiguous_any(src, "copy (src)");
  expect_contiguous_any(dst, "copy (dst)");
  EL_CUDA_ENSURE(src.numel() == dst.numel(), "cuda copy: {} elements {} into {} elements {}",
                 src.numel(), shape_str(src.shape()), dst.numel(), shape_str(dst.shape()));
  EL_CUDA_ENSURE(src.device().is_cuda() || dst.device().is_cuda(),
                 "cuda copy: neither tensor is on a GPU ({} -> {})", src.device().str(),
                 dst.device().str());
  if (src.device().is_cuda()) expect_cuda(src, "copy (src)");
  if (dst.device().is_cuda()) expect_cuda(dst, "copy (dst)");
  const int64_t n = src.numel();
  if (n == 0) return;
  Context& c = ctx();
  const bool same = src.dtype() == dst.dtype();

  if (src.device().is_cuda() && dst.device().is_cuda()) {  // device -> device
    if (same) {
      if (src.raw() != dst.raw()) {
        EL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice,
                                      c.stream));
      }
    } else {
      convert_on_device(src.raw(), src.dtype(), dst.raw(), dst.dtype(), n);
    }
    return;
  }
  if (dst.device().is_cuda()) {  // host -> device
    // cudaMemcpyAsync from pageable memory returns once the host bytes are
    // staged, so the caller may free or reuse src right away.
    if (same) {
      EL_CUDA_CHECK(
          cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, c.stream));
      return;
    }
    Tensor tmp = Tensor::empty(src.shape(), src.dtype(), dst.device());
    EL_CUDA_CHECK(
        cudaMemcpyAsync(tmp.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, c.stream));
    convert_on_device(tmp.raw(), tmp.dtype(), dst.raw(), dst.dtype(), n);
    return;
  }
  // device -> host
  if (same) {
    EL_CUDA_CHECK(
        cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, c.stream));
  } else {
    Tensor tmp = Tensor::empty(src.shape(), dst.dtype(), src.device());
    convert_on_device(src.raw(), src.dtype(), tmp.raw(), tmp.dtype(), n);
    // tmp may go back to the cache at once: later users are queued after this copy.
    EL_CUDA_CHECK(
        cudaMemcpyAsync(dst.raw(), tmp.raw(), tmp.nbytes(), cudaMemcpyDeviceToHost, c.stream));
  }
  check_device_errors();  // waits for the stream
}

}  // namespace el::cuda
