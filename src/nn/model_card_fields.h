// model_card_fields.h — internal to nn/model_card*.cpp: what the card's
// parts (model_card.cpp, model_card_moe.cpp, model_card_mamba.cpp,
// model_card_rwkv.cpp) share: the FieldError a check reports, the enum read
// from its YAML spelling, and which of a card's fields a non-Transformer
// block must leave at their defaults. Each FieldSet entry is a field's YAML
// key and whether the card sets it (differs from the default), so one list
// drives both the checks of block: mamba and block: rwkv and the keys their
// parsers refuse.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/yaml_util.h"
#include "nn/model_card.h"

namespace el::card_fields {

// A check's failure: the field at fault, what is wrong with it and a hint, so
// the caller can place it (a YAML line when parsing, the card name otherwise).
struct FieldError {
  std::string field, what, hint;
};

// The enum value whose YAML spelling is `s` (its index in `names`, which
// lists the values in enum order); `s` was already checked by get_choice.
template <class E>
E enum_from(const std::string& s, const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == s) return static_cast<E>(i);
  return static_cast<E>(0);  // unreachable: get_choice already checked s
}

// Parsing: an error at the line of the first of `keys` the YAML holds,
// "<key> <what>" with `hint`; OK when it holds none. For the keys a card must
// not carry (a Mamba key without block: mamba, an attention key with it, ...).
Status refuse_keys(const io::YamlMap& m, const std::vector<std::string>& keys,
                   const std::string& what, const std::string& hint);

using FieldSet = std::vector<std::pair<const char*, bool>>;

// The Transformer layer's fields: attention (heads, MLA, NSA), RoPE, the MLP
// kind and biases, sliding_window, parallel_residual, rotary_dims. Not d_ff
// (an RWKV layer's channel-mix width) and not moe_experts (moe_card's).
FieldSet transformer_fields(const ModelCard& c);
// The mamba_* fields.
FieldSet mamba_fields(const ModelCard& c);
// The keys of a FieldSet.
std::vector<std::string> keys_of(const FieldSet& fields);

// Checking (refuse_keys' counterpart for a card built in code): the first of
// `fields` the card sets, as "<key> <what>" with `hint`; none when it sets none.
std::optional<FieldError> first_set(const FieldSet& fields, const std::string& what,
                                    const std::string& hint);

}  // namespace el::card_fields
