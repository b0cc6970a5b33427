// ops_rwkv.cpp — the RWKV-4 ops: token shift + time mix, the WKV recurrence,
// the receptance gate sigmoid(r) * y and the squared ReLU. Contracts in
// ops/ops.h and ops/backend.h ("RWKV-4"); the layers are nn/rwkv.h.
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

namespace {

// A per-channel vector of x's dtype and device: numel C, last dim C (the
// time_mix parameters are [1, 1, C] as transformers stores them).
void check_channel_vector(const char* op, const char* name, const Tensor& p, const Tensor& x) {
  check_float(op, name, p);
  check_same_dtype(op, "x", x, name, p);
  check_same_device(op, "x", x, name, p);
  EL_ENSURE(p.ndim() >= 1 && p.dim(-1) == x.dim(-1) && p.numel() == x.dim(-1),
            "ops::{}: {} is {}, expected {} values along one dimension (x {})", op, name, desc(p),
            x.dim(-1), desc(x));
}

}  // namespace

std::vector<Tensor> rwkv_time_mix(const Tensor& x, const Tensor& prev,
                                  const std::vector<Tensor>& mix) {
  const char* op = "rwkv_time_mix";
  check_float(op, "x", x);
  EL_ENSURE(x.ndim() == 3, "ops::rwkv_time_mix: x is {}, expected [B, T, C]", desc(x));
  EL_ENSURE(!mix.empty() && mix.size() <= 3, "ops::rwkv_time_mix: {} mix vectors (1 to 3)",
            mix.size());
  for (const Tensor& m : mix) check_channel_vector(op, "mix", m, x);
  const int64_t B = x.dim(0), C = x.dim(2);
  if (prev.defined()) {
    check_float(op, "prev", prev);
    check_same_dtype(op, "x", x, "prev", prev);
    check_same_device(op, "x", x, "prev", prev);
    EL_ENSURE(prev.numel() == B * C, "ops::rwkv_time_mix: prev is {}, expected [{}, {}]",
              desc(prev), B, C);
  }
  const Device dev = x.device();
  std::vector<Tensor> outs;
  for (size_t j = 0; j < mix.size(); ++j) outs.push_back(Tensor::empty(x.shape(), x.dtype(), dev));
  if (x.numel() == 0) return outs;
  backend_for(dev).rwkv_time_mix_forward(x, prev, mix, outs);
  std::vector<const Tensor*> inputs{&x};
  for (const Tensor& m : mix) inputs.push_back(&m);
  if (any_requires_grad(inputs)) {
    for (Tensor& o : outs) mark_output(o);
    // A copy of prev: the caller (a generation cache) may overwrite it.
    const Tensor prev_saved = prev.defined() ? prev.clone() : Tensor();
    tape().record(op, [x, prev_saved, mix, outs]() {
      std::vector<Tensor> g;
      bool any = false;
      for (const Tensor& o : outs) {
        g.push_back(take_grad(o));
        any = any || g.back().defined();
      }
      if (!any) return;
      const Device d = x.device();
      for (size_t j = 0; j < g.size(); ++j) {  // an output nothing flowed into: zeros
        g[j] = g[j].defined() ? g[j].view(x.shape()) : Tensor::zeros(x.shape(), x.dtype(), d);
      }
      Tensor dx = empty_like(x, d);
      std::vector<Tensor> dmix;
      for (const Tensor& m : mix) dmix.push_back(empty_like(m, d));
      backend_for(d).rwkv_time_mix_backward(g, x, prev_saved, mix, dx, dmix);
      accumulate_grad(x, dx);
      for (size_t j = 0; j < mix.size(); ++j) accumulate_grad(mix[j], dmix[j]);
    });
  }
  return outs;
}

Tensor rwkv_wkv(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                const Tensor& v, Tensor* state, const Tensor& last) {
  const char* op = "rwkv_wkv";
  check_float(op, "k", k);
  check_float(op, "v", v);
  check_same_dtype(op, "k", k, "v", v);
  check_same_device(op, "k", k, "v", v);
  EL_ENSURE(k.ndim() == 3 && v.shape() == k.shape(),
            "ops::rwkv_wkv: k {} and v {} (expected one shape [B, T, C])", desc(k), desc(v));
  check_channel_vector(op, "time_decay", time_decay, k);
  check_channel_vector(op, "time_first", time_first, k);
  const int64_t B = k.dim(0), T = k.dim(1), C = k.dim(2);
  const Device dev = k.device();
  Tensor st;
  if (state) {
    check_dtype(op, "state", *state, DType::f32);
    check_same_device(op, "k", k, "state", *state);
    EL_ENSURE(state->numel() == B * 3 * C, "ops::rwkv_wkv: state is {}, expected f32 [{}, 3, {}]",
              desc(*state), B, C);
    st = *state;
  }
  if (last.defined()) {
    EL_ENSURE(state, "ops::rwkv_wkv: last given without a state to keep");
    check_dtype(op, "last", last, DType::i32);
    check_same_device(op, "k", k, "last", last);
    EL_ENSURE(last.numel() == B, "ops::rwkv_wkv: last is {}, expected i32 [{}]", desc(last), B);
  }
  Tensor y = Tensor::empty(k.shape(), k.dtype(), dev);
  if (T == 0) return y;  // the state stays as it was
  const bool grad = any_requires_grad({&time_decay, &time_first, &k, &v});
  // The backward needs the initial state, which the forward overwrites.
  const Tensor state0 = grad && st.defined() ? st.clone() : Tensor();
  backend_for(dev).rwkv_wkv_forward(time_decay, time_first, k, v, last, st, y);
  if (grad) {
    mark_output(y);
    tape().record(op, [time_decay, time_first, k, v, y, state0]() {
      Tensor dy = take_grad(y);
      if (!dy.defined()) return;
      const Device d = dy.device();
      Tensor dw = empty_like(time_decay, d), du = empty_like(time_first, d);
      Tensor dk = empty_like(k, d), dv = empty_like(v, d);
      backend_for(d).rwkv_wkv_backward(time_decay, time_first, k, v, y, dy.view(k.shape()),
                                       state0, dw, du, dk, dv);
      accumulate_grad(time_decay, dw);
      accumulate_grad(time_first, du);
      accumulate_grad(k, dk);
      accumulate_grad(v, dv);
    });
  }
  return y;
}

Tensor sigmoid_mul(const Tensor& r, const Tensor& y) {
  const char* op = "sigmoid_mul";
  check_float(op, "r", r);
  check_float(op, "y", y);
  check_same_dtype(op, "r", r, "y", y);
  check_same_device(op, "r", r, "y", y);
  check_same_shape(op, "r", r, "y", y);
  Tensor out = Tensor::empty(r.shape(), r.dtype(), r.device());
  backend_for(r.device()).sigmoid_mul_forward(r, y, out);
  if (any_requires_grad({&r, &y})) {
    mark_output(out);
    tape().record(op, [r, y, out]() {
      Tensor dout = take_grad(out);
      if (!dout.defined()) return;
      Tensor dr = empty_like(r, dout.device()), dy = empty_like(y, dout.device());
      backend_for(dout.device()).sigmoid_mul_backward(dout, r, y, dr, dy);
      accumulate_grad(r, dr);
      accumulate_grad(y, dy);
    });
  }
  return out;
}

Tensor relu_square(const Tensor& x) {
  check_float("relu_square", "x", x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).relu_square_forward(x, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("relu_square", [x, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).relu_square_backward(dy, x, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

}  // namespace el::ops
