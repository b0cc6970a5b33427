#include "autograd/tape.h"

#include "ops/backend.h"

namespace el {
namespace {
thread_local Tape t_tape;
thread_local bool t_grad_enabled = true;
}  // namespace

Tape& tape() { return t_tape; }
bool grad_enabled() { return t_grad_enabled; }

NoGrad::NoGrad() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGrad::~NoGrad() { t_grad_enabled = prev_; }

void Tape::record(const char* op_name, BackwardFn fn) {
  nodes_.push_back(Node{op_name, std::move(fn)});
}

void Tape::backward(const Tensor& loss, float seed) {
  EL_ENSURE(loss.numel() == 1, "backward() needs a one-element loss, got {}",
            shape_str(loss.shape()));
  if (loss.requires_grad()) {
    accumulate_grad(loss, Tensor::full(loss.shape(), seed, DType::f32, loss.device()));
  }
  {
    NoGrad no_grad;  // backward closures must not record
    for (size_t i = nodes_.size(); i-- > 0;) {
      nodes_[i].fn();
      nodes_[i].fn = nullptr;  // drop saved tensors as soon as possible
    }
  }
  clear();
}

void Tape::clear() { nodes_.clear(); }

bool any_requires_grad(std::span<const Tensor* const> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs) {
    if (t && t->defined() && t->requires_grad()) return true;
  }
  return false;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  return any_requires_grad(std::span<const Tensor* const>(inputs.begin(), inputs.size()));
}

void mark_output(Tensor& out) {
  out.set_requires_grad(true);
  out.impl()->is_leaf = false;
}

void accumulate_grad(const Tensor& t, const Tensor& g) {
  if (!t.defined() || !t.requires_grad() || !g.defined()) return;
  EL_ENSURE(g.numel() == t.numel(), "gradient of {} has shape {}, tensor has {}", t.name(),
            shape_str(g.shape()), shape_str(t.shape()));
  if (!t.has_grad()) {
    // Own the gradient buffer; view it in the tensor's shape.
    Tensor own = g.impl()->is_leaf && g.shape() == t.shape() ? g : g.view(t.shape());
    if (own.dtype() != t.dtype()) {
      Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
      c.copy_from(own);
      own = c;
    }
    const_cast<Tensor&>(t).set_grad(own);
    return;
  }
  Tensor acc = t.grad();
  Tensor add = g.view(acc.shape());
  if (add.dtype() != acc.dtype()) {  // backends get one dtype per elementwise kernel
    Tensor c = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
    c.copy_from(add);
    add = c;
  }
  if (acc.is_shared_gradient()) {
    // Copy on write: the buffer is also another tensor's gradient.
    Tensor sum = Tensor::empty(acc.shape(), acc.dtype(), acc.device());
    backend_for(t.device()).add(acc, add, sum);
    const_cast<Tensor&>(t).set_grad(sum);
    return;
  }
  backend_for(t.device()).axpy(1.0f, add, acc);
}

void share_grad(const Tensor& t, const Tensor& g) {
  if (!t.defined() || !t.requires_grad() || !g.defined()) return;
  if (t.has_grad() || g.dtype() != t.dtype()) {
    accumulate_grad(t, g);  // only reads g in these cases (adds or converts it)
    return;
  }
  EL_ENSURE(g.numel() == t.numel(), "gradient of {} has shape {}, tensor has {}", t.name(),
            shape_str(g.shape()), shape_str(t.shape()));
  g.mark_shared_gradient();
  const_cast<Tensor&>(t).set_grad(g.shape() == t.shape() ? g : g.view(t.shape()));
}

GradSlot grad_slot(const Tensor& t, Device device) {
  GradSlot s;
  if (!t.defined() || !t.requires_grad()) return s;
  if (t.has_grad()) {
    s.prior = t.grad();
    if (!s.prior.is_shared_gradient() && s.prior.device() == device && s.prior.is_contiguous()) {
      s.dst = s.prior;
      return s;
    }
  }
  s.dst = Tensor::empty(t.shape(), t.dtype(), device);
  return s;
}

GradSlot grad_slot_in_place(const Tensor& t, Device device) {
  GradSlot s = grad_slot(t, device);
  if (s.prior.defined() && !s.in_place()) s.dst.copy_from(s.prior);
  return s;
}

void commit_grad(const Tensor& t, const GradSlot& slot) {
  if (!slot.dst.defined() || !t.defined() || !t.requires_grad()) return;
  const_cast<Tensor&>(t).set_grad(slot.dst);
}

Tensor take_grad(const Tensor& out) {
  if (!out.has_grad()) return Tensor();
  Tensor g = out.grad();
  if (!out.is_leaf()) const_cast<Tensor&>(out).zero_grad();
  return g;
}

}  // namespace el
