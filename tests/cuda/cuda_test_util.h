// cuda_test_util.h — shared helpers of the CUDA tests (tests/cuda/*_test.cpp).
//
// Every GPU test starts with EL_REQUIRE_GPU(), which registers the CUDA
// backend once and GTEST_SKIP()s with the reason when it cannot (no GPU, old
// driver), so test_cuda runs cleanly on a machine without a GPU.
// The kernels are checked against the CPU backend (the reference, f32) on
// random inputs: inputs are drawn in f32, rounded to the storage dtype under
// test, and the CPU gets the rounded values in f32, so the only differences
// are the GPU's summation order and its output rounding. Comparisons use
// tolerance_for(output dtype) (tests/common/ops_tolerance.h) with the
// absolute part scaled by the reference's RMS, because reductions (GEMM,
// norms) make absolute error grow with the magnitude of the terms summed.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "common/ops_tolerance.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/cuda_backend.h"
#include "ops/backend.h"

namespace el::test {

inline const Status& gpu_status() {
  static const Status s = el::cuda::register_backend(0);
  return s;
}

#define EL_REQUIRE_GPU()                                                               \
  do {                                                                                 \
    if (!::el::test::gpu_status().ok())                                                \
      GTEST_SKIP() << "no usable GPU: " << ::el::test::gpu_status().error().message(); \
  } while (0)

inline Device gpu() { return Device::cuda(0); }
inline Backend& gpu_backend() { return backend_for(gpu()); }
inline Backend& cpu_backend() { return backend_for(Device::cpu()); }

// f32 host values rounded through `dtype` (identity for f32).
inline Tensor round_to(const Tensor& host_f32, DType dtype) {
  if (dtype == DType::f32) return host_f32;
  Tensor low = Tensor::empty(host_f32.shape(), dtype);
  low.copy_from(host_f32);
  Tensor back = Tensor::empty(host_f32.shape(), DType::f32);
  back.copy_from(low);
  return back;
}

// Normal(0, scale^2) values, already representable in `dtype`, as an f32 CPU tensor.
inline Tensor random_host(const Shape& shape, Rng& rng, DType dtype, float scale = 1.f) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = rng.normal() * scale;
  return round_to(Tensor::from_floats(v, shape), dtype);
}

inline Tensor random_ids(const Shape& shape, Rng& rng, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(static_cast<size_t>(shape_numel(shape)));
  for (int32_t& x : v) x = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(hi - lo)));
  return Tensor::from_ints(v, shape);
}

// A GPU tensor of `dtype` holding the host values.
inline Tensor to_gpu(const Tensor& host, DType dtype) {
  Tensor t = Tensor::empty(host.shape(), dtype, gpu());
  t.copy_from(host);
  return t;
}
inline Tensor to_gpu(const Tensor& host) { return to_gpu(host, host.dtype()); }

// A GPU tensor of `dtype` filled with NaN, so an unwritten element fails the check.
inline Tensor poisoned(const Shape& shape, DType dtype) {
  return Tensor::full(shape, NAN, dtype, gpu());
}

// |got - ref| <= tol.abs * max(1, rms(ref)) + tol.rel * |ref| for every element;
// `factor` widens both parts for long reductions.
inline ::testing::AssertionResult close_to(const Tensor& got, const Tensor& ref, Tolerance tol,
                                           const std::string& what, double factor = 1.0) {
  const std::vector<float> a = got.to_floats();
  const std::vector<float> e = ref.to_floats();
  if (a.size() != e.size()) {
    return ::testing::AssertionFailure()
           << what << ": " << a.size() << " values, expected " << e.size();
  }
  double ss = 0.0;
  for (float x : e) ss += std::isfinite(x) ? double(x) * x : 0.0;
  const double rms = e.empty() ? 0.0 : std::sqrt(ss / double(e.size()));
  const double abs_tol = tol.abs * factor * std::max(1.0, rms);
  const double rel_tol = tol.rel * factor;
  size_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = e[i];
    if (std::isinf(x) && std::isinf(y) && (x > 0) == (y > 0)) continue;
    const double err = std::abs(x - y);
    if (!(err <= abs_tol + rel_tol * std::abs(y))) {
      if (bad < 5) first << "\n  [" << i << "] got " << x << " expected " << y;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << a.size() << " values out of tolerance (abs " << abs_tol
         << ", rel " << rel_tol << ")" << first.str();
}

inline Tolerance tol(DType out) { return tolerance_for(out); }

inline std::string dtype_list_name(DType t) { return dtype_name(t); }

}  // namespace el::test
