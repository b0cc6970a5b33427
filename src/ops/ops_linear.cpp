// ops_linear.cpp — linear (plain, stacked, split into column parts), embedding, add and
// reshape.
#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_defined;
using detail::check_dtype;
using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::check_same_shape;
using detail::desc;
using detail::empty_like;

namespace {

// y = alpha * x @ w^T (+ bias) where w (and bias) may be the stacked view of
// several parameters (linear_stacked): the gradient of w is computed whole and
// each part gets its row block. w_parts = {w} (b_parts = {bias}) for a plain
// linear. alpha scales the GEMMs of the forward and of dx and dw (not bias).
Tensor linear_parts(const Tensor& x, const Tensor& w, const Tensor& bias,
                    const std::vector<Tensor>& w_parts, const std::vector<Tensor>& b_parts,
                    float alpha) {
  const int64_t in = w.dim(1), out_f = w.dim(0);
  const bool has_bias = bias.defined();
  const int64_t n = in == 0 ? 0 : x.numel() / in;
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Backend& be = backend_for(x.device());
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());  // activation dtype
  Tensor x2 = x.view({n, in});
  Tensor y2 = out.view({n, out_f});
  be.gemm(x2, false, w, true, y2, alpha, 0.f);  // alpha [N, in] @ [out, in]^T
  if (has_bias && n > 0) {
    // Broadcast add as a rank-1 GEMM (ones[N, 1] @ bias[1, out]) so that every
    // backend gets it from the kernel it already has; ones in bias's dtype
    // (exact in every float dtype) so both operands share one.
    Tensor ones = Tensor::full({n, 1}, 1.f, bias.dtype(), x.device());
    be.gemm(ones, false, bias.view({1, out_f}), false, y2, 1.f, 1.f);
  }
  std::vector<const Tensor*> inputs{&x};
  for (const Tensor& t : w_parts) inputs.push_back(&t);
  for (const Tensor& t : b_parts) inputs.push_back(&t);
  if (!any_requires_grad(inputs)) return out;
  mark_output(out);
  tape().record("linear", [x, w, bias, w_parts, b_parts, out, n, in, out_f, alpha]() {
    Tensor dy = take_grad(out);
    if (!dy.defined()) return;
    Backend& b = backend_for(dy.device());
    Tensor dy2 = dy.view({n, out_f});
    // Hands each part its rows of a gradient computed for the whole stack.
    auto distribute = [](const std::vector<Tensor>& parts, const Tensor& whole) {
      if (parts.size() == 1) return accumulate_grad(parts[0], whole);
      int64_t row = 0;
      for (const Tensor& p : parts) {
        accumulate_grad(p, whole.slice0(row, row + p.dim(0)));
        row += p.dim(0);
      }
    };
    auto any_grad = [](const std::vector<Tensor>& parts) {
      for (const Tensor& p : parts)
        if (p.requires_grad()) return true;
      return false;
    };
    if (x.requires_grad()) {
      // dx = dy @ w, added to x's gradient by the GEMM itself (beta = 1)
      // when x already has one (projections that share their input).
      GradSlot slot = grad_slot_in_place(x, dy.device());
      Tensor dx = slot.dst.view({n, in});
      b.gemm(dy2, false, w, false, dx, alpha, slot.prior.defined() ? 1.f : 0.f);  // [N, out] @ [out, in]
      commit_grad(x, slot);
    }
    if (w_parts.size() == 1 && w_parts[0].requires_grad()) {
      // dW into the weight's gradient with beta = 1 when it has one (the
      // micro-batches of gradient accumulation after the first): no separate
      // add over the whole gradient. The GEMM writes any float dtype, so the
      // gradient's dtype (the weight's) needs no fallback.
      GradSlot slot = grad_slot_in_place(w_parts[0], dy.device());
      Tensor dw = slot.dst.view(w.shape());
      // [out, N] @ [N, in]
      b.gemm(dy2, true, x.view({n, in}), false, dw, alpha, slot.prior.defined() ? 1.f : 0.f);
      commit_grad(w_parts[0], slot);
    } else if (any_grad(w_parts)) {
      // Several parts: dW whole, each part accumulating its row block.
      Tensor dw = empty_like(w, dy.device());
      b.gemm(dy2, true, x.view({n, in}), false, dw, alpha, 0.f);  // [out, N] @ [N, in]
      distribute(w_parts, dw);
    }
    if (bias.defined() && any_grad(b_parts)) {
      Tensor db = Tensor::zeros({1, out_f}, bias.dtype(), dy.device());
      if (n > 0) {
        Tensor ones = Tensor::full({n, 1}, 1.f, dy.dtype(), dy.device());
        b.gemm(ones, true, dy2, false, db, 1.f, 0.f);  // column sums of dy
      }
      distribute(b_parts, db.view({out_f}));
    }
  });
  return out;
}

