// cpu_adapter.cpp — the arithmetic LoRA and DoRA add to a model: elementwise
// and row-broadcast products, the broadcast product's column-sum gradient,
// and dropout with the shared hash mask (ops/backend.h dropout_keep).
#include <cmath>

#include "cpu/cpu_kernels.h"
#include "ops/backend.h"

namespace el::cpu {
namespace {

// Rows and columns of x[..., C] against v[C].
void lastdim_dims(const Tensor& x, const Tensor& v, const char* what, int64_t& rows, int64_t& c) {
  EL_ENSURE(x.ndim() >= 1 && v.ndim() == 1 && v.dim(0) == x.dim(-1),
            "cpu {}: v {} does not match x {} (expected [{}])", what, shape_str(v.shape()),
            shape_str(x.shape()), x.ndim() >= 1 ? x.dim(-1) : 0);
  c = x.dim(-1);
  rows = c == 0 ? 0 : x.numel() / c;
}

}  // namespace

void mul(const Tensor& a, const Tensor& b, Tensor& out) {
  expect_f32(a, "mul (a)");
  expect_f32(b, "mul (b)");
  expect_f32(out, "mul (out)");
  EL_ENSURE(a.numel() == b.numel() && a.numel() == out.numel(), "cpu mul: {} * {} -> {}",
            shape_str(a.shape()), shape_str(b.shape()), shape_str(out.shape()));
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * pb[i];
}

void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out) {
  expect_f32(x, "mul_lastdim (x)");
  expect_f32(v, "mul_lastdim (v)");
  expect_f32(out, "mul_lastdim (out)");
  int64_t rows = 0, c = 0;
  lastdim_dims(x, v, "mul_lastdim", rows, c);
  if (b.defined()) {
    expect_f32(b, "mul_lastdim (b)");
    lastdim_dims(x, b, "mul_lastdim (b)", rows, c);
  }
  EL_ENSURE(out.numel() == x.numel(), "cpu mul_lastdim: out {} for x {}", shape_str(out.shape()),
            shape_str(x.shape()));
  const float* px = x.data<float>();
  const float* pv = v.data<float>();
  const float* pb = b.defined() ? b.data<float>() : nullptr;
  float* po = out.data<float>();
#pragma omp parallel for schedule(static) if (rows * c >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < c; ++j) po[r * c + j] = px[r * c + j] * pv[j] + (pb ? pb[j] : 0.f);
  }
}

void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv) {
  expect_f32(dy, "mul_lastdim_grad_v (dy)");
  expect_f32(x, "mul_lastdim_grad_v (x)");
  expect_f32(dv, "mul_lastdim_grad_v (dv)");
  int64_t rows = 0, c = 0;
  lastdim_dims(x, dv, "mul_lastdim_grad_v", rows, c);
  EL_ENSURE(dy.numel() == x.numel(), "cpu mul_lastdim_grad_v: dy {} for x {}",
            shape_str(dy.shape()), shape_str(x.shape()));
  const float* pd = dy.data<float>();
  const float* px = x.data<float>();
  float* pv = dv.data<float>();
  // Column sums in row order, in double: the result does not depend on the
  // thread count (columns are split between threads, rows are not).
#pragma omp parallel for schedule(static) if (rows * c >= kParallelMinWork)
  for (int64_t j = 0; j < c; ++j) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += static_cast<double>(pd[r * c + j]) * px[r * c + j];
    pv[j] = static_cast<float>(s);
  }
}

void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out) {
  expect_f32(x, "dropout (x)");
  expect_f32(out, "dropout (out)");
  EL_ENSURE(out.numel() == x.numel(), "cpu dropout: out {} for x {}", shape_str(out.shape()),
            shape_str(x.shape()));
  EL_ENSURE(p >= 0.f && p < 1.f, "cpu dropout: p {} outside [0, 1)", p);
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const float keep_scale = 1.f / (1.f - p);
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    po[i] = dropout_keep(seed, static_cast<uint64_t>(i), p) ? px[i] * keep_scale : 0.f;
  }
}

void inv_row_norms(const Tensor& x, Tensor& out) {
  expect_f32(x, "inv_row_norms (x)");
  expect_f32(out, "inv_row_norms (out)");
  EL_ENSURE(x.ndim() == 2 && out.numel() == x.dim(0), "cpu inv_row_norms: out {} for x {}",
            shape_str(out.shape()), shape_str(x.shape()));
  const int64_t n = x.dim(0), c = x.dim(1);
  const float* px = x.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinWork)
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < c; ++j) ss += static_cast<double>(px[r * c + j]) * px[r * c + j];
    po[r] = static_cast<float>(1.0 / std::sqrt(ss));
  }
}

}  // namespace el::cpu
