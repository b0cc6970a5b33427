// model_card_moe.cpp — the moe_* keys of a model card (model_card_moe.h).
#include "nn/model_card_moe.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "io/suggest.h"

namespace el::moe_card {

using card_fields::FieldError;

namespace {

// moe_experts first: the others are errors without it (read).
const std::vector<std::string> kMoeKeys = {
    "moe_experts",        "moe_top_k",          "moe_d_ff",        "moe_router",
    "moe_norm_topk_prob", "moe_shared_experts", "moe_shared_d_ff", "moe_aux_loss_coef",
    "moe_z_loss_coef",    "moe_capacity_factor"};
const std::vector<std::string> kMoeRouters = {"softmax", "sigmoid"};

}  // namespace

const std::vector<std::string>& keys() { return kMoeKeys; }

Status read(const io::YamlMap& m, ModelCard& c) {
  EL_TRY(m.read_optional("moe_experts", c.moe_experts));
  if (c.moe_experts <= 0) {
    const std::vector<std::string> others(kMoeKeys.begin() + 1, kMoeKeys.end());
    EL_TRY(card_fields::refuse_keys(
        m, others,
        fmt::format("is set but moe_experts is {}; it is a mixture-of-experts parameter",
                    c.moe_experts),
        "set moe_experts to the number of experts (> 0), or remove the key"));
  }
  EL_TRY(m.read_optional("moe_top_k", c.moe_top_k));
  EL_TRY(m.read_optional("moe_d_ff", c.moe_d_ff));
  EL_TRY_ASSIGN(std::string router,
                m.get_choice_or("moe_router", kMoeRouters, moe_router_name(c.moe_router)));
  c.moe_router = card_fields::enum_from<ModelCard::MoeRouter>(router, kMoeRouters);
  EL_TRY(m.read_optional("moe_norm_topk_prob", c.moe_norm_topk_prob));
  EL_TRY(m.read_optional("moe_shared_experts", c.moe_shared_experts));
  EL_TRY(m.read_optional("moe_shared_d_ff", c.moe_shared_d_ff));
  EL_TRY(m.read_optional("moe_aux_loss_coef", c.moe_aux_loss_coef));
  EL_TRY(m.read_optional("moe_z_loss_coef", c.moe_z_loss_coef));
  EL_TRY(m.read_optional("moe_capacity_factor", c.moe_capacity_factor));
  return Status::Ok();
}

std::optional<FieldError> check(const ModelCard& c) {
  const ModelCard d;
  if (c.moe_experts < 0) {
    return FieldError{"moe_experts",
                      fmt::format("moe_experts must be >= 0 (0 = the dense MLP), got {}",
                                  c.moe_experts),
                      {}};
  }
  if (static_cast<unsigned>(c.moe_router) >= kMoeRouters.size()) {
    return FieldError{"moe_router",
                      fmt::format("unknown moe_router value {}; allowed: {}",
                                  static_cast<int>(c.moe_router), io::quoted_list(kMoeRouters)),
                      {}};
  }
  const card_fields::FieldSet set = {
      {"moe_top_k", c.moe_top_k != d.moe_top_k},
      {"moe_d_ff", c.moe_d_ff != d.moe_d_ff},
      {"moe_router", c.moe_router != d.moe_router},
      {"moe_norm_topk_prob", c.moe_norm_topk_prob != d.moe_norm_topk_prob},
      {"moe_shared_experts", c.moe_shared_experts != d.moe_shared_experts},
      {"moe_shared_d_ff", c.moe_shared_d_ff != d.moe_shared_d_ff},
      {"moe_aux_loss_coef", c.moe_aux_loss_coef != d.moe_aux_loss_coef},
      {"moe_z_loss_coef", c.moe_z_loss_coef != d.moe_z_loss_coef},
      {"moe_capacity_factor", c.moe_capacity_factor != d.moe_capacity_factor}};
  if (c.moe_experts == 0) {
    return card_fields::first_set(
        set, "is set but moe_experts is 0 (a dense MLP); it is a mixture-of-experts parameter",
        "set moe_experts to the number of experts, or remove the key");
  }
  if (c.moe_experts > kMoeMaxExperts) {
    return FieldError{"moe_experts",
                      fmt::format("moe_experts must be at most {}, got {}", kMoeMaxExperts,
                                  c.moe_experts),
                      "the CUDA router holds a token's scores of every expert in one warp "
                      "(model_card.h)"};
  }
  if (c.block != ModelCard::Block::transformer) {
    return FieldError{"moe_experts",
                      fmt::format("moe_experts ({}) needs block: transformer (a {} layer has no "
                                  "MLP to replace)",
                                  c.moe_experts, block_name(c.block)),
                      {}};
  }
  if (c.moe_top_k < 1) {
    return FieldError{"moe_top_k", fmt::format("moe_top_k must be >= 1, got {}", c.moe_top_k),
                      {}};
  }
  if (c.moe_top_k > c.moe_experts) {
    return FieldError{"moe_top_k",
                      fmt::format("moe_top_k ({}) exceeds moe_experts ({}): a token cannot "
                                  "choose more experts than there are",
                                  c.moe_top_k, c.moe_experts),
                      "lower moe_top_k or raise moe_experts"};
  }
  const std::pair<const char*, int> widths[] = {{"moe_d_ff", c.moe_d_ff},
                                                {"moe_shared_experts", c.moe_shared_experts},
                                                {"moe_shared_d_ff", c.moe_shared_d_ff}};
  for (const auto& [field, v] : widths) {
    if (v < 0) return FieldError{field, fmt::format("{} must be >= 0, got {}", field, v), {}};
  }
  if (c.moe_shared_d_ff != 0 && c.moe_shared_experts == 0) {
    return FieldError{"moe_shared_d_ff",
                      fmt::format("moe_shared_d_ff ({}) is set but moe_shared_experts is 0",
                                  c.moe_shared_d_ff),
                      "add moe_shared_experts or remove the key"};
  }
  // The shared experts run as one MLP n times as wide (moe_shared_width, an int).
  const int64_t one_shared = c.moe_shared_d_ff > 0 ? c.moe_shared_d_ff : c.moe_expert_d_ff();
  if (c.moe_shared_experts * one_shared > std::numeric_limits<int>::max()) {
    return FieldError{"moe_shared_experts",
                      fmt::format("moe_shared_experts ({}) times the shared width ({}) exceeds "
                                  "2^31 - 1",
                                  c.moe_shared_experts, one_shared),
                      {}};
  }
  const std::pair<const char*, float> coefs[] = {{"moe_aux_loss_coef", c.moe_aux_loss_coef},
                                                 {"moe_z_loss_coef", c.moe_z_loss_coef},
                                                 {"moe_capacity_factor", c.moe_capacity_factor}};
  for (const auto& [field, v] : coefs) {
    if (!(v >= 0.0f) || !std::isfinite(v)) {
      return FieldError{field, fmt::format("{} must be a finite number >= 0, got {}", field, v),
                        {}};
    }
  }
  if (c.mlp != ModelCard::Mlp::swiglu) {
    return FieldError{"mlp",
                      fmt::format("mlp {} is not supported with moe_experts: the experts are "
                                  "SwiGLU MLPs",
                                  mlp_name(c.mlp)),
                      "use mlp: swiglu"};
  }
  if (c.mlp_bias) {
    return FieldError{"mlp_bias", "mlp_bias is not supported with moe_experts (experts have no "
                                  "biases, as in Mixtral and Qwen2-MoE)",
                      {}};
  }
  return std::nullopt;
}

std::string to_yaml(const ModelCard& c) {
  if (c.moe_experts <= 0) return {};
  std::string s = fmt::format("moe_experts: {}\n", c.moe_experts);
  s += fmt::format("moe_top_k: {}\n", c.moe_top_k);
  s += fmt::format("moe_d_ff: {}\n", c.moe_d_ff);
  s += fmt::format("moe_router: {}\n", moe_router_name(c.moe_router));
  s += fmt::format("moe_norm_topk_prob: {}\n", c.moe_norm_topk_prob);
  s += fmt::format("moe_shared_experts: {}\n", c.moe_shared_experts);
  s += fmt::format("moe_shared_d_ff: {}\n", c.moe_shared_d_ff);
  s += fmt::format("moe_aux_loss_coef: {}\n", c.moe_aux_loss_coef);
  s += fmt::format("moe_z_loss_coef: {}\n", c.moe_z_loss_coef);
  s += fmt::format("moe_capacity_factor: {}\n", c.moe_capacity_factor);
  return s;
}

}  // namespace el::moe_card