void check_linear_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_float(op, "x", x);
  check_float(op, "w", w);  // may differ from x's dtype (e.g. f32 x, bf16 w)
  check_same_device(op, "x", x, "w", w);
  EL_ENSURE(w.ndim() == 2, "ops::{}: w is {}, expected [out_features, in_features]", op, desc(w));
  EL_ENSURE(x.ndim() >= 1 && x.dim(-1) == w.dim(1),
            "ops::{}: x {} does not match w {} (x's last dim must equal in_features {})", op,
            desc(x), desc(w), w.dim(1));
  if (bias.defined()) {
    check_float(op, "bias", bias);
    EL_ENSURE(bias.dtype() == x.dtype() || bias.dtype() == w.dtype(),
              "ops::{}: bias is {}, expected the dtype of x {} or of w {}", op, desc(bias),
              desc(x), desc(w));
    check_same_device(op, "x", x, "bias", bias);
    EL_ENSURE(bias.numel() == w.dim(0) && bias.ndim() == 1,
              "ops::{}: bias {} does not match w {} (expected [{}])", op, desc(bias), desc(w),
              w.dim(0));
  }
}

}  // namespace

Tensor stacked_view(const std::vector<Tensor>& parts) {
  auto impl = std::make_shared<TensorImpl>();
  const TensorImpl& first = *parts.front().impl();
  impl->storage = first.storage;
  impl->offset_bytes = first.offset_bytes;
  impl->dtype = first.dtype;
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.dim(0);
  if (first.shape.size() == 2) {
    impl->shape = {rows, first.shape[1]};
    impl->strides = {first.shape[1], 1};
  } else {
    impl->shape = {rows};
    impl->strides = {1};
  }
  return Tensor(impl);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, float alpha) {
  check_linear_args("linear", x, w, bias);
  return linear_parts(x, w, bias, {w},
                      bias.defined() ? std::vector<Tensor>{bias} : std::vector<Tensor>{}, alpha);
}

bool rows_are_stacked(const std::vector<Tensor>& parts) {
  if (parts.empty() || !parts[0].defined()) return false;
  const Tensor& first = parts[0];
  const char* next = static_cast<const char*>(first.raw());
  for (const Tensor& p : parts) {
    if (!p.defined() || !p.is_contiguous() || p.dtype() != first.dtype() ||
        p.impl()->storage != first.impl()->storage || p.ndim() != first.ndim() ||
        p.ndim() < 1 || p.ndim() > 2 || (p.ndim() == 2 && p.dim(1) != first.dim(1)) ||
        static_cast<const char*>(p.raw()) != next) {
      return false;
    }
    next += p.nbytes();
  }
  return true;
}

