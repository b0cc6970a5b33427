// ops_common.h — internal to src/ops: argument checks shared by the op files.
//
// Every check throws el::Exception through EL_ENSURE (a bad argument to an op
// is a bug in the calling model code) with a message that names the op, the
// argument and its dtype+shape, e.g.
//   "ops::linear: x f32[2, 7] does not match w f32[4, 5] (x's last dim 7 != in_features 5)".
//
// Dtype rule shared by every op: the first float input sets the op's
// activation dtype (f32, bf16 or f16); every other float input must have it
// (check_same_dtype), except linear's weight and bias, and the f32-only
// tables and statistics (rope's inv_freq, rstd, mean, lse, the loss).
// Outputs take the activation dtype; a gradient takes the dtype of the
// tensor it belongs to.
#pragma once

#include <string>

#include "autograd/tape.h"
#include "core/tensor.h"
#include "ops/backend.h"

namespace el::ops::detail {

// "f32[2, 3]" or "undefined".
inline std::string desc(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return std::string(dtype_name(t.dtype())) + shape_str(t.shape());
}

inline void check_defined(const char* op, const char* name, const Tensor& t) {
  EL_ENSURE(t.defined(), "ops::{}: {} is an undefined tensor", op, name);
  EL_ENSURE(t.is_contiguous(), "ops::{}: {} {} is not contiguous", op, name, desc(t));
}

inline void check_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  check_defined(op, name, t);
  EL_ENSURE(t.dtype() == want, "ops::{}: {} is {}, expected dtype {}", op, name, desc(t),
            dtype_name(want));
}

inline void check_float(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  EL_ENSURE(dtype_is_float(t.dtype()), "ops::{}: {} is {}, expected a float dtype", op, name,
            desc(t));
}

inline void check_same_dtype(const char* op, const char* an, const Tensor& a, const char* bn,
                             const Tensor& b) {
  EL_ENSURE(a.dtype() == b.dtype(),
            "ops::{}: {} is {} but {} is {} (an op's float inputs must share one dtype)", op, bn,
            desc(b), an, desc(a));
}

inline void check_same_device(const char* op, const char* an, const Tensor& a, const char* bn,
                              const Tensor& b) {
  EL_ENSURE(a.device() == b.device(), "ops::{}: {} is on {} but {} is on {}", op, an,
            a.device().str(), bn, b.device().str());
}

inline void check_same_shape(const char* op, const char* an, const Tensor& a, const char* bn,
                             const Tensor& b) {
  EL_ENSURE(a.shape() == b.shape(), "ops::{}: {} {} and {} {} must have the same shape", op, an,
            desc(a), bn, desc(b));
}

// A fresh f32 tensor shaped like t, on t's device.
inline Tensor empty_like_f32(const Tensor& t) {
  return Tensor::empty(t.shape(), DType::f32, t.device());
}

// A fresh tensor with t's shape and dtype on `device` (gradients: a gradient
// has the dtype of the tensor it belongs to).
inline Tensor empty_like(const Tensor& t, Device device) {
  return Tensor::empty(t.shape(), t.dtype(), device);
}

}  // namespace el::ops::detail
