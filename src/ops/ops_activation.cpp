// ops_activation.cpp — swiglu, gelu and gelu_exact.
#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::check_same_shape;
using detail::empty_like;

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_float("swiglu", "gate", gate);
  check_float("swiglu", "up", up);
  check_same_dtype("swiglu", "gate", gate, "up", up);
  check_same_device("swiglu", "gate", gate, "up", up);
  check_same_shape("swiglu", "gate", gate, "up", up);
  Tensor out = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
  backend_for(gate.device()).swiglu_forward(gate, up, out);
  if (any_requires_grad({&gate, &up})) {
    mark_output(out);
    tape().record("swiglu", [gate, up, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dg = empty_like(gate, dy.device());
      Tensor du = empty_like(up, dy.device());
      backend_for(dy.device()).swiglu_backward(dy, gate, up, dg, du);
      accumulate_grad(gate, dg);
      accumulate_grad(up, du);
    });
  }
  return out;
}

Tensor swiglu_packed(const Tensor& gate_up) {
  check_float("swiglu_packed", "gate_up", gate_up);
  EL_ENSURE(gate_up.ndim() >= 1 && gate_up.dim(-1) % 2 == 0,
            "ops::swiglu_packed: gate_up is {}, expected [..., 2F] (gate, then up)",
            detail::desc(gate_up));
  Shape shape = gate_up.shape();
  shape.back() /= 2;
  Tensor out = Tensor::empty(shape, gate_up.dtype(), gate_up.device());
  backend_for(gate_up.device()).swiglu_packed_forward(gate_up, out);
  if (any_requires_grad({&gate_up})) {
    mark_output(out);
    tape().record("swiglu_packed", [gate_up, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dgu = empty_like(gate_up, dy.device());
      backend_for(dy.device()).swiglu_packed_backward(dy.view(out.shape()), gate_up, dgu);
      accumulate_grad(gate_up, dgu);
    });
  }
  return out;
}

Tensor gelu(const Tensor& x) {
  check_float("gelu", "x", x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).gelu_forward(x, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("gelu", [x, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).gelu_backward(dy, x, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

Tensor gelu_exact(const Tensor& x) {
  check_float("gelu_exact", "x", x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).gelu_exact_forward(x, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("gelu_exact", [x, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).gelu_exact_backward(dy, x, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

}  // namespace el::ops