Tensor linear_stacked(const Tensor& x, const std::vector<Tensor>& weights,
                      const std::vector<Tensor>& biases) {
  EL_ENSURE(rows_are_stacked(weights),
            "ops::linear_stacked: the {} weights are not consecutive row blocks of one buffer",
            weights.size());
  EL_ENSURE(biases.empty() || (biases.size() == weights.size() && rows_are_stacked(biases)),
            "ops::linear_stacked: {} biases for {} weights, expected none or one stacked bias each",
            biases.size(), weights.size());
  for (size_t i = 0; i < biases.size(); ++i) {
    EL_ENSURE(biases[i].ndim() == 1 && biases[i].dim(0) == weights[i].dim(0),
              "ops::linear_stacked: bias {} is {}, expected [{}]", i, desc(biases[i]),
              weights[i].dim(0));
  }
  const Tensor w = stacked_view(weights);
  const Tensor bias = biases.empty() ? Tensor() : stacked_view(biases);
  check_linear_args("linear_stacked", x, w, bias);
  return linear_parts(x, w, bias, weights, biases, 1.f);
}

std::vector<Tensor> linear_split(const Tensor& x, const Tensor& w,
                                 const std::vector<int64_t>& sizes, const Tensor& bias) {
  check_linear_args("linear_split", x, w, bias);
  int64_t total = 0;
  for (int64_t s : sizes) {
    EL_ENSURE(s > 0, "ops::linear_split: part sizes must be positive, got {}", s);
    total += s;
  }
  EL_ENSURE(!sizes.empty() && total == w.dim(0),
            "ops::linear_split: the {} parts have {} rows in all, w {} has {}", sizes.size(),
            total, desc(w), w.dim(0));
  const int64_t in = w.dim(1);
  const int64_t n = in == 0 ? 0 : x.numel() / in;
  const Device dev = x.device();
  Backend& be = backend_for(dev);
  const Tensor x2 = x.view({n, in});
  // The bias as a rank-1 GEMM per part, as in linear_parts.
  const Tensor ones = bias.defined() && n > 0 ? Tensor::full({n, 1}, 1.f, bias.dtype(), dev)
                                              : Tensor();
  std::vector<Tensor> parts;
  int64_t row = 0;
  for (int64_t s : sizes) {
    Shape shape = x.shape();
    shape.back() = s;
    Tensor p = Tensor::empty(shape, x.dtype(), dev);  // activation dtype
    Tensor p2 = p.view({n, s});
    be.gemm(x2, false, w.slice0(row, row + s), true, p2, 1.f, 0.f);  // [N, in] @ [s, in]^T
    if (ones.defined()) {
      be.gemm(ones, false, bias.slice0(row, row + s).view({1, s}), false, p2, 1.f, 1.f);
    }
    parts.push_back(p);
    row += s;
  }
  if (!any_requires_grad({&x, &w, &bias})) return parts;
  for (Tensor& p : parts) mark_output(p);
  // One closure for all parts, so that dW and db are one buffer each (one
  // accumulation into w's and bias's gradient) and dx is summed by the GEMMs.
  tape().record("linear_split", [x, w, bias, parts, sizes, n, in]() {
    std::vector<Tensor> dys;
    Tensor first;  // a defined dy (its dtype is every dy's: the parts')
    for (size_t i = 0; i < parts.size(); ++i) {
      Tensor g = take_grad(parts[i]);
      if (g.defined()) g = g.view({n, sizes[i]});
      if (!first.defined()) first = g;
      dys.push_back(g);
    }
    if (!first.defined()) return;
    const Device d = first.device();
    const Tensor x2 = x.view({n, in});
    Backend& b = backend_for(d);
    if (x.requires_grad()) {
      // dx = sum_i dy_i @ w_i, each GEMM adding to the previous ones (and to
      // x's gradient so far, as in linear).
      GradSlot slot = grad_slot_in_place(x, d);
      Tensor dx = slot.dst.view({n, in});
      float beta = slot.prior.defined() ? 1.f : 0.f;
      int64_t r = 0;
      for (size_t i = 0; i < dys.size(); ++i) {
        if (dys[i].defined()) {
          // [N, s] @ [s, in]
          b.gemm(dys[i], false, w.slice0(r, r + sizes[i]), false, dx, 1.f, beta);
          beta = 1.f;
        }
        r += sizes[i];
      }
      commit_grad(x, slot);
    }
    if (w.requires_grad()) {
      // Each part's dW rows straight into w's gradient, added by the GEMM
      // (beta = 1) when w already has one, as in linear.
      GradSlot slot = grad_slot_in_place(w, d);
      const float beta = slot.prior.defined() ? 1.f : 0.f;
      int64_t r = 0;
      for (size_t i = 0; i < dys.size(); ++i) {
        Tensor rows = slot.dst.slice0(r, r + sizes[i]);
        if (dys[i].defined()) {
          b.gemm(dys[i], true, x2, false, rows, 1.f, beta);  // [s, N] @ [N, in]
        } else if (beta == 0.f) {
          b.fill(rows, 0.f);  // no gradient flowed into this part
        }
        r += sizes[i];
      }
      commit_grad(w, slot);
    }
    if (bias.defined() && bias.requires_grad()) {
      Tensor db = Tensor::zeros({bias.dim(0)}, bias.dtype(), d);
      if (n > 0) {
        const Tensor ones_dy = Tensor::full({n, 1}, 1.f, first.dtype(), d);
        int64_t r = 0;
        for (size_t i = 0; i < dys.size(); ++i) {
          Tensor db_i = db.slice0(r, r + sizes[i]).view({1, sizes[i]});
          if (dys[i].defined()) b.gemm(ones_dy, true, dys[i], false, db_i, 1.f, 0.f);  // col sums
          r += sizes[i];
        }
      }
      accumulate_grad(bias, db);
    }
  });
  return parts;
}

