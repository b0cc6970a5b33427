// ops_moe.cpp — the mixture-of-experts ops: router (top-k gating), the
// dropless / capacity-limited token grouping, the row gather into expert
// order, the grouped linear (one grouped GEMM per projection), the weighted
// combine with an optional gated shared expert, and the router losses
// (load balancing, z-loss), and the weight-only quantized grouped linear of
// quantized experts (inference only). Contracts in ops/ops.h and ops/backend.h
// ("mixture of experts"); the layer that uses them is nn/moe.h.
//
// Nothing here reads a device value on the host: the per-expert row counts
// live in `offsets` on the device and every kernel reads them there, so a
// GPU runs an MoE layer without a synchronisation.
#include <vector>

#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_dtype;
using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::desc;
using detail::empty_like;

namespace {

void check_grouping(const char* op, const MoeGrouping& g, const Tensor& like) {
  check_dtype(op, "sorted_slot", g.sorted_slot, DType::i32);
  check_dtype(op, "slot_row", g.slot_row, DType::i32);
  check_dtype(op, "offsets", g.offsets, DType::i32);
  check_same_device(op, "sorted_slot", g.sorted_slot, "input", like);
  check_same_device(op, "slot_row", g.slot_row, "input", like);
  check_same_device(op, "offsets", g.offsets, "input", like);
  EL_ENSURE(g.k >= 1 && g.sorted_slot.ndim() == 1 && g.slot_row.shape() == g.sorted_slot.shape() &&
                g.sorted_slot.numel() % g.k == 0 && g.offsets.ndim() == 1 &&
                g.offsets.numel() >= 2,
            "ops::{}: grouping sorted_slot {}, slot_row {}, offsets {}, k {} (expected i32 [M], "
            "[M] with M a multiple of k, offsets [E + 1])",
            op, desc(g.sorted_slot), desc(g.slot_row), desc(g.offsets), g.k);
}

// The experts' weights as one [E, O, K] tensor (see grouped_linear).
Tensor expert_weights(const std::vector<Tensor>& weights, int64_t n_experts) {
  EL_ENSURE(!weights.empty(), "ops::grouped_linear: no weights");
  if (weights.size() == 1 && weights[0].ndim() == 3) {
    check_float("grouped_linear", "w", weights[0]);
    EL_ENSURE(weights[0].dim(0) == n_experts,
              "ops::grouped_linear: w {} has {} experts, offsets {}", desc(weights[0]),
              weights[0].dim(0), n_experts);
    return weights[0];
  }
  EL_ENSURE(rows_are_stacked(weights),
            "ops::grouped_linear: the {} weights are not consecutive row blocks of one buffer",
            weights.size());
  const Tensor w = stacked_view(weights);
  check_float("grouped_linear", "w", w);
  EL_ENSURE(w.ndim() == 2 && w.dim(0) % n_experts == 0,
            "ops::grouped_linear: weights {} do not split into {} experts", desc(w), n_experts);
  return w.view({n_experts, w.dim(0) / n_experts, w.dim(1)});
}

}  // namespace

MoeRouting moe_router(const Tensor& logits, int64_t k, MoeScore score, bool normalize) {
  check_float("moe_router", "logits", logits);
  EL_ENSURE(logits.ndim() == 2 && k >= 1 && k <= logits.dim(1),
            "ops::moe_router: logits {} and k {} (expected [N, E] with 1 <= k <= E)",
            desc(logits), k);
  const int64_t N = logits.dim(0);
  const Device dev = logits.device();
  MoeRouting r{Tensor::empty({N, k}, DType::i32, dev), Tensor::empty({N, k}, DType::f32, dev)};
  if (N == 0) return r;
  backend_for(dev).moe_router_forward(logits, score, normalize, r.ids, r.weights);
  if (any_requires_grad({&logits})) {
    mark_output(r.weights);
    tape().record("moe_router", [logits, ids = r.ids, w = r.weights, score, normalize]() {
      Tensor dw = take_grad(w);
      if (!dw.defined()) return;
      Tensor dl = empty_like(logits, dw.device());
      backend_for(dw.device())
          .moe_router_backward(dw.view(w.shape()), logits, ids, w, score, normalize, dl);
      accumulate_grad(logits, dl);
    });
  }
  return r;
}

