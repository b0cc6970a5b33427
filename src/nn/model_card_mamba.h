// model_card_mamba.h — internal to nn/model_card.cpp: the block: mamba part
// of a model card (its keys, the attention / MLP keys a Mamba card must not
// carry, checks and YAML output), kept apart like model_card_rwkv.h so the
// card's main file stays about the Transformer. The keys themselves are
// documented in model_card.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/yaml_util.h"
#include "nn/model_card.h"
#include "nn/model_card_fields.h"

namespace el::mamba_card {

// The mamba_* keys (valid only with block: mamba).
const std::vector<std::string>& keys();

// Parsing, called for every card right after block is read: with block:
// mamba, an error for any attention / MLP key present (naming it) and
// pos_encoding's default none; with another block, an error for any mamba_*
// key present. Reads the mamba_* keys.
Status read(const io::YamlMap& m, ModelCard& c);

// block: mamba: the whole card check (sizes, every attention / MLP field at
// its default, no positional encoding, the mamba_* values in range). Other
// blocks: the mamba_* fields at their defaults.
std::optional<card_fields::FieldError> check(const ModelCard& c);

// The lines model_card_to_yaml adds for block: mamba (the mamba_* keys);
// nothing for other blocks.
std::string to_yaml(const ModelCard& c);

}  // namespace el::mamba_card
