// lora.h — LoRA, RSLoRA and DoRA (and PiSSA's initialisation) as a model
// transform (PEFT's semantics).
//
// apply_lora() freezes every parameter of a built model and replaces the
// dense Linear in each targeted slot (model.layers.N.self_attn.q_proj, ...)
// by a LoraLinear that holds the frozen layer plus trainable adapters:
//   LoRA / RSLoRA  y = base(x) + s * B(A(dropout(x)))       s = alpha / r  (RSLoRA: alpha / sqrt(r))
//   DoRA           y = m / ||W + s B A||_row * (x W^T + s B A dropout(x)) + bias      (dropout = 0)
//                  y = base(x) + (m/n - 1) * (dropout(x) W^T) + m/n * s B A dropout(x) (dropout > 0)
// with A[r, in], B[out, r], the magnitude m[out] (DoRA) and n = ||W + s B A||
// per output row. As in PEFT (and the DoRA paper's section 4.3), n is treated
// as a constant in the backward: the gradients are the exact gradients of
// that forward, and equal PEFT's (tests/finetune, fixtures from
// tools/make_peft_fixtures.py). LoRA+ is not a forward change: the
// optimizer scales the learning rate of every lora_B (train/optimizer.h).
// The forward of the model never changes; only the slots' objects do.
//
// Parameter names (collect_parameters) keep the base names and add PEFT's:
//   <slot>.weight (frozen), <slot>.bias (frozen), <slot>.lora_A.weight,
//   <slot>.lora_B.weight, <slot>.lora_magnitude_vector (DoRA)
// so a PEFT adapter file maps by prefixing "base_model.model." (peft_io.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "models/decoder_lm.h"
#include "nn/module.h"

namespace el::finetune {

struct LoraConfig {
  int64_t r = 64;       // the paper's default rank
  float alpha = 128.f;  // the paper's default: alpha = 2r
  float dropout = 0.f;  // on the adapter's input, training only
  // Slots that get adapters: a projection name (the last component of the
  // slot path, e.g. "q_proj": every layer's) or a whole slot path
  // ("model.layers.3.self_attn.q_proj", as PEFT's saved configs list them).
  // By default every projection of every block, as in the paper.
  std::vector<std::string> target_modules = {"q_proj", "k_proj",    "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  bool use_rslora = false;
  bool use_dora = false;
  // PEFT's init_lora_weights: kaiming (true: A ~ kaiming-uniform(a = sqrt 5),
  // B = 0), gaussian (A ~ N(0, 1/r), B = 0). B = 0 makes the adapted model
  // start equal to the base model. pissa ("pissa": finetune/pissa.h): A and B
  // from the top-r SVD of each base weight, which becomes the residual
  // W - s B A, so the model also starts equal to the base; it changes the
  // base weights, and works with DoRA and RSLoRA as in peft.
  enum class Init { kaiming, gaussian, pissa } init = Init::kaiming;
  uint64_t seed = 0;  // initialisation and dropout masks

  float scaling() const;  // alpha / r, or alpha / sqrt(r) with RSLoRA
};

// Checks r > 0, alpha > 0, 0 <= dropout < 1, known target names. The error
// names the field and what was expected.
Status validate_lora_config(const LoraConfig& config);

// Shared by the adapters of one model: the trainer advances `step` every
// micro-batch (a new dropout mask) and clears `training` for evaluation.
struct AdapterRuntime {
  uint64_t seed = 0;
  uint64_t step = 0;
  bool training = true;
};

class LoraLinear final : public LinearLayer {
 public:
  // base must be a dense Linear (its weight [out, in] may be a row block of a
  // stacked buffer); module_index makes each adapter's dropout mask its own.
  // With Init::pissa, A and B start at zero (no draw from rng): apply_lora
  // then runs pissa_init (finetune/pissa.h), which can fail and so is not here.
  LoraLinear(std::unique_ptr<Linear> base, const LoraConfig& config, uint64_t module_index,
             std::shared_ptr<const AdapterRuntime> runtime, Rng& rng);

  Tensor forward(const Tensor& x) const override;
  void collect_parameters(const std::string& prefix, ParameterList& out) const override;
  int64_t in_features() const override { return base_->in_features(); }
  int64_t out_features() const override { return base_->out_features(); }

  const Linear& base() const { return *base_; }
  bool is_dora() const { return magnitude.defined(); }
  float scaling() const { return scaling_; }
  // DoRA's 1 / ||W + s B A|| per output row, f32 [out], computed without
  // gradient (PEFT detaches it too).
  Tensor weight_inv_norm() const;
  // The merged dense weight: W + s B A (LoRA), m / ||W + s B A|| * (W + s B A) (DoRA).
  Tensor merged_weight() const;

  Tensor lora_A;     // [r, in], trainable
  Tensor lora_B;     // [out, r], trainable
  Tensor magnitude;  // [out], DoRA only, trainable

 private:
  std::unique_ptr<Linear> base_;
  float scaling_;
  float dropout_;
  uint64_t module_index_;
  std::shared_ptr<const AdapterRuntime> runtime_;
};

struct LoraSummary {
  std::shared_ptr<AdapterRuntime> runtime;  // advance per micro-batch; clear training for eval
  int64_t adapted_modules = 0;
  int64_t trainable_parameters = 0;
  int64_t total_parameters = 0;  // base + adapters
};

// The transform. Errors: an invalid config, a target that matches no slot, a
// targeted slot that does not hold a dense Linear (already adapted, or
// quantized); with Init::pissa also r > min(out, in) of a targeted weight, a
// non-float or non-finite weight. On error the model is left unchanged (the
// one exception: LAPACK failing on finite weights half-way through PiSSA,
// which the error then says). PiSSA costs a full SVD per targeted weight.
Result<LoraSummary> apply_lora(DecoderLM& model, const LoraConfig& config);

// Folds every adapter into its base weight and puts dense Linear layers back
// in the slots (the model's forward is then the adapted one, at base cost).
// The merged layers' parameters are trainable again, like a freshly built
// model's. A no-op on a model without adapters.
void merge_lora(DecoderLM& model);

// The parameters that require gradients (what the optimizer should get: a
// frozen base then costs no optimizer state).
ParameterList trainable_parameters(const DecoderLM& model);

}  // namespace el::finetune
