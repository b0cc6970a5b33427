// cpu_f32_stage.h — internal to src/cpu: runs the f32 kernels on bf16/f16 tensors.
//
// Every CPU kernel is written once, for f32. CpuBackend wraps each call in an
// F32Stage, the one adapter that gives all of them bf16/f16 storage:
//
//   F32Stage s;
//   cpu::rmsnorm_forward(s.in(x), s.in(w), eps, s.out(y), s.out(rstd));
//   s.commit();
//
// f32 and integer tensors (ids, targets) pass straight through as the
// caller's own handles, so the f32 path costs one dtype test per argument and
// no copy. A bf16/f16 input is widened into an f32 scratch tensor; a bf16/f16
// output gets an f32 scratch tensor that commit() rounds (to nearest even)
// back into the caller's tensor; inout() also widens the output's current
// values first (GEMM with beta != 0, axpy, scale). Scratch comes from the
// caching allocator, so a training step reuses the same blocks. Why widen
// instead of writing bf16 kernels: the CPU backend is the reference, and one
// f32 implementation per kernel keeps it that; a narrow-dtype run on CPU then
// differs from the f32 run on the same rounded inputs only by the rounding of
// each kernel's outputs, which is what the precision tests check.
#pragma once

#include "core/tensor.h"

namespace el::cpu {

class F32Stage {
 public:
  F32Stage() = default;
  F32Stage(const F32Stage&) = delete;
  F32Stage& operator=(const F32Stage&) = delete;

  // A read-only argument as f32 (the tensor itself when f32 or not float).
  const Tensor& in(const Tensor& t);
  // A written argument: f32 stand-in whose values commit() copies into t.
  Tensor& out(Tensor& t);
  // Read and written: like out(), starting from t's current values.
  Tensor& inout(Tensor& t);
  // Rounds every staged output back into its tensor. Call after the kernel
  // returned; if the kernel threw, the outputs are left untouched.
  void commit();

 private:
  // Whether t is stored in a narrow float dtype that needs staging.
  static bool narrow(const Tensor& t) {
    return t.defined() && (t.dtype() == DType::bf16 || t.dtype() == DType::f16);
  }
  Tensor& stage(const Tensor& t, Tensor* write_back, bool copy_in);

  // attention_backward has the most tensor arguments (11).
  static constexpr int kMaxStaged = 12;
  Tensor scratch_[kMaxStaged];
  Tensor* write_back_[kMaxStaged] = {};
  int count_ = 0;
};

}  // namespace el::cpu