MoeGrouping moe_group(const Tensor& ids, int64_t n_experts, int64_t capacity) {
  check_dtype("moe_group", "ids", ids, DType::i32);
  EL_ENSURE(ids.ndim() == 2 && ids.dim(1) >= 1 && n_experts >= 1 && capacity >= 0,
            "ops::moe_group: ids {}, {} experts, capacity {} (expected ids [N, k], k >= 1, "
            "experts >= 1, capacity >= 0)",
            desc(ids), n_experts, capacity);
  const Device dev = ids.device();
  const int64_t m = ids.numel();
  MoeGrouping g;
  g.k = ids.dim(1);
  g.sorted_slot = Tensor::empty({m}, DType::i32, dev);
  g.slot_row = Tensor::empty({m}, DType::i32, dev);
  g.offsets = Tensor::empty({n_experts + 1}, DType::i32, dev);
  Backend& be = backend_for(dev);
  if (m == 0) {
    be.fill(g.offsets, 0.f);
    return g;
  }
  be.moe_group(ids, capacity, g.sorted_slot, g.slot_row, g.offsets);
  return g;
}

Tensor moe_gather(const Tensor& x, const MoeGrouping& g) {
  check_float("moe_gather", "x", x);
  check_grouping("moe_gather", g, x);
  EL_ENSURE(x.ndim() == 2 && x.dim(0) * g.k == g.slot_row.numel(),
            "ops::moe_gather: x {} does not match {} slots of k {} (expected [N, C], N k = M)",
            desc(x), g.slot_row.numel(), g.k);
  const int64_t m = g.sorted_slot.numel();
  Tensor out = Tensor::empty({m, x.dim(1)}, x.dtype(), x.device());
  if (m == 0) return out;
  backend_for(x.device()).moe_gather_forward(x, g.sorted_slot, g.k, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("moe_gather", [x, slot_row = g.slot_row, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).moe_gather_backward(dy.view(out.shape()), slot_row, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

Tensor grouped_quant_linear(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets) {
  check_float("grouped_quant_linear", "x", x);
  check_dtype("grouped_quant_linear", "offsets", offsets, DType::i32);
  EL_ENSURE(!x.requires_grad(), "ops::grouped_quant_linear: inference op called on a tensor that requires grad");
  EL_ENSURE(offsets.ndim() == 1 && offsets.numel() >= 2,
            "ops::grouped_quant_linear: offsets {} (expected i32 [E + 1])", desc(offsets));
  const int64_t e = offsets.numel() - 1;
  EL_ENSURE((w.bits == 4 || w.bits == 8) && w.group_size > 0 && w.in_features % w.group_size == 0 &&
                (w.bits == 8 || w.group_size % 2 == 0) && w.out_features % e == 0 &&
                w.qweight.dtype() == DType::u8 &&
                w.qweight.numel() == w.out_features * w.in_features * w.bits / 8 &&
                w.scales.dtype() == DType::f16 && w.scales.numel() == w.out_features * w.groups_per_row() &&
                (w.symmetric || (w.zeros.defined() && w.zeros.numel() == w.scales.numel())),
            "ops::grouped_quant_linear: malformed quantized weight (bits {}, group {}, [{}, {}]) for {} "
            "experts",
            w.bits, w.group_size, w.out_features, w.in_features, e);
  check_same_device("grouped_quant_linear", "x", x, "qweight", w.qweight);
  check_same_device("grouped_quant_linear", "x", x, "offsets", offsets);
  EL_ENSURE(x.ndim() == 2 && x.dim(1) == w.in_features,
            "ops::grouped_quant_linear: x {} does not match the weight's {} inputs (expected x[M, K])",
            desc(x), w.in_features);
  Tensor y = Tensor::empty({x.dim(0), w.out_features / e}, x.dtype(), x.device());
  if (x.dim(0) == 0) return y;
  backend_for(x.device()).grouped_quant_matmul(x, w, offsets, y);
  return y;
}

Tensor grouped_linear(const Tensor& x, const std::vector<Tensor>& weights,
                      const Tensor& offsets) {
  check_float("grouped_linear", "x", x);
  check_dtype("grouped_linear", "offsets", offsets, DType::i32);
  EL_ENSURE(offsets.ndim() == 1 && offsets.numel() >= 2,
            "ops::grouped_linear: offsets {} (expected i32 [E + 1])", desc(offsets));
  const int64_t n_experts = offsets.numel() - 1;
  const Tensor w = expert_weights(weights, n_experts);
  check_same_device("grouped_linear", "x", x, "w", w);
  check_same_device("grouped_linear", "x", x, "offsets", offsets);
  EL_ENSURE(x.ndim() == 2 && x.dim(1) == w.dim(2),
            "ops::grouped_linear: x {} does not match w {} (expected x[M, K], w[E, O, K])",
            desc(x), desc(w));
  const int64_t m = x.dim(0), o = w.dim(1);
  Tensor y = Tensor::empty({m, o}, x.dtype(), x.device());
  if (m == 0) return y;
  backend_for(x.device()).grouped_gemm(x, w, /*trans_w=*/true, offsets, y);
  std::vector<const Tensor*> inputs{&x};
  for (const Tensor& t : weights) inputs.push_back(&t);
  if (!any_requires_grad(inputs)) return y;
  mark_output(y);
  tape().record("grouped_linear", [x, w, weights, offsets, y]() {
    Tensor dy = take_grad(y);
    if (!dy.defined()) return;
    Backend& b = backend_for(dy.device());
    dy = dy.view(y.shape());
    if (x.requires_grad()) {
      Tensor dx = empty_like(x, dy.device());
      b.grouped_gemm(dy, w, /*trans_w=*/false, offsets, dx);  // dx_e = dy_e @ w_e
      accumulate_grad(x, dx);
    }
    bool any_w = false;
    for (const Tensor& p : weights) any_w = any_w || p.requires_grad();
    if (!any_w) return;
    if (weights.size() == 1) {
      // dW into the weight's gradient, added by the kernel (accumulate) when
      // it has one (gradient accumulation's later micro-batches): no separate
      // add over every expert's gradient. An expert without rows keeps its
      // gradient so far.
      GradSlot slot = grad_slot_in_place(weights[0], dy.device());
      Tensor dw = slot.dst.view(w.shape());
      b.grouped_gemm_dw(dy, x, offsets, dw, /*accumulate=*/slot.prior.defined());
      commit_grad(weights[0], slot);
      return;
    }
    Tensor dw = empty_like(w, dy.device());
    b.grouped_gemm_dw(dy, x, offsets, dw);  // dw_e = dy_e^T @ x_e
    // Each part gets its row block of dW (expert-major, as stacked).
    const Tensor rows = dw.view({w.dim(0) * w.dim(1), w.dim(2)});
    int64_t row = 0;
    for (const Tensor& p : weights) {
      accumulate_grad(p, rows.slice0(row, row + p.dim(0)));
      row += p.dim(0);
    }
  });
  return y;
}

Tensor moe_combine(const Tensor& ys, const Tensor& weights, const MoeGrouping& g,
                   const Tensor& shared, const Tensor& shared_gate) {
  const char* op = "moe_combine";
  check_float(op, "ys", ys);
  check_float(op, "weights", weights);
  if (weights.dtype() != DType::f32) check_same_dtype(op, "ys", ys, "weights", weights);
  check_grouping(op, g, ys);
  check_same_device(op, "ys", ys, "weights", weights);
  const int64_t n = weights.ndim() == 2 ? weights.dim(0) : -1;
  EL_ENSURE(ys.ndim() == 2 && ys.dim(0) == g.sorted_slot.numel() && weights.ndim() == 2 &&
                weights.dim(1) == g.k && n * g.k == g.slot_row.numel(),
            "ops::moe_combine: ys {}, weights {} do not match the grouping of {} slots, k {} "
            "(expected ys[M, C], weights [N, k], M = N k)",
            desc(ys), desc(weights), g.slot_row.numel(), g.k);
  const int64_t c = ys.dim(1);
  EL_ENSURE(shared.defined() == shared_gate.defined(),
            "ops::moe_combine: shared {} and shared_gate {} come together", desc(shared),
            desc(shared_gate));
  if (shared.defined()) {
    check_float(op, "shared", shared);
    check_float(op, "shared_gate", shared_gate);
    check_same_dtype(op, "ys", ys, "shared", shared);
    check_same_dtype(op, "ys", ys, "shared_gate", shared_gate);
    check_same_device(op, "ys", ys, "shared", shared);
    check_same_device(op, "ys", ys, "shared_gate", shared_gate);
    EL_ENSURE(shared.shape() == (Shape{n, c}) && shared_gate.numel() == n,
              "ops::moe_combine: shared {} and shared_gate {} (expected [{}, {}] and [{}, 1])",
              desc(shared), desc(shared_gate), n, c, n);
  }
  const Device dev = ys.device();
  Tensor out = Tensor::empty({n, c}, ys.dtype(), dev);
  if (n == 0) return out;
  const Tensor gate = shared_gate.defined() ? shared_gate.view({n, 1}) : Tensor();
  backend_for(dev).moe_combine_forward(ys, weights, g.slot_row, shared, gate, out);
  if (any_requires_grad({&ys, &weights, &shared, &shared_gate})) {
    mark_output(out);
    tape().record(op, [ys, weights, g, shared, shared_gate, gate, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      const Device d = dy.device();
      Tensor dys = empty_like(ys, d), dw = empty_like(weights, d);
      Tensor dshared = shared.defined() ? empty_like(shared, d) : Tensor();
      Tensor dgate = shared.defined() ? empty_like(gate, d) : Tensor();
      backend_for(d).moe_combine_backward(dy.view(out.shape()), ys, weights, g.sorted_slot,
                                          g.slot_row, shared, gate, dys, dw, dshared, dgate);
      accumulate_grad(ys, dys);
      accumulate_grad(weights, dw);
      if (shared.defined()) {
        accumulate_grad(shared, dshared);
        accumulate_grad(shared_gate, dgate);
      }
    });
  }
  return out;
}

namespace {

// A router loss: forward kernel into an f32 [1] on the device, backward
// kernel reading the seed there too.
template <class Fwd, class Bwd>
Tensor router_loss(const char* op, const Tensor& logits, Fwd fwd, Bwd bwd) {
  const Device dev = logits.device();
  Tensor out = Tensor::empty({1}, DType::f32, dev);
  Backend& be = backend_for(dev);
  if (logits.dim(0) == 0) {
    be.fill(out, 0.f);
    return out;
  }
  fwd(be, out);
  if (any_requires_grad({&logits})) {
    mark_output(out);
    tape().record(op, [logits, out, bwd]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dl = empty_like(logits, dy.device());
      bwd(backend_for(dy.device()), dy.view({1}), dl);
      accumulate_grad(logits, dl);
    });
  }
  return out;
}

}  // namespace

Tensor moe_balance_loss(const Tensor& logits, const Tensor& ids, MoeScore score) {
  check_float("moe_balance_loss", "logits", logits);
  check_dtype("moe_balance_loss", "ids", ids, DType::i32);
  check_same_device("moe_balance_loss", "logits", logits, "ids", ids);
  EL_ENSURE(logits.ndim() == 2 && ids.ndim() == 2 && ids.dim(0) == logits.dim(0) &&
                ids.dim(1) >= 1 && ids.dim(1) <= logits.dim(1),
            "ops::moe_balance_loss: logits {} and ids {} (expected [N, E] and i32 [N, k], "
            "k <= E)",
            desc(logits), desc(ids));
  return router_loss(
      "moe_balance_loss", logits,
      [&](Backend& be, Tensor& out) { be.moe_balance_loss_forward(logits, ids, score, out); },
      [logits, ids, score](Backend& be, const Tensor& dloss, Tensor& dl) {
        be.moe_balance_loss_backward(dloss, logits, ids, score, dl);
      });
}

Tensor moe_z_loss(const Tensor& logits) {
  check_float("moe_z_loss", "logits", logits);
  EL_ENSURE(logits.ndim() == 2 && logits.dim(1) >= 1,
            "ops::moe_z_loss: logits {} (expected [N, E])", desc(logits));
  return router_loss(
      "moe_z_loss", logits,
      [&](Backend& be, Tensor& out) { be.moe_z_loss_forward(logits, out); },
      [logits](Backend& be, const Tensor& dloss, Tensor& dl) {
        be.moe_z_loss_backward(dloss, logits, dl);
      });
}

Tensor add_scaled(const Tensor& a, const Tensor& b, float alpha) {
  check_float("add_scaled", "a", a);
  check_float("add_scaled", "b", b);
  check_same_dtype("add_scaled", "a", a, "b", b);
  check_same_device("add_scaled", "a", a, "b", b);
  detail::check_same_shape("add_scaled", "a", a, "b", b);
  Backend& be = backend_for(a.device());
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  be.copy(a, out);
  be.axpy(alpha, b, out);
  if (any_requires_grad({&a, &b})) {
    mark_output(out);
    tape().record("add_scaled", [a, b, alpha, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      dy = dy.view(out.shape());
      if (b.requires_grad()) {
        Tensor db = empty_like(b, dy.device());
        Backend& be2 = backend_for(dy.device());
        be2.copy(dy, db);
        be2.scale(db, alpha);
        accumulate_grad(b, db);
      }
      accumulate_grad(a, dy);
    });
  }
  return out;
}

}  // namespace el::ops
