#include "core/tensor.h"

#include <cstring>

#include "core/allocator.h"
#include "ops/backend.h"

namespace el {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

static std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Storage::Storage(void* data, size_t bytes, Device device)
    : data_(data), bytes_(bytes), device_(device) {}

Storage::~Storage() {
  auto a = allocator_for(device_);
  if (a.ok()) a.value()->deallocate(data_, bytes_);
}

Result<Tensor> Tensor::try_empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    if (d < 0) return make_error("negative dimension in shape " + shape_str(shape), "Tensor::empty");
  }
  EL_TRY_ASSIGN(Allocator * alloc, allocator_for(device));
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  EL_TRY_ASSIGN(void* p, alloc->allocate(bytes));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(p, bytes, device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return try_empty(shape, dtype, device).value();
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0f, dtype, device);
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}

Tensor Tensor::from_floats(const std::vector<float>& values, const Shape& shape) {
  EL_ENSURE(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_floats: {} values for shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DType::f32);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& values, const Shape& shape) {
  EL_ENSURE(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_ints: {} values for shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DType::i32);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  EL_ENSURE(i >= 0 && i < n, "dim({}) out of range for shape {}", i, shape_str(shape()));
  return impl_->shape[static_cast<size_t>(i)];
}

bool Tensor::is_contiguous() const { return impl_->strides == contiguous_strides(impl_->shape); }

Tensor Tensor::view(const Shape& shape) const {
  EL_ENSURE(is_contiguous(), "view() of a non-contiguous tensor {}", shape_str(this->shape()));
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      EL_ENSURE(infer < 0, "view(): more than one -1 in {}", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    EL_ENSURE(known > 0 && numel() % known == 0, "view(): cannot infer {} from {}",
              shape_str(shape), shape_str(this->shape()));
    s[static_cast<size_t>(infer)] = numel() / known;
  }
  EL_ENSURE(shape_numel(s) == numel(), "view(): {} has {} elements, {} has {}", shape_str(s),
            shape_numel(s), shape_str(this->shape()), numel());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset_bytes = impl_->offset_bytes;
  impl->shape = s;
  impl->strides = contiguous_strides(s);
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  EL_ENSURE(ndim() >= 1 && 0 <= begin && begin <= end && end <= dim(0),
            "slice0({}, {}) out of range for {}", begin, end, shape_str(shape()));
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->grad.reset();
  impl->requires_grad = false;
  impl->is_leaf = true;
  impl->shape[0] = end - begin;
  impl->offset_bytes += static_cast<size_t>(begin * impl_->strides[0]) * dtype_size(dtype());
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (this->device() == device) return *this;
  Tensor out = Tensor::empty(shape(), dtype(), device);
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  EL_ENSURE(src.numel() == numel(), "copy_from: {} into {}", shape_str(src.shape()),
            shape_str(shape()));
  EL_ENSURE(src.is_contiguous() && is_contiguous(), "copy_from needs contiguous tensors");
  // A cross-device copy is done by the non-CPU side's backend.
  const Device d = device().is_cpu() ? src.device() : device();
  backend_for(d).copy(src, *this);
}

std::vector<float> Tensor::to_floats() const {
  Tensor host = empty(shape(), DType::f32, Device::cpu());
  host.copy_from(*this);
  const float* p = host.data<float>();
  return std::vector<float>(p, p + numel());
}

float Tensor::item() const {
  EL_ENSURE(numel() >= 1, "item() of an empty tensor");
  return to_floats()[0];
}

}  // namespace el
