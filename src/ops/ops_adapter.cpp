// ops_adapter.cpp — mul, mul_lastdim and dropout: what LoRA and DoRA
// (finetune/) add to a model's forward besides GEMMs.
#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::check_same_shape;
using detail::desc;
using detail::empty_like;

Tensor mul(const Tensor& a, const Tensor& b) {
  check_float("mul", "a", a);
  check_float("mul", "b", b);
  check_same_dtype("mul", "a", a, "b", b);
  check_same_device("mul", "a", a, "b", b);
  check_same_shape("mul", "a", a, "b", b);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  backend_for(a.device()).mul(a, b, out);
  if (any_requires_grad({&a, &b})) {
    mark_output(out);
    tape().record("mul", [a, b, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Backend& be = backend_for(dy.device());
      const Tensor g = dy.view(a.shape());
      if (a.requires_grad()) {
        Tensor da = empty_like(a, dy.device());
        be.mul(g, b, da);
        accumulate_grad(a, da);
      }
      if (b.requires_grad()) {
        Tensor db = empty_like(b, dy.device());
        be.mul(g, a, db);
        accumulate_grad(b, db);
      }
    });
  }
  return out;
}

Tensor mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b) {
  check_float("mul_lastdim", "x", x);
  check_float("mul_lastdim", "v", v);
  check_same_device("mul_lastdim", "x", x, "v", v);
  EL_ENSURE(x.ndim() >= 1 && v.ndim() == 1 && v.dim(0) == x.dim(-1),
            "ops::mul_lastdim: v {} does not match x {} (expected [{}])", desc(v), desc(x),
            x.ndim() >= 1 ? x.dim(-1) : 0);
  if (b.defined()) {
    check_float("mul_lastdim", "b", b);
    check_same_dtype("mul_lastdim", "v", v, "b", b);
    check_same_device("mul_lastdim", "x", x, "b", b);
    check_same_shape("mul_lastdim", "v", v, "b", b);
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).mul_lastdim(x, v, b, out);
  if (any_requires_grad({&x, &v, &b})) {
    mark_output(out);
    tape().record("mul_lastdim", [x, v, b, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Backend& be = backend_for(dy.device());
      const Tensor g = dy.view(x.shape());
      if (x.requires_grad()) {
        Tensor dx = empty_like(x, dy.device());
        be.mul_lastdim(g, v, Tensor(), dx);
        accumulate_grad(x, dx);
      }
      if (v.requires_grad()) {
        Tensor dv = empty_like(v, dy.device());
        be.mul_lastdim_grad_v(g, x, dv);
        accumulate_grad(v, dv);
      }
      if (b.defined() && b.requires_grad()) {
        // Column sums of dy: the v-gradient kernel against ones.
        Tensor ones = Tensor::full(x.shape(), 1.f, x.dtype(), dy.device());
        Tensor db = empty_like(b, dy.device());
        be.mul_lastdim_grad_v(g, ones, db);
        accumulate_grad(b, db);
      }
    });
  }
  return out;
}

Tensor dropout(const Tensor& x, float p, uint64_t seed) {
  check_float("dropout", "x", x);
  EL_ENSURE(p >= 0.f && p < 1.f, "ops::dropout: p {} outside [0, 1) for x {}", p, desc(x));
  if (p == 0.f) return x;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).dropout(x, p, seed, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("dropout", [x, p, seed, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      // The same mask and scale: dropout is linear in x.
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).dropout(dy.view(x.shape()), p, seed, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

}  // namespace el::ops
