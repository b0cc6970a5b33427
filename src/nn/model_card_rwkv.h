// model_card_rwkv.h — internal to nn/model_card.cpp: the block: rwkv part of
// a model card (its keys, the keys an RWKV card must not carry, checks and
// YAML output), kept apart so the card's main file stays about the
// Transformer (as model_card_mamba.h and model_card_moe.h are). The keys
// themselves are documented in model_card.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/yaml_util.h"
#include "nn/model_card.h"
#include "nn/model_card_fields.h"

namespace el::rwkv_card {

// The rwkv_* keys (valid only with block: rwkv).
const std::vector<std::string>& keys();

// Parsing, called for every card once block, n_layer and d_model are read
// (before norm, pos_encoding and the rest): with block: rwkv, an error for
// any attention / MLP / Mamba key present (naming it), d_ff read with its
// default 4 d_model, norm's default layernorm and pos_encoding's none; with
// another block, an error for any rwkv_* key present. Reads the rwkv_* keys.
Status read(const io::YamlMap& m, ModelCard& c);

// block: rwkv: the whole card check (sizes, LayerNorm, no positional
// encoding, every Transformer / Mamba field at its default, the rwkv_* values
// in range). Other blocks: the rwkv_* fields at their defaults.
std::optional<card_fields::FieldError> check(const ModelCard& c);

// What block: rwkv and block: rwkv6 cards share (called by both checks):
// every Transformer / Mamba field at its default (the error carries
// forbidden_hint), the sizes positive, LayerNorm, no positional encoding,
// norm_eps and init_std positive. Errors name the field and the card's block.
std::optional<card_fields::FieldError> check_shared(const ModelCard& c, const char* forbidden_hint);

// The lines model_card_to_yaml adds for block: rwkv (d_ff and the rwkv_*
// keys); nothing for other blocks.
std::string to_yaml(const ModelCard& c);

}  // namespace el::rwkv_card
