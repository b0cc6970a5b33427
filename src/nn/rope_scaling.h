// rope_scaling.h — RoPE inverse frequencies with the card's scaling applied.
//
// Checkpoints extended to long contexts change RoPE's frequencies instead of
// the positions (Llama 3.1/3.2's "llama3" rope_scaling, the older "linear"
// position interpolation). The model computes its inv_freq once from the card
// here; the kernels (ops::rope, ops::split_qkv_rope) are unchanged.
//
// The arithmetic follows transformers' modeling_rope_utils.py
// (_compute_linear_scaling_rope_parameters, _compute_llama3_parameters) op by
// op in f32, including the order of operations and which constants are
// rounded to f32, so the frequencies match a Hugging Face model's
// rotary_emb.inv_freq to the bit (tests/models compare them). Both types
// leave cos/sin unscaled (transformers' attention_factor 1.0).
#pragma once

#include <vector>

#include "core/tensor.h"
#include "nn/model_card.h"

namespace el {

// inv_freq[D/2] (D = card.effective_rotary_dims(): the head dim, or the
// card's rotary_dims) for a card with pos_encoding rope: 1 / theta^(2i/D), then
//   linear: divided by rope_scaling_factor;
//   llama3: wavelengths 2*pi/f above original/low_freq_factor divided by the
//           factor, below original/high_freq_factor kept, and in between a
//           smooth interpolation of the two.
// The card must be valid (validate_model_card).
std::vector<float> rope_inv_freq_values(const ModelCard& card);

// The same as an f32 tensor [D/2] on `device` (what DecoderLM holds).
Tensor rope_inv_freq_for(const ModelCard& card, Device device);

}  // namespace el
