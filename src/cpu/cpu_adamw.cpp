// cpu_adamw.cpp — AdamW with decoupled weight decay, one parameter tensor.
//
//   g = grad * grad_scale
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)
// The parameter may be stored as f32, bf16 or f16 (updated in f32, rounded
// back); grad may be any float dtype; m and v are f32.
#include <cmath>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

inline float load(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::bf16:
      return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::f16:
      return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

inline void store(void* p, DType t, int64_t i, float x) {
  switch (t) {
    case DType::bf16:
      static_cast<uint16_t*>(p)[i] = f32_to_bf16(x);
      return;
    case DType::f16:
      static_cast<uint16_t*>(p)[i] = f32_to_f16(x);
      return;
    default:
      static_cast<float*>(p)[i] = x;
      return;
  }
}

}  // namespace

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& st) {
  EL_ENSURE(dtype_is_float(param.dtype()) && dtype_is_float(grad.dtype()),
            "cpu adamw_update: param {} and grad {} must be float tensors",
            dtype_name(param.dtype()), dtype_name(grad.dtype()));
  EL_ENSURE(param.device().is_cpu() && grad.device().is_cpu() && param.is_contiguous() &&
                grad.is_contiguous(),
            "cpu adamw_update: param and grad must be contiguous CPU tensors");
  expect_f32(m, "adamw_update (m)");
  expect_f32(v, "adamw_update (v)");
  const int64_t n = param.numel();
  EL_ENSURE(grad.numel() == n && m.numel() == n && v.numel() == n,
            "cpu adamw_update: param {} grad {} m {} v {} differ in size '{}'",
            shape_str(param.shape()), shape_str(grad.shape()), shape_str(m.shape()),
            shape_str(v.shape()), param.name());
  EL_ENSURE(st.step >= 1, "cpu adamw_update: step must be >= 1, got {}", st.step);
  const float b1 = st.beta1, b2 = st.beta2;
  const float bc1 = 1.f - static_cast<float>(std::pow(static_cast<double>(b1), st.step));
  const float bc2 = 1.f - static_cast<float>(std::pow(static_cast<double>(b2), st.step));
  const float lr = st.lr, eps = st.eps, wd = st.weight_decay, gs = st.grad_scale;
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const bool fast = param.dtype() == DType::f32 && grad.dtype() == DType::f32;
  if (fast) {
    float* pp = param.data<float>();
    const float* pg = grad.data<float>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
    for (int64_t i = 0; i < n; ++i) {
      const float g = pg[i] * gs;
      const float mi = b1 * pm[i] + (1.f - b1) * g;
      const float vi = b2 * pv[i] + (1.f - b2) * g * g;
      pm[i] = mi;
      pv[i] = vi;
      const float mhat = mi / bc1, vhat = vi / bc2;
      pp[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * pp[i]);
    }
    return;
  }
  void* pp = param.raw();
  const void* pg = grad.raw();
  const DType tp = param.dtype(), tg = grad.dtype();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float g = load(pg, tg, i) * gs;
    const float mi = b1 * pm[i] + (1.f - b1) * g;
    const float vi = b2 * pv[i] + (1.f - b2) * g * g;
    pm[i] = mi;
    pv[i] = vi;
    const float mhat = mi / bc1, vhat = vi / bc2;
    const float p = load(pp, tp, i);
    store(pp, tp, i, p - lr * (mhat / (std::sqrt(vhat) + eps) + wd * p));
  }
}

}  // namespace el::cpu
