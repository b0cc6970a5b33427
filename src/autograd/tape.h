// tape.h — reverse-mode autograd by a recorded tape.
//
// Each differentiable op (ops/ops.h) computes its output and, when gradients
// are enabled and an input requires them, appends a closure to the current
// thread's Tape. The closure captures what the backward needs (inputs, saved
// statistics) and, when run, reads the output's .grad and accumulates into the
// inputs' .grad. Tape::backward(loss) seeds dloss = 1 (or the fp16 loss
// scale) and runs the closures in reverse order, then clears the tape
// (freeing the saved activations).
//
// Why a tape and not a graph of nodes: a decoder LM's forward is a straight
// line of ops, so recording order is already a valid reverse topological
// order; there is no graph to sort and no reference cycle to break. Leaves
// (parameters) keep their .grad until the optimizer zeroes it; the gradient of
// an intermediate result is freed as soon as its producer has consumed it.
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace el {

class Tape {
 public:
  using BackwardFn = std::function<void()>;

  void record(const char* op_name, BackwardFn fn);
  // Seeds d(loss)/d(loss) = seed for a one-element tensor, runs the recorded
  // closures last to first and clears the tape. A seed other than 1 scales
  // every gradient by it: fp16 training passes its loss scale (so small
  // gradients do not flush to zero) and divides it out in the optimizer.
  void backward(const Tensor& loss, float seed = 1.0f);
  void clear();
  size_t size() const { return nodes_.size(); }

 private:
  struct Node {
    const char* op_name;
    BackwardFn fn;
  };
  std::vector<Node> nodes_;
};

// The calling thread's tape.
Tape& tape();

// Whether ops record onto the tape (on by default; off inside a NoGrad scope).
bool grad_enabled();

class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool prev_;
};

// True if gradients are on and any of the tensors requires them.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(std::span<const Tensor* const> inputs);

// Marks an op's output as a non-leaf that requires grad.
void mark_output(Tensor& out);

// t.grad += g; takes ownership of g when t has no grad yet, so the caller must
// not hand the same buffer to two tensors (clone one of them). No-op if t does
// not require grad. The gradient keeps t's dtype: a g of another dtype is
// converted first (rounded to nearest even when t is bf16/f16).
void accumulate_grad(const Tensor& t, const Tensor& g);

// Gives t the gradient g without taking ownership, because g is also handed
// to another tensor (both inputs of an add): no copy is made, and the first
// later accumulation into t writes a new buffer instead of adding in place.
void share_grad(const Tensor& t, const Tensor& g);

// For backward kernels that can add their result to what is already there
// (a GEMM with beta = 1, the fused RMSNorm backward), which saves a separate
// accumulation pass over the gradient:
//   GradSlot s = grad_slot(x);              // where x's total gradient goes
//   kernel(..., /*out=*/s.dst, /*add=*/s.prior);  // dst = result (+ prior)
//   commit_grad(x, s);
// dst is shaped and typed like x. prior is x's gradient so far (undefined if
// none) and dst aliases it when x owns it; when it is shared, dst is a fresh
// buffer and the kernel must read prior and write dst. When x does not
// require a gradient, dst is undefined and the caller skips the work.
struct GradSlot {
  Tensor dst;
  Tensor prior;
  bool in_place() const { return prior.defined() && dst.defined() && prior.raw() == dst.raw(); }
};
GradSlot grad_slot(const Tensor& t, Device device);
// grad_slot for kernels that add in place into dst (a GEMM with beta = 1):
// dst already holds the gradient so far (copied there when dst is a fresh
// buffer), so the kernel runs with beta = 1 exactly when prior is defined.
GradSlot grad_slot_in_place(const Tensor& t, Device device);
void commit_grad(const Tensor& t, const GradSlot& slot);

// The gradient flowing into an op output, detached from it when the output is
// an intermediate (so its memory is freed once the backward closure ends).
// Undefined tensor if nothing flowed back.
Tensor take_grad(const Tensor& out);

}  // namespace el
