// optimizer.h — AdamW with decoupled weight decay, global-norm clipping and
// the cosine learning-rate schedule with linear warm-up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/module.h"
#include "ops/backend.h"

namespace el {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// Learning rate at a 0-based step: linear warm-up from lr/warmup to lr over
// `warmup` steps, then cosine decay to min_lr at total_steps (held after).
struct CosineSchedule {
  float max_lr = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float lr_at(int64_t step) const;
};

class AdamW {
 public:
  // Weight decay applies to matrices only (ndim >= 2); norms and biases are
  // not decayed (the nanoGPT / Megatron convention). A parameter stored in
  // bf16/f16 gets an f32 master copy, initialised from its current values;
  // the update runs on the master (Backend::adamw_update_master) and the
  // parameter is the master rounded to nearest even.
  AdamW(const ParameterList& params, const AdamWConfig& config);

  // One update of every parameter that has a gradient; grad_scale multiplies
  // the gradients first (clipping, 1/grad_accum, 1/loss scale). Increments
  // steps_taken().
  void step(float lr, float grad_scale = 1.0f);
  // Multiplies the learning rate of every parameter whose name ends with
  // `name_suffix` by `factor` (LoRA+: ".lora_B.weight" at 16x). Returns how
  // many parameters it matched.
  int64_t scale_lr(const std::string& name_suffix, float factor);
  void zero_grad();
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }

  // Optimizer state for checkpoints: (name, m) and (name, v) per parameter,
  // and the f32 master of a bf16/f16 parameter.
  struct Slot {
    NamedParameter param;
    Tensor m, v;  // f32, the parameter's shape
    bool decay;
    Tensor master;  // f32 copy of a non-f32 parameter; undefined for f32 ones
    float lr_scale = 1.0f;  // see scale_lr
  };
  std::vector<Slot>& slots() { return slots_; }

 private:
  // One adamw_update_many call over the slots of one (decay, lr_scale) group.
  void update_group(float lr, float grad_scale, bool decay, float lr_scale);

  std::vector<Slot> slots_;
  AdamWConfig config_;
  int64_t step_ = 0;
};

// sqrt(sum of squared gradients over all parameters with a gradient).
double global_grad_norm(const ParameterList& params);
// The factor that brings the global norm down to max_norm (1 if already below
// or if max_norm <= 0).
float clip_scale(double grad_norm, float max_norm);

}  // namespace el
