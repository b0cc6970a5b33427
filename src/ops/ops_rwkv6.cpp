// ops_rwkv6.cpp — the RWKV-6 ops: tanh and the WKV-6 matrix-state
// recurrence. Contracts in ops/ops.h and ops/backend.h ("RWKV-6"); the layers
// are nn/rwkv6.h.
#include <vector>

#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_dtype;
using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::check_same_shape;
using detail::desc;
using detail::empty_like;

Tensor tanh_act(const Tensor& x) {
  check_float("tanh_act", "x", x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return out;
  backend_for(x.device()).tanh_forward(x, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("tanh_act", [x, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).tanh_backward(dy.view(x.shape()), out, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

Tensor rwkv6_wkv(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                 const Tensor& u, int64_t head_size, Tensor* state, const Tensor& last) {
  const char* op = "rwkv6_wkv";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"r", &r}, {"k", &k},
                                {"v", &v}, {"w", &w}, {"u", &u}}) {
    check_float(op, name, *t);
    check_same_dtype(op, "k", k, name, *t);
    check_same_device(op, "k", k, name, *t);
  }
  EL_ENSURE(k.ndim() == 3, "ops::rwkv6_wkv: k is {}, expected [B, T, C]", desc(k));
  check_same_shape(op, "k", k, "r", r);
  check_same_shape(op, "k", k, "v", v);
  check_same_shape(op, "k", k, "w", w);
  const int64_t B = k.dim(0), T = k.dim(1), C = k.dim(2);
  EL_ENSURE(head_size > 0 && C % head_size == 0,
            "ops::rwkv6_wkv: C {} is not a multiple of head_size {}", C, head_size);
  EL_ENSURE(u.numel() == C, "ops::rwkv6_wkv: u is {}, expected {} values", desc(u), C);
  const int64_t H = C / head_size;
  const Device dev = k.device();
  Tensor st;
  if (state) {
    check_dtype(op, "state", *state, DType::f32);
    check_same_device(op, "k", k, "state", *state);
    EL_ENSURE(state->numel() == B * H * head_size * head_size,
              "ops::rwkv6_wkv: state is {}, expected f32 [{}, {}, {}, {}]", desc(*state), B, H,
              head_size, head_size);
    st = *state;
  }
  if (last.defined()) {
    EL_ENSURE(state, "ops::rwkv6_wkv: last given without a state to keep");
    check_dtype(op, "last", last, DType::i32);
    check_same_device(op, "k", k, "last", last);
    EL_ENSURE(last.numel() == B, "ops::rwkv6_wkv: last is {}, expected i32 [{}]", desc(last), B);
  }
  Tensor y = Tensor::empty(k.shape(), k.dtype(), dev);
  if (T == 0 || B == 0) return y;  // the state stays as it was
  const bool grad = any_requires_grad({&r, &k, &v, &w, &u});
  // The backward needs the initial state, which the forward overwrites.
  const Tensor state0 = grad && st.defined() ? st.clone() : Tensor();
  backend_for(dev).rwkv6_wkv_forward(r, k, v, w, u, head_size, last, st, y);
  if (grad) {
    mark_output(y);
    tape().record(op, [r, k, v, w, u, head_size, y, state0]() {
      Tensor dy = take_grad(y);
      if (!dy.defined()) return;
      const Device d = dy.device();
      Tensor dr = empty_like(r, d), dk = empty_like(k, d), dv = empty_like(v, d);
      Tensor dw = empty_like(w, d), du = empty_like(u, d);
      backend_for(d).rwkv6_wkv_backward(r, k, v, w, u, head_size, dy.view(k.shape()), state0, dr,
                                        dk, dv, dw, du);
      accumulate_grad(r, dr);
      accumulate_grad(k, dk);
      accumulate_grad(v, dv);
      accumulate_grad(w, dw);
      accumulate_grad(u, du);
    });
  }
  return y;
}

}  // namespace el::ops
