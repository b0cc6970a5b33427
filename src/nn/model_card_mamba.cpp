// model_card_mamba.cpp — the block: mamba part of a model card
// (model_card_mamba.h).
#include "nn/model_card_mamba.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

namespace el::mamba_card {

using card_fields::FieldError;

namespace {

// Keys of the attention / MLP block: they do nothing in a Mamba layer, so a
// card with block: mamba must not carry them (model_card.h).
const std::vector<std::string> kMambaForbiddenKeys = {
    "n_head", "n_kv_head", "head_dim", "d_ff", "rope_theta", "mlp", "qkv_bias", "o_bias",
    "mlp_bias", "sliding_window", "rope_scaling", "rope_scaling_factor", "rope_low_freq_factor",
    "rope_high_freq_factor", "rope_original_max_seq_len", "attention", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "parallel_residual",
    "rotary_dims", "nsa_window", "nsa_compress_block", "nsa_compress_stride", "nsa_select_block",
    "nsa_select_count", "moe_experts"};
const char* const kForbiddenWhat = "is an attention / MLP key and is not used with block: mamba";
const char* const kForbiddenHint =
    "remove the key: a Mamba layer is x + mixer(norm(x)) (model_card.h)";
const std::vector<std::string> kMambaKeys = {"mamba_d_state", "mamba_d_conv", "mamba_expand",
                                             "mamba_dt_rank", "mamba_conv_bias",
                                             "mamba_proj_bias"};

}  // namespace

const std::vector<std::string>& keys() { return kMambaKeys; }

Status read(const io::YamlMap& m, ModelCard& c) {
  if (c.block == ModelCard::Block::mamba) {
    EL_TRY(card_fields::refuse_keys(m, kMambaForbiddenKeys, kForbiddenWhat, kForbiddenHint));
    c.pos_encoding = ModelCard::PosEncoding::none;
  } else {
    EL_TRY(card_fields::refuse_keys(
        m, kMambaKeys,
        fmt::format("is set but block is {}; it is a Mamba parameter", block_name(c.block)),
        "add 'block: mamba' or remove the key"));
  }
  EL_TRY(m.read_optional("mamba_d_state", c.mamba_d_state));
  EL_TRY(m.read_optional("mamba_d_conv", c.mamba_d_conv));
  EL_TRY(m.read_optional("mamba_expand", c.mamba_expand));
  EL_TRY(m.read_optional("mamba_dt_rank", c.mamba_dt_rank));
  EL_TRY(m.read_optional("mamba_conv_bias", c.mamba_conv_bias));
  EL_TRY(m.read_optional("mamba_proj_bias", c.mamba_proj_bias));
  return Status::Ok();
}

std::optional<FieldError> check(const ModelCard& c) {
  if (c.block != ModelCard::Block::mamba) {
    return card_fields::first_set(
        card_fields::mamba_fields(c),
        fmt::format("is set but block is {}; it is a Mamba parameter", block_name(c.block)),
        "add 'block: mamba' or remove the key");
  }
  card_fields::FieldSet unused = card_fields::transformer_fields(c);
  unused.push_back({"d_ff", c.d_ff != 0});
  unused.push_back({"moe_experts", c.moe_experts != 0});
  if (auto fe = card_fields::first_set(unused, kForbiddenWhat, kForbiddenHint)) return fe;
  if (c.pos_encoding != ModelCard::PosEncoding::none) {
    return FieldError{"pos_encoding",
                      fmt::format("pos_encoding {} is not used with block: mamba",
                                  pos_encoding_name(c.pos_encoding)),
                      "remove the key (or write none): the recurrence orders the tokens"};
  }
  const std::pair<const char*, int> sizes[] = {{"n_layer", c.n_layer},
                                               {"d_model", c.d_model},
                                               {"vocab_size", c.vocab_size},
                                               {"max_seq_len", c.max_seq_len}};
  for (const auto& [field, v] : sizes) {
    if (v <= 0) return FieldError{field, fmt::format("{} must be positive, got {}", field, v), {}};
  }
  if (static_cast<unsigned>(c.norm) > static_cast<unsigned>(ModelCard::Norm::layernorm)) {
    return FieldError{"norm", fmt::format("unknown norm value {}", static_cast<int>(c.norm)), {}};
  }
  const std::pair<const char*, float> positives[] = {{"norm_eps", c.norm_eps},
                                                     {"init_std", c.init_std}};
  for (const auto& [field, v] : positives) {
    if (!(v > 0.0f) || !std::isfinite(v)) {
      return FieldError{field, fmt::format("{} must be a positive number, got {}", field, v), {}};
    }
  }
  // Ranges: the scan keeps N state values per channel in registers (CUDA) and
  // the conv keeps d_conv - 1 inputs per channel in the decode cache.
  const struct {
    const char* field;
    int value, lo, hi;
  } ranges[] = {{"mamba_d_state", c.mamba_d_state, 1, kMambaMaxDState},
                {"mamba_d_conv", c.mamba_d_conv, 1, kMambaMaxDConv},
                {"mamba_expand", c.mamba_expand, 1, kMambaMaxExpand}};
  for (const auto& r : ranges) {
    if (r.value < r.lo || r.value > r.hi) {
      return FieldError{r.field,
                        fmt::format("{} must be in [{}, {}], got {}", r.field, r.lo, r.hi, r.value),
                        {}};
    }
  }
  // I = mamba_expand * d_model is an int (mamba_d_inner).
  if (int64_t{c.mamba_expand} * c.d_model > std::numeric_limits<int>::max()) {
    return FieldError{"mamba_expand",
                      fmt::format("mamba_expand ({}) * d_model ({}) exceeds 2^31 - 1",
                                  c.mamba_expand, c.d_model),
                      {}};
  }
  if (c.mamba_dt_rank < 0 || c.mamba_dt_rank > c.mamba_d_inner()) {
    return FieldError{"mamba_dt_rank",
                      fmt::format("mamba_dt_rank must be in [1, mamba_expand * d_model = {}] "
                                  "(0 = ceil(d_model / 16)), got {}",
                                  c.mamba_d_inner(), c.mamba_dt_rank),
                      {}};
  }
  return std::nullopt;
}

std::string to_yaml(const ModelCard& c) {
  if (c.block != ModelCard::Block::mamba) return {};
  std::string s = fmt::format("mamba_d_state: {}\n", c.mamba_d_state);
  s += fmt::format("mamba_d_conv: {}\n", c.mamba_d_conv);
  s += fmt::format("mamba_expand: {}\n", c.mamba_expand);
  s += fmt::format("mamba_dt_rank: {}\n", c.mamba_dt_rank);
  s += fmt::format("mamba_conv_bias: {}\n", c.mamba_conv_bias);
  s += fmt::format("mamba_proj_bias: {}\n", c.mamba_proj_bias);
  return s;
}

}  // namespace el::mamba_card
