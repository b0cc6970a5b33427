#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace el {

float CosineSchedule::lr_at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return max_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  }
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress =
      std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(min_lr + (max_lr - min_lr) * cosine);
}

AdamW::AdamW(const ParameterList& params, const AdamWConfig& config) : config_(config) {
  for (const auto& p : params) {
    if (!p.tensor.requires_grad()) continue;
    Slot s{p, Tensor::zeros(p.tensor.shape(), DType::f32, p.tensor.device()),
           Tensor::zeros(p.tensor.shape(), DType::f32, p.tensor.device()), p.tensor.ndim() >= 2,
           Tensor()};
    if (p.tensor.dtype() != DType::f32) {
      s.master = Tensor::empty(p.tensor.shape(), DType::f32, p.tensor.device());
      s.master.copy_from(p.tensor);  // exact: every bf16/f16 value is an f32
    }
    slots_.push_back(std::move(s));
  }
}

int64_t AdamW::scale_lr(const std::string& name_suffix, float factor) {
  int64_t n = 0;
  for (auto& s : slots_) {
    const std::string& name = s.param.name;
    if (name.size() >= name_suffix.size() &&
        name.compare(name.size() - name_suffix.size(), name_suffix.size(), name_suffix) == 0) {
      s.lr_scale *= factor;
      ++n;
    }
  }
  return n;
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  // One multi-tensor call per group of equal weight decay and learning-rate
  // scale: a GPU then launches a few kernels instead of one per tensor.
  std::vector<float> scales;
  for (const auto& s : slots_) {
    if (std::find(scales.begin(), scales.end(), s.lr_scale) == scales.end()) scales.push_back(s.lr_scale);
  }
  for (const float lr_scale : scales) {
    for (const bool decay : {true, false}) update_group(lr * lr_scale, grad_scale, decay, lr_scale);
  }
}

void AdamW::update_group(float lr, float grad_scale, bool decay, float lr_scale) {
  AdamWStep st;
  st.lr = lr;
  st.beta1 = config_.beta1;
  st.beta2 = config_.beta2;
  st.eps = config_.eps;
  st.weight_decay = decay ? config_.weight_decay : 0.0f;
  st.grad_scale = grad_scale;
  st.step = step_;
  std::vector<Tensor> grads;  // keeps the handles alive for the pointers below
  grads.reserve(slots_.size());
  std::vector<AdamWTensors> group;
  Backend* be = nullptr;
  for (auto& s : slots_) {
    if (s.decay != decay || s.lr_scale != lr_scale || !s.param.tensor.has_grad()) continue;
    grads.push_back(s.param.tensor.grad());
    group.push_back({&s.param.tensor, &grads.back(), s.master.defined() ? &s.master : nullptr,
                     &s.m, &s.v});
    be = &backend_for(s.param.tensor.device());
  }
  if (be) be->adamw_update_many(group, st);
}

void AdamW::zero_grad() {
  for (auto& s : slots_) s.param.tensor.zero_grad();
}

double global_grad_norm(const ParameterList& params) {
  // One reduction over all gradients (the parameters of a model share a device).
  std::vector<Tensor> grads;
  for (const auto& p : params) {
    if (p.tensor.has_grad()) grads.push_back(p.tensor.grad());
  }
  if (grads.empty()) return 0.0;
  return std::sqrt(backend_for(grads.front().device()).sum_squares_many(grads));
}

float clip_scale(double grad_norm, float max_norm) {
  if (max_norm <= 0 || !(grad_norm > max_norm)) return 1.0f;
  return static_cast<float>(max_norm / (grad_norm + 1e-6));
}

}  // namespace el
