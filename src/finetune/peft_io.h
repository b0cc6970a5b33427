// peft_io.h — LoRA / RSLoRA / DoRA adapters in PEFT's on-disk format.
//
// A PEFT adapter directory holds adapter_config.json and
// adapter_model.safetensors with tensors named
//   base_model.model.<slot>.lora_A.weight        [r, in]
//   base_model.model.<slot>.lora_B.weight        [out, r]
//   base_model.model.<slot>.lora_magnitude_vector [out]   (DoRA)
// where <slot> is the model's projection path (model.layers.0.self_attn.q_proj):
// our parameter names with the "base_model.model." prefix. Saving writes the
// config fields peft 0.21 reads (peft_type LORA, r, lora_alpha, lora_dropout,
// target_modules as the adapted slot paths, use_rslora, use_dora, bias none,
// task_type CAUSAL_LM); loading reads a directory peft wrote (or we did),
// applies adapters to exactly the slots the file has tensors for, and loads
// them. Features we do not implement (rank_pattern, alpha_pattern,
// layers_to_transform, modules_to_save, bias other than "none", other
// peft_types) are refused with the key named, never silently ignored.
#pragma once

#include <string>

#include "core/error.h"
#include "finetune/lora.h"
#include "models/decoder_lm.h"

namespace el::finetune {

inline constexpr const char* kPeftConfigFile = "adapter_config.json";
inline constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";
inline constexpr const char* kPeftPrefix = "base_model.model.";

// Writes `dir`/adapter_config.json and adapter_model.safetensors (each file
// atomically; the directory is created). Error when the model has no adapters.
// base_model: recorded as base_model_name_or_path (may be empty).
Status save_peft_adapter(const DecoderLM& model, const LoraConfig& config, const std::string& dir,
                         const std::string& base_model = "");

// The LoraConfig of an adapter_config.json (target_modules as written:
// names or slot paths; "all-linear" becomes every projection). Errors name the
// file and the key.
Result<LoraConfig> read_peft_config(const std::string& path);

// Applies the adapters of a PEFT directory to a plain model and loads their
// weights (converted to the model's dtype). Errors: unreadable/invalid config
// or weights, a tensor for a slot the model lacks, a shape that does not match
// (names the tensor, the expected and the found shape), lora_A without its
// lora_B (or DoRA's magnitude missing). The model is unchanged on error.
Result<LoraSummary> load_peft_adapter(DecoderLM& model, const std::string& dir);

}  // namespace el::finetune
