// freeze.h — freeze fine-tuning as a model transform: which parameters train.
//
// The paper's "freeze" method has two readings (spec §2.3), both offered:
//   last_k_trainable  only the last k decoder layers train (k = 2 in the paper's
//                     reading "last 2 layers trainable"); embeddings, the final
//                     norm and lm_head stay frozen (LlamaFactory's freeze tuning);
//   first_k_frozen    the first k decoder layers are frozen (k = 8), every layer
//                     after them trains, and so do the final norm and lm_head.
// The token embedding is frozen in both. The forward does not change; the
// optimizer should get trainable_parameters() (finetune/lora.h) so frozen
// weights cost no optimizer state.
#pragma once

#include <cstdint>

#include "core/error.h"
#include "models/decoder_lm.h"

namespace el::finetune {

struct FreezeConfig {
  enum class Mode { last_k_trainable, first_k_frozen } mode = Mode::last_k_trainable;
  int64_t k = 2;
};

struct FreezeSummary {
  int64_t trainable_parameters = 0;
  int64_t total_parameters = 0;
};

// Sets requires_grad on every parameter per the rule above. Error when k is
// not in [1, n_layer] (names the field and the model's layer count).
Result<FreezeSummary> apply_freeze(DecoderLM& model, const FreezeConfig& config);

}  // namespace el::finetune
