#include "nn/model_card_rwkv6.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "nn/model_card_rwkv.h"

namespace el::rwkv6_card {

using card_fields::FieldError;

namespace {

const std::vector<std::string> kKeys = {"rwkv6_head_size", "rwkv6_time_mix_extra_dim",
                                        "rwkv6_time_decay_extra_dim"};

const char* kForbiddenHint =
    "remove the key: an RWKV-6 layer is x + time_mix(ln1(x)), then + channel_mix(ln2(.)) "
    "(nn/rwkv6.h)";

}  // namespace

const std::vector<std::string>& keys() { return kKeys; }

int default_d_ff(int d_model) {
  const int64_t f = (int64_t{d_model} * 7 / 2) / 32 * 32;
  return static_cast<int>(std::min<int64_t>(f, std::numeric_limits<int>::max()));
}

Status read(const io::YamlMap& m, ModelCard& c) {
  if (c.block != ModelCard::Block::rwkv6) {
    return card_fields::refuse_keys(
        m, kKeys,
        fmt::format("is set but block is {}; it is an RWKV-6 parameter", block_name(c.block)),
        "add 'block: rwkv6' or remove the key");
  }
  EL_TRY(card_fields::refuse_keys(m, card_fields::keys_of(card_fields::transformer_fields(c)),
                                  "is not used with block: rwkv6", kForbiddenHint));
  c.d_ff = default_d_ff(c.d_model);
  EL_TRY(m.read_optional("d_ff", c.d_ff));
  c.norm = ModelCard::Norm::layernorm;
  c.pos_encoding = ModelCard::PosEncoding::none;
  c.rwkv6_head_size = 64;
  c.rwkv6_time_mix_extra_dim = 32;
  c.rwkv6_time_decay_extra_dim = 64;
  EL_TRY(m.read_optional("rwkv6_head_size", c.rwkv6_head_size));
  EL_TRY(m.read_optional("rwkv6_time_mix_extra_dim", c.rwkv6_time_mix_extra_dim));
  EL_TRY(m.read_optional("rwkv6_time_decay_extra_dim", c.rwkv6_time_decay_extra_dim));
  return Status::Ok();
}

std::optional<FieldError> check(const ModelCard& c) {
  if (c.block != ModelCard::Block::rwkv6) {
    return card_fields::first_set(
        {{"rwkv6_head_size", c.rwkv6_head_size != 0},
         {"rwkv6_time_mix_extra_dim", c.rwkv6_time_mix_extra_dim != 0},
         {"rwkv6_time_decay_extra_dim", c.rwkv6_time_decay_extra_dim != 0}},
        fmt::format("is set but block is {}; it is an RWKV-6 parameter", block_name(c.block)),
        "add 'block: rwkv6' or remove the key");
  }
  if (auto fe = rwkv_card::check_shared(c, kForbiddenHint)) return fe;
  const std::pair<const char*, int> sizes[] = {
      {"rwkv6_head_size", c.rwkv6_head_size},
      {"rwkv6_time_mix_extra_dim", c.rwkv6_time_mix_extra_dim},
      {"rwkv6_time_decay_extra_dim", c.rwkv6_time_decay_extra_dim}};
  for (const auto& [field, v] : sizes) {
    if (v <= 0) return FieldError{field, fmt::format("{} must be positive, got {}", field, v), {}};
  }
  if (c.d_model % c.rwkv6_head_size != 0) {
    return FieldError{"rwkv6_head_size",
                      fmt::format("d_model {} is not a multiple of rwkv6_head_size {}", c.d_model,
                                  c.rwkv6_head_size),
                      "the WKV state has d_model / rwkv6_head_size heads; pick a divisor"};
  }
  if (c.rwkv6_head_size > 256) {
    return FieldError{"rwkv6_head_size",
                      fmt::format("rwkv6_head_size {} exceeds 256 (each head keeps an N x N "
                                  "state; the authors use 64)",
                                  c.rwkv6_head_size),
                      {}};
  }
  return std::nullopt;
}

std::string to_yaml(const ModelCard& c) {
  if (c.block != ModelCard::Block::rwkv6) return {};
  std::string s = fmt::format("d_ff: {}\n", c.d_ff);
  s += fmt::format("rwkv6_head_size: {}\n", c.rwkv6_head_size);
  s += fmt::format("rwkv6_time_mix_extra_dim: {}\n", c.rwkv6_time_mix_extra_dim);
  s += fmt::format("rwkv6_time_decay_extra_dim: {}\n", c.rwkv6_time_decay_extra_dim);
  return s;
}

}  // namespace el::rwkv6_card
