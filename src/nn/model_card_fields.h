// model_card_fields.h — internal to nn/model_card*.cpp: which of a card's
// fields a non-Transformer block must leave at their defaults. Each entry is
// a field's YAML key and whether the card sets it (differs from the
// default), so one list drives both the checks of block: mamba and
// block: rwkv and the keys their parsers refuse.
#pragma once

#include <utility>
#include <vector>

#include "nn/model_card.h"

namespace el::card_fields {

using FieldSet = std::vector<std::pair<const char*, bool>>;

// The Transformer layer's fields: attention (heads, MLA, NSA), RoPE, the MLP
// kind and biases, sliding_window, parallel_residual, rotary_dims. Not d_ff
// (an RWKV layer's channel-mix width) and not moe_experts (check_moe's).
FieldSet transformer_fields(const ModelCard& c);
// The mamba_* fields.
FieldSet mamba_fields(const ModelCard& c);

}  // namespace el::card_fields
