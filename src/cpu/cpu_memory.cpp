// cpu_memory.cpp — fill and dtype-converting copy for every DType.
//
// Conversion rules (documented here because tests and checkpoint code rely on
// them):
//   * float -> float goes through f32 (bf16/f16 round to nearest even);
//   * int -> int goes through int64 and saturates at the target's range;
//   * float -> int rounds toward zero and saturates; NaN becomes 0;
//   * int -> float rounds to the nearest representable value.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

template <class I>
I saturate_int(int64_t v) {
  return static_cast<I>(
      std::clamp<int64_t>(v, std::numeric_limits<I>::min(), std::numeric_limits<I>::max()));
}

template <class I>
I float_to_int(float f) {
  if (std::isnan(f)) return 0;
  const double t = std::trunc(static_cast<double>(f));
  if (t <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (t >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(t);
}

// Per-dtype storage type and conversions; kInt selects the int64 path.
template <DType D>
struct Elem;
template <>
struct Elem<DType::f32> {
  using T = float;
  static constexpr bool kInt = false;
  static float to_f(T x) { return x; }
  static T from_f(float f) { return f; }
  static int64_t to_i(T) { return 0; }
  static T from_i(int64_t) { return 0; }
};
template <>
struct Elem<DType::bf16> {
  using T = uint16_t;
  static constexpr bool kInt = false;
  static float to_f(T x) { return bf16_to_f32(x); }
  static T from_f(float f) { return f32_to_bf16(f); }
  static int64_t to_i(T) { return 0; }
  static T from_i(int64_t) { return 0; }
};
template <>
struct Elem<DType::f16> {
  using T = uint16_t;
  static constexpr bool kInt = false;
  static float to_f(T x) { return f16_to_f32(x); }
  static T from_f(float f) { return f32_to_f16(f); }
  static int64_t to_i(T) { return 0; }
  static T from_i(int64_t) { return 0; }
};
template <class I>
struct IntElem {
  using T = I;
  static constexpr bool kInt = true;
  static float to_f(T x) { return static_cast<float>(x); }
  static T from_f(float f) { return float_to_int<I>(f); }
  static int64_t to_i(T x) { return static_cast<int64_t>(x); }
  static T from_i(int64_t v) { return saturate_int<I>(v); }
};
template <>
struct Elem<DType::i32> : IntElem<int32_t> {};
template <>
struct Elem<DType::i64> : IntElem<int64_t> {};
template <>
struct Elem<DType::u8> : IntElem<uint8_t> {};

template <DType S, DType D>
void convert(const void* src, void* dst, int64_t n) {
  using ST = typename Elem<S>::T;
  using DT = typename Elem<D>::T;
  const ST* s = static_cast<const ST*>(src);
  DT* d = static_cast<DT*>(dst);
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork * 4)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (Elem<S>::kInt && Elem<D>::kInt) {
      d[i] = Elem<D>::from_i(Elem<S>::to_i(s[i]));
    } else {
      d[i] = Elem<D>::from_f(Elem<S>::to_f(s[i]));
    }
  }
}

template <DType S>
void convert_to(DType d, const void* src, void* dst, int64_t n) {
  switch (d) {
    case DType::f32:
      return convert<S, DType::f32>(src, dst, n);
    case DType::bf16:
      return convert<S, DType::bf16>(src, dst, n);
    case DType::f16:
      return convert<S, DType::f16>(src, dst, n);
    case DType::i32:
      return convert<S, DType::i32>(src, dst, n);
    case DType::i64:
      return convert<S, DType::i64>(src, dst, n);
    case DType::u8:
      return convert<S, DType::u8>(src, dst, n);
  }
  EL_ENSURE(false, "cpu copy: unknown destination dtype {}", static_cast<int>(d));
}

template <DType D>
void fill_as(Tensor& dst, float value) {
  using T = typename Elem<D>::T;
  const T x = Elem<D>::from_f(value);
  T* p = dst.data<T>();
  const int64_t n = dst.numel();
  if constexpr (sizeof(T) == 1) {
    std::memset(p, static_cast<int>(x), static_cast<size_t>(n));
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork * 8)
    for (int64_t i = 0; i < n; ++i) p[i] = x;
  }
}

void expect_host_contiguous(const Tensor& t, const char* what) {
  EL_ENSURE(t.defined() && t.device().is_cpu() && t.is_contiguous(),
            "cpu {}: expected a contiguous CPU tensor", what);
}

}  // namespace

void fill(Tensor& dst, float value) {
  expect_host_contiguous(dst, "fill");
  switch (dst.dtype()) {
    case DType::f32:
      return fill_as<DType::f32>(dst, value);
    case DType::bf16:
      return fill_as<DType::bf16>(dst, value);
    case DType::f16:
      return fill_as<DType::f16>(dst, value);
    case DType::i32:
      return fill_as<DType::i32>(dst, value);
    case DType::i64:
      return fill_as<DType::i64>(dst, value);
    case DType::u8:
      return fill_as<DType::u8>(dst, value);
  }
}

void copy(const Tensor& src, Tensor& dst) {
  expect_host_contiguous(src, "copy (src)");
  expect_host_contiguous(dst, "copy (dst)");
  EL_ENSURE(src.numel() == dst.numel(), "cpu copy: {} elements {} into {} elements {}", src.numel(),
            shape_str(src.shape()), dst.numel(), shape_str(dst.shape()));
  const int64_t n = src.numel();
  if (n == 0 || src.raw() == dst.raw()) {
    if (n == 0 || src.dtype() == dst.dtype()) return;
  }
  if (src.dtype() == dst.dtype()) {
    std::memcpy(dst.raw(), src.raw(), static_cast<size_t>(n) * dtype_size(src.dtype()));
    return;
  }
  switch (src.dtype()) {
    case DType::f32:
      return convert_to<DType::f32>(dst.dtype(), src.raw(), dst.raw(), n);
    case DType::bf16:
      return convert_to<DType::bf16>(dst.dtype(), src.raw(), dst.raw(), n);
    case DType::f16:
      return convert_to<DType::f16>(dst.dtype(), src.raw(), dst.raw(), n);
    case DType::i32:
      return convert_to<DType::i32>(dst.dtype(), src.raw(), dst.raw(), n);
    case DType::i64:
      return convert_to<DType::i64>(dst.dtype(), src.raw(), dst.raw(), n);
    case DType::u8:
      return convert_to<DType::u8>(dst.dtype(), src.raw(), dst.raw(), n);
  }
}

}  // namespace el::cpu
