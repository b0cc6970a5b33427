// cpu_f32_stage.cpp — F32Stage (cpu_f32_stage.h): f32 scratch for bf16/f16 arguments.
#include "cpu/cpu_f32_stage.h"

#include "cpu/cpu_kernels.h"

namespace el::cpu {

Tensor& F32Stage::stage(const Tensor& t, Tensor* write_back, bool copy_in) {
  EL_ENSURE(count_ < kMaxStaged, "cpu F32Stage: more than {} staged tensors", kMaxStaged);
  EL_ENSURE(t.device().is_cpu() && t.is_contiguous(),
            "cpu kernel: {} tensor {} must be a contiguous CPU tensor", dtype_name(t.dtype()),
            shape_str(t.shape()));
  Tensor& s = scratch_[count_];
  s = Tensor::empty(t.shape(), DType::f32, Device::cpu());
  if (copy_in) copy(t, s);
  write_back_[count_] = write_back;
  ++count_;
  return s;
}

const Tensor& F32Stage::in(const Tensor& t) {
  if (!narrow(t)) return t;
  return stage(t, nullptr, true);
}

Tensor& F32Stage::out(Tensor& t) {
  if (!narrow(t)) return t;
  return stage(t, &t, false);
}

Tensor& F32Stage::inout(Tensor& t) {
  if (!narrow(t)) return t;
  return stage(t, &t, true);
}

void F32Stage::commit() {
  for (int i = 0; i < count_; ++i) {
    if (write_back_[i]) copy(scratch_[i], *write_back_[i]);
  }
}

}  // namespace el::cpu
