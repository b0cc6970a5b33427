// model_card_rwkv6.h — internal to nn/model_card.cpp: the block: rwkv6 part
// of a model card (RWKV-6 "Finch", nn/rwkv6.h), kept apart as
// model_card_rwkv.h keeps RWKV-4's. The keys are documented in model_card.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/yaml_util.h"
#include "nn/model_card.h"
#include "nn/model_card_fields.h"

namespace el::rwkv6_card {

// The rwkv6_* keys (valid only with block: rwkv6).
const std::vector<std::string>& keys();

// Called for every card after rwkv_card::read. block: rwkv6: an error for
// any attention / MLP key present (naming it), d_ff read with its default
// (3.5 d_model rounded down to a multiple of 32, the authors' trainer),
// norm layernorm and pos_encoding none by default, the rwkv6_* keys read
// with their defaults 64 / 32 / 64. Other blocks: an error for any rwkv6_*
// key present.
Status read(const io::YamlMap& m, ModelCard& c);

// block: rwkv6: the whole card check (sizes, head size dividing d_model, the
// LoRA ranks, LayerNorm, no positional encoding, every Transformer / Mamba
// field at its default). Other blocks: the rwkv6_* fields unset (0).
std::optional<card_fields::FieldError> check(const ModelCard& c);

// The lines model_card_to_yaml adds for block: rwkv6 (d_ff and the rwkv6_*
// keys); nothing for other blocks.
std::string to_yaml(const ModelCard& c);

// d_ff's default for d_model C: int(3.5 C) rounded down to a multiple of 32.
int default_d_ff(int d_model);

}  // namespace el::rwkv6_card
