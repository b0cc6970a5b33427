// ops_mamba.cpp — the Mamba-1 ops: the column split of the packed
// projections, the causal depthwise conv with SiLU and the selective scan,
// each for training (differentiable, zero initial state) and for generation
// (from and into the cached states, no gradient). Contracts in ops/ops.h and
// ops/backend.h ("Mamba-1"); the layer is nn/mamba.h.
#include <vector>

#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::desc;
using detail::empty_like;

namespace {

// x[B, T, I], w [I, K] or [I, 1, K], bias [I] or undefined.
int64_t check_conv(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_float(op, "x", x);
  check_float(op, "w", w);
  check_same_device(op, "x", x, "w", w);
  EL_ENSURE(x.ndim() == 3 && w.ndim() >= 2 && w.dim(0) == x.dim(2) && w.numel() % x.dim(2) == 0 &&
                w.numel() / x.dim(2) == w.dim(-1),
            "ops::{}: x {}, w {} (expected x[B, T, I] and w[I, K] or [I, 1, K])", op, desc(x),
            desc(w));
  if (bias.defined()) {
    check_float(op, "bias", bias);
    EL_ENSURE(bias.numel() == x.dim(2), "ops::{}: bias {} for x {}", op, desc(bias), desc(x));
  }
  return w.dim(-1);
}

// The scan's operands (ops.h mamba_scan).
void check_scan(const char* op, const Tensor& u, const Tensor& delta, const Tensor& A_log,
                const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                const Tensor& delta_bias) {
  const std::pair<const char*, const Tensor*> acts[] = {
      {"delta", &delta}, {"B", &B}, {"C", &C}, {"z", &z}};
  check_float(op, "u", u);
  for (const auto& [name, t] : acts) {
    check_float(op, name, *t);
    check_same_dtype(op, "u", u, name, *t);
    check_same_device(op, "u", u, name, *t);
  }
  const std::pair<const char*, const Tensor*> params[] = {
      {"A_log", &A_log}, {"D", &D}, {"delta_bias", &delta_bias}};
  for (const auto& [name, t] : params) {
    check_float(op, name, *t);
    check_same_device(op, "u", u, name, *t);
  }
  EL_ENSURE(u.ndim() == 3 && A_log.ndim() == 2, "ops::{}: u {}, A_log {} (expected u[B, T, I], "
            "A_log[I, N])", op, desc(u), desc(A_log));
  const int64_t b = u.dim(0), t = u.dim(1), i = u.dim(2), n = A_log.dim(1);
  EL_ENSURE(delta.shape() == u.shape() && z.shape() == u.shape() && A_log.dim(0) == i &&
                B.ndim() == 3 && B.dim(0) == b && B.dim(1) == t && B.dim(2) == n &&
                C.shape() == B.shape() && D.numel() == i && delta_bias.numel() == i,
            "ops::{}: u {}, delta {}, A_log {}, B {}, C {}, D {}, z {}, delta_bias {} (expected "
            "u/delta/z [B, T, I], A_log [I, N], B/C [B, T, N], D/delta_bias [I])",
            op, desc(u), desc(delta), desc(A_log), desc(B), desc(C), desc(D), desc(z),
            desc(delta_bias));
}

// The generation cache arguments: f32 state of `shape`, last i32 [B] or undefined.
void check_cached(const char* op, const Tensor& x, const Tensor& state, const Shape& shape,
                  const Tensor& last) {
  EL_ENSURE(state.defined() && state.dtype() == DType::f32 && state.shape() == shape &&
                state.device() == x.device(),
            "ops::{}: state {} (expected f32 {} on {})", op, desc(state), shape_str(shape),
            x.device().str());
  EL_ENSURE(!last.defined() || (last.dtype() == DType::i32 && last.numel() == x.dim(0) &&
                                last.device() == x.device()),
            "ops::{}: last {} (expected i32 [{}] on the inputs' device)", op, desc(last), x.dim(0));
}

}  // namespace

std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& sizes) {
  check_float("split_columns", "x", x);
  int64_t total = 0;
  for (int64_t s : sizes) {
    EL_ENSURE(s > 0, "ops::split_columns: part sizes must be positive, got {}", s);
    total += s;
  }
  EL_ENSURE(x.ndim() >= 1 && x.dim(-1) == total,
            "ops::split_columns: x {} has {} columns, the parts {}", desc(x),
            x.ndim() >= 1 ? x.dim(-1) : 0, total);
  Backend& be = backend_for(x.device());
  std::vector<Tensor> parts;
  int64_t col = 0;
  for (int64_t s : sizes) {
    Shape shape = x.shape();
    shape.back() = s;
    Tensor p = Tensor::empty(shape, x.dtype(), x.device());
    be.copy_columns(x, col, p, 0, s);
    parts.push_back(p);
    col += s;
  }
  if (any_requires_grad({&x})) {
    for (Tensor& p : parts) mark_output(p);
    // One closure for all parts: their gradients go side by side into one
    // buffer (a part nothing flowed into contributes zeros).
    tape().record("split_columns", [x, parts, sizes]() {
      std::vector<Tensor> grads;
      bool any = false, all = true;
      for (const Tensor& p : parts) {
        grads.push_back(take_grad(p));
        any = any || grads.back().defined();
        all = all && grads.back().defined();
      }
      if (!any) return;
      const Device dev = x.device();
      Tensor dx = empty_like(x, dev);
      Backend& b = backend_for(dev);
      if (!all) b.fill(dx, 0.0f);
      int64_t c = 0;
      for (size_t i = 0; i < parts.size(); ++i) {
        if (grads[i].defined()) {
          b.copy_columns(grads[i].view(parts[i].shape()), 0, dx, c, sizes[i]);  // x's dtype
        }
        c += sizes[i];
      }
      accumulate_grad(x, dx);
    });
  }
  return parts;
}

