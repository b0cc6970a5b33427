// loss_scaler.cpp — LossScaler (loss_scaler.h).
#include "train/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "ops/backend.h"

namespace el {

LossScaler::LossScaler(const LossScalerConfig& config)
    : config_(config), scale_(config.initial_scale) {}

bool LossScaler::update(bool grads_finite) {
  if (!grads_finite) {
    scale_ = std::max(scale_ * config_.backoff_factor, config_.min_scale);
    good_steps_ = 0;
    return false;
  }
  if (++good_steps_ >= config_.growth_interval) {
    const float grown = scale_ * config_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;  // never grow into inf
    good_steps_ = 0;
  }
  return true;
}

Status LossScaler::set_state(float scale, int64_t good_steps) {
  if (!(scale > 0.0f) || !std::isfinite(scale) || good_steps < 0) {
    return make_error(fmt::format("invalid loss scaler state: scale {}, good steps {}", scale,
                                  good_steps),
                      "loss scaler", "the scale must be a positive finite number");
  }
  scale_ = scale;
  good_steps_ = good_steps;
  return Status::Ok();
}

bool grads_all_finite(const ParameterList& params) {
  for (const auto& p : params) {
    if (!p.tensor.has_grad()) continue;
    if (!backend_for(p.tensor.device()).all_finite(p.tensor.grad())) return false;
  }
  return true;
}

}  // namespace el
