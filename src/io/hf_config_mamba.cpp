// hf_config_mamba.cpp — transformers' MambaConfig (config.json) and a
// block: mamba card, both ways: read_mamba (called by parse_hf_config) and
// mamba_config_json (called by hf_config_json). The mapping table is in
// hf_config.h.
#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "io/hf_config_parts.h"

namespace el::io {

namespace hf_parts {

// model_type mamba (MambaConfig, Mamba-1): block: mamba (nn/mamba.h), the
// mapping in hf_config.h. intermediate_size is derived by transformers
// (expand * hidden_size) and must agree when written; time_step_rank "auto"
// or equal to ceil(hidden_size / 16) maps to mamba_dt_rank 0.
Status read_mamba(const Reader& r, ModelCard& c) {
  c.block = ModelCard::Block::mamba;
  c.norm = ModelCard::Norm::rmsnorm;
  c.pos_encoding = ModelCard::PosEncoding::none;
  c.n_head = c.n_kv_head = c.head_dim = c.d_ff = 0;
  EL_TRY_ASSIGN(std::string act, r.string_or("hidden_act", "silu"));
  if (act != "silu") {
    return r.error("hidden_act", fmt::format("hidden_act '{}' is not supported for mamba", act),
                   "only 'silu' (the conv's and the gate's activation)");
  }
  EL_TRY_ASSIGN(c.d_model, r.size("hidden_size"));
  EL_TRY_ASSIGN(c.n_layer, r.size("num_hidden_layers"));
  EL_TRY_ASSIGN(c.vocab_size, r.size("vocab_size"));
  EL_TRY_ASSIGN(c.max_seq_len, r.size_or("max_position_embeddings", 1 << 20));
  EL_TRY_ASSIGN(c.mamba_d_state, r.size_or("state_size", 16));
  EL_TRY_ASSIGN(c.mamba_d_conv, r.size_or("conv_kernel", 4));
  EL_TRY_ASSIGN(c.mamba_expand, r.size_or("expand", 2));
  const struct {
    const char* key;
    int value, max;
  } limits[] = {{"state_size", c.mamba_d_state, kMambaMaxDState},
                {"conv_kernel", c.mamba_d_conv, kMambaMaxDConv},
                {"expand", c.mamba_expand, kMambaMaxExpand}};
  for (const auto& l : limits) {
    if (l.value > l.max) {
      return r.error(l.key, fmt::format("{} {} is above the engine's limit {}", l.key, l.value,
                                        l.max));
    }
  }
  if (int64_t{c.mamba_expand} * c.d_model > std::numeric_limits<int>::max()) {
    return r.error("expand", fmt::format("expand {} x hidden_size {} exceeds 2^31 - 1",
                                         c.mamba_expand, c.d_model));
  }
  EL_TRY_ASSIGN(std::optional<int> inner, r.opt_size("intermediate_size"));
  if (inner && *inner != c.mamba_d_inner()) {
    return r.error("intermediate_size",
                   fmt::format("intermediate_size {} differs from expand ({}) x hidden_size ({}) "
                               "= {}, which transformers uses",
                               *inner, c.mamba_expand, c.d_model, c.mamba_d_inner()));
  }
  const int auto_rank = (c.d_model + 15) / 16;
  c.mamba_dt_rank = 0;
  if (r.given("time_step_rank") && !r.at("time_step_rank").is_string()) {
    EL_TRY_ASSIGN(const int rank, r.size("time_step_rank"));
    if (rank > c.mamba_d_inner()) {
      return r.error("time_step_rank", fmt::format("time_step_rank {} exceeds the inner width {}",
                                                   rank, c.mamba_d_inner()));
    }
    c.mamba_dt_rank = rank == auto_rank ? 0 : rank;
  } else {
    EL_TRY_ASSIGN(std::string rank, r.string_or("time_step_rank", "auto"));
    if (rank != "auto") {
      return r.error("time_step_rank",
                     fmt::format("time_step_rank '{}' is neither \"auto\" nor an integer", rank));
    }
  }
  EL_TRY_ASSIGN(c.mamba_proj_bias, r.boolean_or("use_bias", false));
  EL_TRY_ASSIGN(c.mamba_conv_bias, r.boolean_or("use_conv_bias", true));
  EL_TRY_ASSIGN(double eps, r.number_or("layer_norm_epsilon", 1e-5));
  EL_TRY_ASSIGN(c.norm_eps, r.positive_float("layer_norm_epsilon", eps));
  EL_TRY_ASSIGN(double init_std, r.number_or("initializer_range", 0.1));
  EL_TRY_ASSIGN(c.init_std, r.positive_float("initializer_range", init_std));
  EL_TRY_ASSIGN(c.tied_embeddings, r.boolean_or("tie_word_embeddings", true));
  return Status::Ok();
}

}  // namespace hf_parts

Result<std::string> mamba_config_json(const ModelCard& card, const HfConfigExport& opt) {
  using hf_parts::json;
  using hf_parts::json_float;
  const std::string owner =
      !card.source_path.empty() ? card.source_path : fmt::format("model card '{}'", card.name);
  if (!opt.model_type.empty() && opt.model_type != "mamba") {
    return make_error(fmt::format("a block: mamba card is written as model_type mamba, not '{}'",
                                  opt.model_type),
                      owner, "leave the model type empty (or mamba)");
  }
  if (card.block != ModelCard::Block::mamba) {
    return hf_parts::card_key_error(card, "block",
                                    "only a block: mamba card is written as a MambaConfig");
  }
  if (card.norm != ModelCard::Norm::rmsnorm) {
    return make_error("norm layernorm cannot be exported (MambaRMSNorm only)",
                      fmt::format("{}: key 'norm'", owner));
  }
  json j;
  j["architectures"] = json::array({"MambaForCausalLM"});
  j["model_type"] = "mamba";
  j["hidden_size"] = card.d_model;
  j["num_hidden_layers"] = card.n_layer;
  j["vocab_size"] = card.vocab_size;
  // Not a MambaConfig key, but transformers keeps it, and it carries the
  // card's max_seq_len through a round trip (read_mamba reads it).
  j["max_position_embeddings"] = card.max_seq_len;
  j["state_size"] = card.mamba_d_state;
  j["conv_kernel"] = card.mamba_d_conv;
  j["expand"] = card.mamba_expand;
  j["intermediate_size"] = card.mamba_d_inner();
  j["time_step_rank"] = card.mamba_effective_dt_rank();
  j["use_bias"] = card.mamba_proj_bias;
  j["use_conv_bias"] = card.mamba_conv_bias;
  j["hidden_act"] = "silu";
  j["layer_norm_epsilon"] = json_float(card.norm_eps);
  j["initializer_range"] = json_float(card.init_std);
  j["tie_word_embeddings"] = card.tied_embeddings;
  j["residual_in_fp32"] = true;  // MambaConfig's default (hf_config.h)
  j["use_cache"] = true;
  return hf_parts::finish_config(std::move(j), opt, owner);
}

}  // namespace el::io
