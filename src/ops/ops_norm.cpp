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
      // x's gradient so far (the residual stream's) is added by the kernel.
      GradSlot slot = grad_slot(x, dy.device());
      Tensor dx = slot.dst.defined() ? slot.dst : empty_like(x, dy.device());
      Tensor dw = empty_like(w, dy.device());
      backend_for(dy.device()).rmsnorm_backward(dy, x, w, rstd, slot.prior, dx, dw);
      commit_grad(x, slot);
      accumulate_grad(w, dw);
    });
  }
  return y;
}

ResidualNorm add_rmsnorm(const Tensor& x, const Tensor& branch, const Tensor& w, float eps) {
  const int64_t n = norm_rows("add_rmsnorm", x, "w", w);
  detail::check_float("add_rmsnorm", "branch", branch);
  check_same_dtype("add_rmsnorm", "x", x, "branch", branch);
  check_same_device("add_rmsnorm", "x", x, "branch", branch);
  detail::check_same_shape("add_rmsnorm", "x", x, "branch", branch);
  const Device dev = x.device();
  ResidualNorm out{Tensor::empty(x.shape(), x.dtype(), dev), Tensor::empty(x.shape(), x.dtype(), dev)};
  Tensor rstd = Tensor::empty({n}, DType::f32, dev);
  backend_for(dev).add_rmsnorm_forward(x, branch, w, eps, out.sum, out.normed, rstd);
  if (any_requires_grad({&x, &branch, &w})) {
    mark_output(out.sum);
    mark_output(out.normed);
    tape().record("add_rmsnorm", [x, branch, w, rstd, sum = out.sum, normed = out.normed]() {
      Tensor dy = take_grad(normed);
      Tensor dsum = take_grad(sum);  // from the residual stream's later uses
      if (!dy.defined() && !dsum.defined()) return;
      Tensor total = dsum;
      if (dy.defined()) {
        // d(sum) = rmsnorm backward + the residual stream's gradient, added by
        // the kernel (in place unless that buffer is shared).
        total = dsum.defined() && !dsum.is_shared_gradient() ? dsum.view(sum.shape())
                                                              : empty_like(sum, dy.device());
        Tensor dw = empty_like(w, dy.device());
        backend_for(dy.device()).rmsnorm_backward(dy, sum, w, rstd, dsum, total, dw);
        accumulate_grad(w, dw);
      }
      // Both inputs of the add get the same gradient, one buffer shared.
      const bool gx = x.requires_grad(), gb = branch.requires_grad();
      if (gx && gb) {
        share_grad(x, total);
        share_grad(branch, total);
      } else {
        accumulate_grad(gx ? x : branch, total);
      }
    });
  }
  return out;
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
