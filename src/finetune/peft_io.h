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
//
// PiSSA (init_lora_weights "pissa", finetune/pissa.h) changes the base
// weights: the adapter file holds A and B, and the frozen base is the
// residual W - s B0 A0 of the ORIGINAL base W's top-r SVD. Like peft's
// PeftModel.from_pretrained, load_peft_adapter rebuilds that residual (one
// SVD per adapted weight) before loading A and B, so a PiSSA adapter is only
// valid on the exact base weights it was made from: loaded on any other base
// (another checkpoint, a fine-tuned or re-quantized copy) it silently gives a
// different model. Saving writes init_lora_weights "pissa" and the current A
// and B. We do not convert PiSSA to plain LoRA (peft's
// path_initial_model_for_weight_conversion: A' = [A; A0], B' = [B, -B0] at
// rank 2r); merge_lora + a full checkpoint is the portable export.
// "pissa_niter_N" (randomized SVD) cannot be rebuilt and is refused; so are
// the other base-changing initialisations (olora, corda, loftq, lora_ga).
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
// names or slot paths; "all-linear" becomes every projection;
// init_lora_weights as above). Errors name the file and the key.
Result<LoraConfig> read_peft_config(const std::string& path);

// Applies the adapters of a PEFT directory to a plain model and loads their
// weights (converted to the model's dtype). Errors: unreadable/invalid config
// or weights, a tensor for a slot the model lacks, a shape that does not match
// (names the tensor, the expected and the found shape), lora_A without its
// lora_B (or DoRA's magnitude missing), PiSSA's checks (apply_lora). The
// model is unchanged on error. A PiSSA adapter first turns each adapted base
// weight into its SVD residual (see above).
Result<LoraSummary> load_peft_adapter(DecoderLM& model, const std::string& dir);

}  // namespace el::finetune