Tensor embedding(const Tensor& ids, const Tensor& table) {
  check_dtype("embedding", "ids", ids, DType::i32);
  check_float("embedding", "table", table);
  check_same_device("embedding", "ids", ids, "table", table);
  EL_ENSURE(table.ndim() == 2, "ops::embedding: table is {}, expected [V, C]", desc(table));
  Shape out_shape = ids.shape();
  out_shape.push_back(table.dim(1));
  // The table's dtype becomes the model's activation dtype from here on.
  Tensor out = Tensor::empty(out_shape, table.dtype(), ids.device());
  backend_for(ids.device()).embedding_forward(ids, table, out);
  if (any_requires_grad({&table})) {
    mark_output(out);
    tape().record("embedding", [ids, table, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dtable = empty_like(table, dy.device());
      backend_for(dy.device()).embedding_backward(ids, dy, dtable);
      accumulate_grad(table, dtable);
    });
  }
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  check_float("add", "a", a);
  check_float("add", "b", b);
  check_same_dtype("add", "a", a, "b", b);
  check_same_device("add", "a", a, "b", b);
  check_same_shape("add", "a", a, "b", b);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  backend_for(a.device()).add(a, b, out);
  if (any_requires_grad({&a, &b})) {
    mark_output(out);
    tape().record("add", [a, b, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      const bool ga = a.requires_grad(), gb = b.requires_grad();
      // Both inputs get dy, one buffer shared (copy on write): the residual
      // stream and the branch read the same gradient.
      if (ga && gb) {
        share_grad(a, dy);
        share_grad(b, dy);
      } else {
        accumulate_grad(ga ? a : b, dy);
      }
    });
  }
  return out;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", "x", x);
  int inferred = 0;
  int64_t known = 1;
  for (int64_t d : shape) {
    EL_ENSURE(d >= -1, "ops::reshape: bad dimension {} in {} for x {}", d, shape_str(shape),
              desc(x));
    if (d == -1)
      ++inferred;
    else
      known *= d;
  }
  EL_ENSURE(inferred <= 1, "ops::reshape: more than one -1 in {} for x {}", shape_str(shape),
            desc(x));
  EL_ENSURE(inferred ? (known > 0 && x.numel() % known == 0) : known == x.numel(),
            "ops::reshape: cannot reshape x {} ({} elements) to {}", desc(x), x.numel(),
            shape_str(shape));
  Tensor out = x.view(shape);
  if (any_requires_grad({&x})) {
    mark_output(out);
    tape().record("reshape", [x, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      accumulate_grad(x, dy.view(x.shape()));
    });
  }
  return out;
}

}  // namespace el::ops
