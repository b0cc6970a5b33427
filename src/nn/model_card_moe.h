// model_card_moe.h — internal to nn/model_card.cpp: the mixture-of-experts
// part of a model card (the moe_* keys: reading, checks and YAML output),
// kept apart like model_card_rwkv.h so the card's main file stays about the
// dense Transformer. The keys themselves are documented in model_card.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/yaml_util.h"
#include "nn/model_card.h"
#include "nn/model_card_fields.h"

namespace el::moe_card {

// The moe_* keys (valid only with moe_experts > 0).
const std::vector<std::string>& keys();

// Parsing, called once the rest of the card is read: moe_experts, then an
// error (at its line) for any other moe_* key present while moe_experts is
// not positive, then the moe_* keys.
Status read(const io::YamlMap& m, ModelCard& c);

// moe_experts 0: every other moe_* field keeps its default (a YAML key
// without moe_experts is reported at parse time by read, whatever its value).
// moe_experts > 0: 1 <= moe_top_k <= moe_experts, widths >= 0, coefficients
// finite and >= 0, and a block the experts can replace the MLP of
// (transformer, SwiGLU, no MLP biases).
std::optional<card_fields::FieldError> check(const ModelCard& c);

// The lines model_card_to_yaml adds for moe_experts > 0; nothing otherwise.
std::string to_yaml(const ModelCard& c);

}  // namespace el::moe_card
