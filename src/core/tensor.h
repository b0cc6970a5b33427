// tensor.h — the engine's n-dimensional array.
//
// A Tensor is a cheap handle (shared_ptr) to a TensorImpl: storage (bytes from
// the device's allocator), byte offset, shape, strides (in elements), dtype and
// device, plus the autograd fields (requires_grad, grad, is_leaf). Copying a
// Tensor copies the handle, never the data. Kernels work on contiguous tensors;
// view() and slice0() share storage (ops::reshape is the taped view), and
// clone() makes a contiguous copy.
//
// Shapes use the letters B (batch), T (time), C (channels), H (heads),
// D (head dim), V (vocab), N (rows = B*T) in comments throughout the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace el {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

// Bytes owned by one allocator; freed back to it when the last tensor goes.
class Storage {
 public:
  Storage(void* data, size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool shared_gradient = false;  // see Tensor::mark_shared_gradient

 private:
  void* data_;
  size_t bytes_;
  Device device_;
};

class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t offset_bytes = 0;
  Shape shape;
  std::vector<int64_t> strides;  // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool is_leaf = true;              // false for results of recorded ops
  std::shared_ptr<TensorImpl> grad; // same shape/device as the tensor
  std::string name;                 // parameter name, for errors and checkpoints
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Allocation. Throw el::Exception only if the allocator fails (e.g. out of
  // GPU memory); use try_empty() where the caller wants the Error instead.
  static Result<Tensor> try_empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  // Host data (f32 / i32) into a new CPU tensor of the given shape.
  static Tensor from_floats(const std::vector<float>& values, const Shape& shape);
  static Tensor from_ints(const std::vector<int32_t>& values, const Shape& shape);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return static_cast<int>(impl_->shape.size()); }
  int64_t numel() const { return shape_numel(impl_->shape); }
  const std::vector<int64_t>& strides() const { return impl_->strides; }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  bool is_contiguous() const;

  void* raw() const { return static_cast<char*>(impl_->storage->data()) + impl_->offset_bytes; }
  template <class T>
  T* data() const { return static_cast<T*>(raw()); }

  // Same storage, new shape (tensor must be contiguous; numel must match).
  // Not recorded on the tape: use ops::reshape inside differentiable code.
  Tensor view(const Shape& shape) const;
  // Same storage, a range of the first dimension.
  Tensor slice0(int64_t begin, int64_t end) const;
  // New contiguous tensor with the same values (a copy even if contiguous).
  Tensor clone() const;
  // Copy to host as f32 (converting bf16/f16/ints), for tests and reporting.
  std::vector<float> to_floats() const;
  // Copy into this tensor from another of the same shape (any dtype/device
  // pair the backends can convert).
  void copy_from(const Tensor& src);
  // This tensor on `device`: itself when it is already there, else a copy
  // (same shape and dtype; contiguous tensors).
  Tensor to(Device device) const;
  // Element read for tests/debugging (contiguous CPU tensors).
  float item() const;

  // Autograd fields.
  bool requires_grad() const { return impl_->requires_grad; }
  Tensor& set_requires_grad(bool v) { impl_->requires_grad = v; return *this; }
  bool is_leaf() const { return impl_->is_leaf; }
  bool has_grad() const { return impl_->grad != nullptr; }
  Tensor grad() const { return Tensor(impl_->grad); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  void zero_grad() { impl_->grad.reset(); }
  // Autograd marks a buffer handed as the gradient of two tensors (both
  // inputs of an add); such a buffer, and every view of it, is never written
  // in place (accumulation copies on write). The mark lives on the storage.
  void mark_shared_gradient() const { impl_->storage->shared_gradient = true; }
  bool is_shared_gradient() const { return impl_->storage->shared_gradient; }

  const std::string& name() const { return impl_->name; }
  Tensor& set_name(std::string n) { impl_->name = std::move(n); return *this; }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace el
