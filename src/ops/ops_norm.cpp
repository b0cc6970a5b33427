// ops_norm.cpp — rmsnorm and layernorm over the last dimension.
#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::desc;
using detail::empty_like;

namespace {

// Checks x[..., C] against a weight (or bias) [C]; returns N = numel / C.
int64_t norm_rows(const char* op, const Tensor& x, const char* wn, const Tensor& w) {
  check_float(op, "x", x);
  check_float(op, wn, w);
  check_same_dtype(op, "x", x, wn, w);
  check_same_device(op, "x", x, wn, w);
  EL_ENSURE(x.ndim() >= 1 && w.ndim() == 1 && w.dim(0) == x.dim(-1),
            "ops::{}: {} {} does not match x {} (expected [{}])", op, wn, desc(w), desc(x),
            x.ndim() >= 1 ? x.dim(-1) : 0);
  return x.dim(-1) == 0 ? 0 : x.numel() / x.dim(-1);
}

}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& w, float eps) {
  const int64_t n = norm_rows("rmsnorm", x, "w", w);
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor rstd = Tensor::empty({n}, DType::f32, dev);  // statistics stay f32
  backend_for(dev).rmsnorm_forward(x, w, eps, y, rstd);
  if (any_requires_grad({&x, &w})) {
    mark_output(y);
    tape().record("rmsnorm", [x, w, rstd, y]() {
      Tensor dy = take_grad(y);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      Tensor dw = empty_like(w, dy.device());
      backend_for(dy.device()).rmsnorm_backward(dy, x, w, rstd, dx, dw);
      accumulate_grad(x, dx);
      accumulate_grad(w, dw);
    });
  }
  return y;
}

Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  const int64_t n = norm_rows("layernorm", x, "w", w);
  norm_rows("layernorm", x, "b", b);
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor mean = Tensor::empty({n}, DType::f32, dev);  // statistics stay f32
  Tensor rstd = Tensor::empty({n}, DType::f32, dev);
  backend_for(dev).layernorm_forward(x, w, b, eps, y, mean, rstd);
  if (any_requires_grad({&x, &w, &b})) {
    mark_output(y);
    tape().record("layernorm", [x, w, b, mean, rstd, y]() {
      Tensor dy = take_grad(y);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      Tensor dw = empty_like(w, dy.device());
      Tensor db = empty_like(b, dy.device());
      backend_for(dy.device()).layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
      accumulate_grad(x, dx);
      accumulate_grad(w, dw);
      accumulate_grad(b, db);
    });
  }
  return y;
}

}  // namespace el::ops
