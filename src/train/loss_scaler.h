// loss_scaler.h — dynamic loss scaling for fp16 training.
//
// f16 gradients underflow (below 6e-5 they lose precision, below 6e-8 they
// are zero) long before f32 ones do. The trainer therefore backpropagates
// scale * loss (Tape::backward's seed) and divides the scale out again in the
// optimizer (AdamWStep::grad_scale). The scale adapts:
//   * after every step whose gradients are all finite it counts a good step,
//     and after growth_interval consecutive good steps it doubles;
//   * a step with any NaN/inf gradient (Backend::all_finite) is an overflow:
//     the optimizer step is skipped, the scale halves (never below
//     min_scale) and the count restarts.
// This is the scheme of Micikevicius et al., "Mixed Precision Training"
// (2018), with PyTorch GradScaler's defaults (2^16, x2 per 2000 steps, x0.5).
// The state (scale, good-step count) goes into checkpoints so a resumed run
// continues identically.
#pragma once

#include <cstdint>

#include "nn/module.h"

namespace el {

struct LossScalerConfig {
  float initial_scale = 65536.0f;  // 2^16
  int64_t growth_interval = 2000;  // consecutive finite steps before doubling
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  float min_scale = 1.0f;
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& config = {});

  // The seed of the next backward.
  float scale() const { return scale_; }
  // Consecutive finite steps since the last change of scale.
  int64_t good_steps() const { return good_steps_; }

  // Records one step's outcome and adapts the scale. Returns grads_finite:
  // true means apply the optimizer step (with the scale that was used,
  // read before calling update), false means skip it.
  bool update(bool grads_finite);

  // Restores a checkpointed state (scale > 0, good_steps >= 0).
  Status set_state(float scale, int64_t good_steps);

 private:
  LossScalerConfig config_;
  float scale_;
  int64_t good_steps_ = 0;
};

// True when every parameter gradient is free of NaN and inf (parameters
// without a gradient are skipped).
bool grads_all_finite(const ParameterList& params);

}  // namespace el
