#include "nn/model_card_rwkv.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

namespace el::rwkv_card {

using card_fields::FieldError;

namespace {

const std::vector<std::string> kRwkvKeys = {"rwkv_attention_hidden_size", "rwkv_rescale_every"};

const char* kForbiddenHint =
    "remove the key: an RWKV layer is x + time_mix(ln1(x)), then + channel_mix(ln2(.)) "
    "(model_card.h)";

}  // namespace

const std::vector<std::string>& keys() { return kRwkvKeys; }

std::optional<FieldError> check_shared(const ModelCard& c, const char* forbidden_hint) {
  const std::string block = block_name(c.block);
  card_fields::FieldSet unused = card_fields::transformer_fields(c);
  const card_fields::FieldSet mamba = card_fields::mamba_fields(c);
  unused.insert(unused.end(), mamba.begin(), mamba.end());
  if (auto fe = card_fields::first_set(unused, "is not used with block: " + block, forbidden_hint)) {
    return fe;
  }
  const std::pair<const char*, int> sizes[] = {{"n_layer", c.n_layer},
                                               {"d_model", c.d_model},
                                               {"d_ff", c.d_ff},
                                               {"vocab_size", c.vocab_size},
                                               {"max_seq_len", c.max_seq_len}};
  for (const auto& [field, v] : sizes) {
    if (v <= 0) return FieldError{field, fmt::format("{} must be positive, got {}", field, v), {}};
  }
  if (c.norm != ModelCard::Norm::layernorm) {
    return FieldError{"norm",
                      fmt::format("norm {} is not supported with block: {}", norm_name(c.norm), block),
                      "use norm: layernorm (RWKV's ln1 / ln2 / ln_out are LayerNorms)"};
  }
  if (c.pos_encoding != ModelCard::PosEncoding::none) {
    return FieldError{"pos_encoding",
                      fmt::format("pos_encoding {} is not used with block: {}",
                                  pos_encoding_name(c.pos_encoding), block),
                      "remove the key (or write none): the recurrence and the token shift order "
                      "the tokens"};
  }
  const std::pair<const char*, float> positives[] = {{"norm_eps", c.norm_eps},
                                                     {"init_std", c.init_std}};
  for (const auto& [field, v] : positives) {
    if (!(v > 0.0f) || !std::isfinite(v)) {
      return FieldError{field, fmt::format("{} must be a positive number, got {}", field, v), {}};
    }
  }
  return std::nullopt;
}

Status read(const io::YamlMap& m, ModelCard& c) {
  if (c.block != ModelCard::Block::rwkv) {
    return card_fields::refuse_keys(
        m, kRwkvKeys,
        fmt::format("is set but block is {}; it is an RWKV parameter", block_name(c.block)),
        "add 'block: rwkv' or remove the key");
  }
  // The Transformer's keys (card_fields::transformer_fields names them; d_ff
  // is the channel mix's width, so it stays); a Mamba key is refused by the
  // card's parser before this.
  EL_TRY(card_fields::refuse_keys(m, card_fields::keys_of(card_fields::transformer_fields(c)),
                                  "is not used with block: rwkv", kForbiddenHint));
  if (!m.has("d_ff") && int64_t{4} * c.d_model > std::numeric_limits<int>::max()) {
    return make_error(fmt::format("d_model {} makes the default d_ff (4 d_model) exceed 2^31 - 1",
                                  c.d_model),
                      m.where("d_model"), "set d_ff");
  }
  c.d_ff = 4 * c.d_model;  // transformers' intermediate_size default
  EL_TRY(m.read_optional("d_ff", c.d_ff));
  c.norm = ModelCard::Norm::layernorm;
  c.pos_encoding = ModelCard::PosEncoding::none;
  EL_TRY(m.read_optional("rwkv_attention_hidden_size", c.rwkv_attention_hidden_size));
  EL_TRY(m.read_optional("rwkv_rescale_every", c.rwkv_rescale_every));
  return Status::Ok();
}

std::optional<FieldError> check(const ModelCard& c) {
  if (c.block != ModelCard::Block::rwkv) {
    return card_fields::first_set(
        {{"rwkv_attention_hidden_size", c.rwkv_attention_hidden_size != 0},
         {"rwkv_rescale_every", c.rwkv_rescale_every != 0}},
        fmt::format("is set but block is {}; it is an RWKV parameter", block_name(c.block)),
        "add 'block: rwkv' or remove the key");
  }
  if (auto fe = check_shared(c, kForbiddenHint)) return fe;
  if (c.rwkv_attention_hidden_size < 0) {
    return FieldError{"rwkv_attention_hidden_size",
                      fmt::format("rwkv_attention_hidden_size must be >= 0 (0 = d_model), got {}",
                                  c.rwkv_attention_hidden_size),
                      {}};
  }
  if (c.rwkv_rescale_every < 0) {
    return FieldError{"rwkv_rescale_every",
                      fmt::format("rwkv_rescale_every must be >= 0 (0 = no rescaling), got {}",
                                  c.rwkv_rescale_every),
                      "transformers treats negative values as 0: write 0"};
  }
  // 4^(L / k) multiplies ln_out's eps (nn/rwkv.h): keep it a finite f32.
  if (c.rwkv_rescale_every > 0 && c.n_layer / c.rwkv_rescale_every > 40) {
    return FieldError{"rwkv_rescale_every",
                      fmt::format("rwkv_rescale_every {} halves the stream {} times over {} "
                                  "layers (at most 40)",
                                  c.rwkv_rescale_every, c.n_layer / c.rwkv_rescale_every,
                                  c.n_layer),
                      {}};
  }
  return std::nullopt;
}

std::string to_yaml(const ModelCard& c) {
  if (c.block != ModelCard::Block::rwkv) return {};
  std::string s = fmt::format("d_ff: {}\n", c.d_ff);
  s += fmt::format("rwkv_attention_hidden_size: {}\n", c.rwkv_attention_hidden_size);
  s += fmt::format("rwkv_rescale_every: {}\n", c.rwkv_rescale_every);
  return s;
}

}  // namespace el::rwkv_card
