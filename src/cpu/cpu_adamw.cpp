// cpu_adamw.cpp — AdamW with decoupled weight decay, one parameter tensor.
//
//   g = grad * grad_scale
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)
// The parameter may be stored as f32, bf16 or f16 (updated in f32, rounded
// back); grad may be any float dtype; m and v are f32.
//
// adamw_update_master is the mixed-precision form: the update runs on an f32
// master copy and the bf16/f16 parameter is only ever the rounded master.
// Rounding the parameter itself every step (adamw_update on a bf16 tensor)
// loses every update smaller than half a bf16 ulp (2^-9 relative), which at
// typical learning rates is most of them; the master keeps them.
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

struct AdamConsts {
  float b1, b2, bc1, bc2, lr, eps, wd, gs;
};

AdamConsts adam_consts(const AdamWStep& st, const char* what) {
  EL_ENSURE(st.step >= 1, "cpu {}: step must be >= 1, got {}", what, st.step);
  const float b1 = st.beta1, b2 = st.beta2;
  const float bc1 = 1.f - static_cast<float>(std::pow(static_cast<double>(b1), st.step));
  const float bc2 = 1.f - static_cast<float>(std::pow(static_cast<double>(b2), st.step));
  return {b1, b2, bc1, bc2, st.lr, st.eps, st.weight_decay, st.grad_scale};
}

// One element: updates m, v and returns the new parameter value (f32).
inline float adam_element(const AdamConsts& c, float p, float g_raw, float& m, float& v) {
  const float g = g_raw * c.gs;
  const float mi = c.b1 * m + (1.f - c.b1) * g;
  const float vi = c.b2 * v + (1.f - c.b2) * g * g;
  m = mi;
  v = vi;
  const float mhat = mi / c.bc1, vhat = vi / c.bc2;
  return p - c.lr * (mhat / (std::sqrt(vhat) + c.eps) + c.wd * p);
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
  const AdamConsts c = adam_consts(st, "adamw_update");
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    store(pp, tp, i, adam_element(c, load(pp, tp, i), load(pg, tg, i), pm[i], pv[i]));
  }
}

void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m, Tensor& v,
                         const AdamWStep& st) {
  EL_ENSURE(dtype_is_float(param.dtype()) && dtype_is_float(grad.dtype()),
            "cpu adamw_update_master: param {} and grad {} must be float tensors",
            dtype_name(param.dtype()), dtype_name(grad.dtype()));
  EL_ENSURE(param.device().is_cpu() && grad.device().is_cpu() && param.is_contiguous() &&
                grad.is_contiguous(),
            "cpu adamw_update_master: param and grad must be contiguous CPU tensors");
  expect_f32(master, "adamw_update_master (master)");
  expect_f32(m, "adamw_update_master (m)");
  expect_f32(v, "adamw_update_master (v)");
  const int64_t n = param.numel();
  EL_ENSURE(grad.numel() == n && master.numel() == n && m.numel() == n && v.numel() == n,
            "cpu adamw_update_master: param {} grad {} master {} m {} v {} differ in size '{}'",
            shape_str(param.shape()), shape_str(grad.shape()), shape_str(master.shape()),
            shape_str(m.shape()), shape_str(v.shape()), param.name());
  const AdamConsts c = adam_consts(st, "adamw_update_master");
  float* pmaster = master.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  void* pp = param.raw();
  const void* pg = grad.raw();
  const DType tp = param.dtype(), tg = grad.dtype();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float w = adam_element(c, pmaster[i], load(pg, tg, i), pm[i], pv[i]);
    pmaster[i] = w;
    store(pp, tp, i, w);
  }
}

}  // namespace el::cpu
