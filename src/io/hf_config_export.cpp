// hf_config_export.cpp — config.json writers of the families whose layout is
// not Llama's dense one: gpt_neox (GPTNeoXConfig, Pythia), rwkv (RwkvConfig)
// and the mixture-of-experts keys of mixtral / qwen2_moe, plus what every
// writer shares (error locations, torch_dtype and passthrough keys). Each is
// the inverse of its reader in hf_config_families.cpp: a card read from a
// config.json is written back with the same values, and what it writes reads
// back to the same card (the tables are in io/hf_config.h). hf_config_json
// (hf_config.cpp) picks the family and calls these.
#include <cmath>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "io/hf_config_parts.h"

namespace el::io::hf_parts {

namespace {

// The card's enum values as YAML spells them (model_card.cpp's *_name
// functions are in el_engine, which el_io does not link).
const char* norm_str(ModelCard::Norm n) {
  return n == ModelCard::Norm::layernorm ? "layernorm" : "rmsnorm";
}
const char* pos_str(ModelCard::PosEncoding p) {
  using PE = ModelCard::PosEncoding;
  return p == PE::rope         ? "rope"
         : p == PE::none       ? "none"
         : p == PE::sinusoidal ? "sinusoidal"
         : p == PE::learned    ? "learned"
                               : "alibi";
}

// A card key the family cannot hold: {key, whether the card sets it, the error}.
struct Unsupported {
  const char* key;
  bool set;
  const char* what;
};

}  // namespace

std::string card_owner(const ModelCard& c) {
  return !c.source_path.empty() ? c.source_path : fmt::format("model card '{}'", c.name);
}

Error card_key_error(const ModelCard& c, const std::string& key, std::string what,
                     std::string hint) {
  if (hint.empty()) {
    hint = "Hugging Face export writes llama, mistral, qwen2, mixtral, qwen2_moe, gpt_neox, "
           "rwkv and mamba configs; none of them can express it";
  }
  return make_error(std::move(what), fmt::format("{}: key '{}'", card_owner(c), key),
                    std::move(hint));
}

Result<std::string> finish_config(json j, const HfConfigExport& opt, const std::string& owner) {
  if (!opt.torch_dtype.empty()) j["torch_dtype"] = opt.torch_dtype;
  for (const auto& [key, text] : opt.passthrough) {
    try {
      j[key] = json::parse(text);
    } catch (const json::exception& e) {
      return make_error(fmt::format("passthrough value is not JSON: {}", e.what()),
                        fmt::format("{}: key '{}'", owner, key));
    }
  }
  return j.dump(2) + "\n";
}

// GPTNeoXConfig, in the v4 key names (rotary_pct, rotary_emb_base), which
// transformers 5 still reads (GPTNeoXConfig.convert_rope_params_to_dict)
// and transformers 4 needs: a v5 rope_parameters object would be ignored
// there, silently giving the default 0.25 and 10000.
Result<std::string> gpt_neox_config_json(const ModelCard& c, const HfConfigExport& opt) {
  if (c.norm != ModelCard::Norm::layernorm) {
    return card_key_error(c, "norm",
                          fmt::format("norm {} cannot be exported as gpt_neox (LayerNorm only)",
                                      norm_str(c.norm)));
  }
  if (c.mlp == ModelCard::Mlp::swiglu) {
    return card_key_error(c, "mlp",
                          "mlp swiglu cannot be exported as gpt_neox (a GELU MLP: gelu or "
                          "gelu_exact)");
  }
  if (!c.mlp_bias) {
    return card_key_error(c, "mlp_bias",
                          "mlp_bias false cannot be exported as gpt_neox (dense_h_to_4h and "
                          "dense_4h_to_h always have biases)");
  }
  if (c.pos_encoding != ModelCard::PosEncoding::rope) {
    return card_key_error(c, "pos_encoding",
                          fmt::format("pos_encoding {} cannot be exported as gpt_neox (rope only)",
                                      pos_str(c.pos_encoding)));
  }
  if (c.qkv_bias != c.o_bias) {
    return card_key_error(c, "o_bias",
                          "gpt_neox's attention_bias sets the query_key_value and dense biases "
                          "together: qkv_bias and o_bias must be equal");
  }
  const Unsupported unsupported[] = {
      {"attention", c.attention != ModelCard::Attention::standard,
       "attention mla / nsa cannot be exported as gpt_neox (standard attention only)"},
      {"n_kv_head", c.n_kv_head != c.n_head,
       "grouped K/V heads (n_kv_head < n_head) cannot be exported as gpt_neox (one K/V head "
       "per query head)"},
      {"head_dim", c.head_dim != 0 && c.head_dim * c.n_head != c.d_model,
       "a head_dim other than d_model / n_head cannot be exported as gpt_neox"},
      {"rope_scaling", c.rope_scaling != ModelCard::RopeScaling::none,
       "rope_scaling cannot be exported as gpt_neox (unscaled RoPE only)"},
      {"sliding_window", c.sliding_window > 0,
       "a sliding window cannot be exported as gpt_neox (full causal attention only)"},
      {"moe_experts", c.moe_experts > 0,
       "a mixture-of-experts card cannot be exported as gpt_neox (use mixtral or qwen2_moe)"},
  };
  for (const auto& u : unsupported) {
    if (u.set) return card_key_error(c, u.key, u.what);
  }
  // transformers computes rotary_ndims = int(head_size * rotary_pct); the
  // quotient is nudged up until that gives rotary_dims back exactly (1/3 of
  // 12 is 3.9999... in doubles).
  const int head = c.d_model / c.n_head, dims = c.effective_rotary_dims();
  double pct = static_cast<double>(dims) / head;
  while (std::floor(static_cast<double>(head) * pct) < dims) pct = std::nextafter(pct, 2.0);

  json j;
  j["architectures"] = json::array({"GPTNeoXForCausalLM"});
  j["model_type"] = "gpt_neox";
  j["hidden_size"] = c.d_model;
  j["num_hidden_layers"] = c.n_layer;
  j["num_attention_heads"] = c.n_head;
  j["intermediate_size"] = c.d_ff;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_seq_len;
  // The erf GELU is transformers' "gelu"; the tanh approximation "gelu_new".
  j["hidden_act"] = c.mlp == ModelCard::Mlp::gelu_exact ? "gelu" : "gelu_new";
  j["layer_norm_eps"] = json_float(c.norm_eps);
  j["initializer_range"] = json_float(c.init_std);
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["use_parallel_residual"] = c.parallel_residual;
  j["attention_bias"] = c.qkv_bias;
  j["rotary_pct"] = pct;
  j["rotary_emb_base"] = json_float(c.rope_theta);
  j["rope_scaling"] = nullptr;
  j["attention_dropout"] = 0.0;
  j["hidden_dropout"] = 0.0;
  j["use_cache"] = true;
  return finish_config(std::move(j), opt, card_owner(c));
}

// RwkvConfig. It has no initializer_range or maximum-length key other than
// context_length; the card's init_std (only the random init) is not written.
Result<std::string> rwkv_config_json(const ModelCard& c, const HfConfigExport& opt) {
  if (c.norm != ModelCard::Norm::layernorm) {
    return card_key_error(c, "norm", "norm rmsnorm cannot be exported as rwkv (LayerNorm only)");
  }
  if (c.pos_encoding != ModelCard::PosEncoding::none) {
    return card_key_error(c, "pos_encoding",
                          fmt::format("pos_encoding {} cannot be exported as rwkv (none: the "
                                      "recurrence orders the tokens)",
                                      pos_str(c.pos_encoding)));
  }
  json j;
  j["architectures"] = json::array({"RwkvForCausalLM"});
  j["model_type"] = "rwkv";
  j["hidden_size"] = c.d_model;
  j["num_hidden_layers"] = c.n_layer;
  j["vocab_size"] = c.vocab_size;
  j["context_length"] = c.max_seq_len;
  j["attention_hidden_size"] =
      c.rwkv_attention_hidden_size > 0 ? c.rwkv_attention_hidden_size : c.d_model;
  j["intermediate_size"] = c.d_ff;
  j["layer_norm_epsilon"] = json_float(c.norm_eps);
  // 0 = none (RwkvConfig's default would be 6: written explicitly).
  j["rescale_every"] = c.rwkv_rescale_every;
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["use_cache"] = true;
  return finish_config(std::move(j), opt, card_owner(c));
}

// The MoE keys (see read_moe). moe_z_loss_coef and moe_capacity_factor are
// training policies no transformers config holds (its MoE is dropless and
// has no z-loss); they do not change the function the weights compute at
// inference and are not written (they read back as 0).
Status write_moe(const ModelCard& c, const std::string& mt, json& j) {
  const bool mixtral = mt == "mixtral";
  if (c.moe_router != ModelCard::MoeRouter::softmax) {
    return card_key_error(c, "moe_router",
                          fmt::format("moe_router sigmoid cannot be exported as {} (a softmax "
                                      "top-k router)",
                                      mt));
  }
  if (mixtral && c.moe_shared_experts > 0) {
    return card_key_error(c, "moe_shared_experts",
                          "mixtral has no shared experts (qwen2_moe has one, with its gate)");
  }
  if (mixtral && !c.moe_norm_topk_prob) {
    return card_key_error(c, "moe_norm_topk_prob",
                          "mixtral always renormalises the top-k weights: moe_norm_topk_prob "
                          "must be true (qwen2_moe has norm_topk_prob)");
  }
  if (!mixtral && c.moe_shared_experts == 0) {
    return card_key_error(c, "moe_shared_experts",
                          "qwen2_moe always has a shared expert with its gate: "
                          "moe_shared_experts must be > 0 (mixtral has none)");
  }
  j["num_experts_per_tok"] = c.moe_top_k;
  // transformers adds the balance loss only with output_router_logits.
  j["output_router_logits"] = c.moe_aux_loss_coef > 0.0f;
  j["router_aux_loss_coef"] = json_float(c.moe_aux_loss_coef);
  if (mixtral) {
    j["num_local_experts"] = c.moe_experts;
    j["intermediate_size"] = c.moe_expert_d_ff();  // the experts' width
    j["router_jitter_noise"] = 0.0;
    return Status::Ok();
  }
  j["num_experts"] = c.moe_experts;
  j["intermediate_size"] = c.d_ff;  // the dense MLP's (no layer has one)
  j["moe_intermediate_size"] = c.moe_expert_d_ff();
  // n shared experts of width w are one MLP of n w (nn/moe.h): Qwen2-MoE's one.
  j["shared_expert_intermediate_size"] = c.moe_shared_width();
  j["norm_topk_prob"] = c.moe_norm_topk_prob;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = json::array();
  j["qkv_bias"] = c.qkv_bias;
  return Status::Ok();
}

}  // namespace el::io::hf_parts