Tensor mamba_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_conv("mamba_conv1d", x, w, bias);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor no_state;
  const Tensor w2 = w.view({x.dim(2), w.dim(-1)});
  backend_for(x.device()).mamba_conv1d_forward(x, w2, bias, Tensor(), no_state, out);
  if (any_requires_grad({&x, &w, &bias})) {
    mark_output(out);
    tape().record("mamba_conv1d", [x, w, bias, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      const Device dev = dy.device();
      const int64_t I = x.dim(2), K = w.dim(-1);
      Tensor dx = empty_like(x, dev);
      Tensor dw = Tensor::empty({I, K}, DType::f32, dev);
      Tensor db = bias.defined() ? Tensor::empty({I}, DType::f32, dev) : Tensor();
      backend_for(dev).mamba_conv1d_backward(dy.view(x.shape()), x, w.view({I, K}), bias, dx, dw,
                                             db);
      accumulate_grad(x, dx);
      accumulate_grad(w, dw.view(w.shape()));
      if (bias.defined()) accumulate_grad(bias, db.view(bias.shape()));
    });
  }
  return out;
}

Tensor mamba_conv1d_cached(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& state,
                           const Tensor& last) {
  const int64_t K = check_conv("mamba_conv1d_cached", x, w, bias);
  check_cached("mamba_conv1d_cached", x, state, {x.dim(0), K - 1, x.dim(2)}, last);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).mamba_conv1d_forward(x, w.view({x.dim(2), K}), bias, last, state, out);
  return out;
}

Tensor mamba_scan(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                  const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias) {
  check_scan("mamba_scan", u, delta, A_log, B, C, D, z, delta_bias);
  const Device dev = u.device();
  Backend& be = backend_for(dev);
  Tensor y = Tensor::empty(u.shape(), u.dtype(), dev);
  const bool grad = any_requires_grad({&u, &delta, &A_log, &B, &C, &D, &z, &delta_bias});
  // The backend's restart states for the backward (none on the CPU), f32
  // [B, I, ceil(T / L), N]: kept with the closure, freed with the tape.
  Tensor checkpoints;
  const int64_t L = be.mamba_scan_chunk();
  if (grad && L > 0) {
    checkpoints = Tensor::empty({u.dim(0), u.dim(2), (u.dim(1) + L - 1) / L, A_log.dim(1)},
                                DType::f32, dev);
  }
  Tensor no_state;
  be.mamba_scan_forward(u, delta, A_log, B, C, D, z, delta_bias, Tensor(), no_state, y,
                        checkpoints);
  if (grad) {
    mark_output(y);
    tape().record("mamba_scan", [u, delta, A_log, B, C, D, z, delta_bias, y, checkpoints]() {
      Tensor dy = take_grad(y);
      if (!dy.defined()) return;
      const Device d = dy.device();
      Tensor du = empty_like(u, d), ddelta = empty_like(delta, d), dz = empty_like(z, d);
      Tensor dA = Tensor::empty(A_log.shape(), DType::f32, d);
      Tensor dB = Tensor::empty(B.shape(), DType::f32, d);
      Tensor dC = Tensor::empty(C.shape(), DType::f32, d);
      Tensor dD = Tensor::empty({u.dim(2)}, DType::f32, d);
      Tensor dbias = Tensor::empty({u.dim(2)}, DType::f32, d);
      backend_for(d).mamba_scan_backward(dy.view(u.shape()), u, delta, A_log, B, C, D, z,
                                         delta_bias, checkpoints, du, ddelta, dA, dB, dC, dD, dz,
                                         dbias);
      accumulate_grad(u, du);
      accumulate_grad(delta, ddelta);
      accumulate_grad(A_log, dA);
      accumulate_grad(B, dB);
      accumulate_grad(C, dC);
      accumulate_grad(D, dD.view(D.shape()));
      accumulate_grad(z, dz);
      accumulate_grad(delta_bias, dbias.view(delta_bias.shape()));
    });
  }
  return y;
}

Tensor mamba_scan_cached(const Tensor& u, const Tensor& delta, const Tensor& A_log,
                         const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                         const Tensor& delta_bias, Tensor& state, const Tensor& last) {
  check_scan("mamba_scan_cached", u, delta, A_log, B, C, D, z, delta_bias);
  check_cached("mamba_scan_cached", u, state, {u.dim(0), u.dim(2), A_log.dim(1)}, last);
  Tensor y = Tensor::empty(u.shape(), u.dtype(), u.device());
  Tensor no_checkpoints;
  backend_for(u.device())
      .mamba_scan_forward(u, delta, A_log, B, C, D, z, delta_bias, last, state, y,
                          no_checkpoints);
  return y;
}

}  // namespace el::ops
