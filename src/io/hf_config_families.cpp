// hf_config_families.cpp — config.json readers of the families whose layout
// is not Llama's dense one: gpt_neox (Pythia), rwkv, deepseek_v3 / v2 (MLA)
// and the mixture of experts of mixtral / qwen2_moe (the mapping tables are
// in io/hf_config.h; hf_config_parts.h says how the files divide).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "io/hf_config_parts.h"
#include "io/suggest.h"

namespace el::io::hf_parts {

namespace {

// GPT-NeoX's hidden_act values: the erf GELU, and the tanh approximation
// under its three transformers names.
const std::vector<std::string> kNeoxActs = {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"};

}  // namespace

// model_type gpt_neox (GPTNeoXConfig, Pythia): LayerNorm with bias, GELU MLP
// with biases, attention_bias on query_key_value and dense, partial rotary,
// parallel residual. v4 names the rotary keys rotary_pct / rotary_emb_base
// (and rope_scaling), v5 rope_parameters.partial_rotary_factor / rope_theta.
Status read_gpt_neox(const Reader& r, ModelCard& c) {
  c.norm = ModelCard::Norm::layernorm;
  c.pos_encoding = ModelCard::PosEncoding::rope;
  EL_TRY_ASSIGN(std::string act, r.string_or("hidden_act", "gelu"));
  if (std::find(kNeoxActs.begin(), kNeoxActs.end(), act) == kNeoxActs.end()) {
    return r.error("hidden_act",
                   fmt::format("hidden_act '{}' is not supported for gpt_neox{}", act,
                               did_you_mean(act, kNeoxActs)),
                   "supported: " + quoted_list(kNeoxActs));
  }
  c.mlp = act == "gelu" ? ModelCard::Mlp::gelu_exact : ModelCard::Mlp::gelu;
  c.mlp_bias = true;  // GPTNeoXMLP: nn.Linear defaults
  for (const char* key : {"attention_dropout", "hidden_dropout"}) {
    EL_TRY_ASSIGN(double p, r.number_or(key, 0.0));
    if (p != 0.0) {
      return r.error(key, fmt::format("{} {} is not supported (the engine has no dropout)", key, p),
                     "set it to 0.0");
    }
  }
  EL_TRY_ASSIGN(c.d_model, r.size("hidden_size"));
  EL_TRY_ASSIGN(c.n_layer, r.size("num_hidden_layers"));
  EL_TRY_ASSIGN(c.n_head, r.size("num_attention_heads"));
  c.n_kv_head = c.n_head;
  c.head_dim = 0;
  if (c.d_model % c.n_head != 0) {
    return r.error("num_attention_heads",
                   fmt::format("hidden_size ({}) must be divisible by num_attention_heads ({})",
                               c.d_model, c.n_head));
  }
  EL_TRY_ASSIGN(c.d_ff, r.size("intermediate_size"));
  EL_TRY_ASSIGN(c.vocab_size, r.size("vocab_size"));
  EL_TRY_ASSIGN(c.max_seq_len, r.size_or("max_position_embeddings", 2048));
  EL_TRY_ASSIGN(double eps, r.number_or("layer_norm_eps", 1e-5));
  EL_TRY_ASSIGN(c.norm_eps, r.positive_float("layer_norm_eps", eps));
  EL_TRY_ASSIGN(double init_std, r.number_or("initializer_range", 0.02));
  EL_TRY_ASSIGN(c.init_std, r.positive_float("initializer_range", init_std));
  EL_TRY_ASSIGN(c.tied_embeddings, r.boolean_or("tie_word_embeddings", false));
  EL_TRY_ASSIGN(c.parallel_residual, r.boolean_or("use_parallel_residual", true));
  EL_TRY_ASSIGN(bool bias, r.boolean_or("attention_bias", true));
  c.qkv_bias = c.o_bias = bias;

  // Rotary: rope_parameters (v5) or rope_scaling (v4), with the v4 top-level
  // keys as fallbacks, as GPTNeoXConfig.convert_rope_params_to_dict reads them.
  const std::string key = r.given("rope_parameters") ? "rope_parameters" : "rope_scaling";
  double theta = 10000.0, partial = 0.25;
  std::string theta_key = "rotary_emb_base", partial_key = "rotary_pct";
  EL_TRY_ASSIGN(theta, r.number_or("rotary_emb_base", theta));
  EL_TRY_ASSIGN(partial, r.number_or("rotary_pct", partial));
  if (r.given(key)) {
    const json& rs = r.at(key);
    if (!rs.is_object()) return r.error(key, "expected an object or null, got " + shown(rs));
    const Reader p(rs, r.source(), key + ".");
    const std::string type_key = p.given("rope_type") ? "rope_type" : "type";
    EL_TRY_ASSIGN(std::string type, p.string_or(type_key, "default"));
    if (type != "default") {
      return p.error(type_key, fmt::format("rope type '{}' is not supported for gpt_neox", type),
                     "only 'default' (unscaled RoPE)");
    }
    if (p.given("rope_theta")) {
      EL_TRY_ASSIGN(theta, p.number("rope_theta"));
      theta_key = key + ".rope_theta";
    }
    if (p.given("partial_rotary_factor")) {
      EL_TRY_ASSIGN(partial, p.number("partial_rotary_factor"));
      partial_key = key + ".partial_rotary_factor";
    }
  }
  EL_TRY_ASSIGN(c.rope_theta, r.positive_float(theta_key, theta));
  const int head_dim = c.d_model / c.n_head;
  // int(head_size * partial_rotary_factor), as transformers computes rotary_ndims.
  const double dims = std::floor(static_cast<double>(head_dim) * partial);
  if (!(partial > 0.0 && partial <= 1.0) || dims < 2.0 || static_cast<int>(dims) % 2 != 0) {
    return r.error(partial_key,
                   fmt::format("{} gives {} rotary dims of the head's {}; they must be even and "
                               "at least 2 (0 < factor <= 1)",
                               partial, dims, head_dim),
                   "RoPE rotates dimensions in pairs");
  }
  c.rotary_dims = static_cast<int>(dims) == head_dim ? 0 : static_cast<int>(dims);
  if (head_dim % 2 != 0) {
    return r.error("num_attention_heads",
                   fmt::format("head dim {} must be even (RoPE rotates pairs)", head_dim));
  }
  return Status::Ok();
}

// model_type rwkv (RwkvConfig, RWKV-4): block: rwkv with LayerNorms, no
// positional encoding. attention_hidden_size and intermediate_size default
// (absent or null) to hidden_size and 4 hidden_size, as the config does;
// rescale_every (default 6) maps to rwkv_rescale_every (<= 0: none), which
// the engine runs exactly (nn/rwkv.h). RwkvConfig has no other key that
// changes the computation.
Status read_rwkv(const Reader& r, ModelCard& c) {
  c.block = ModelCard::Block::rwkv;
  c.norm = ModelCard::Norm::layernorm;
  c.pos_encoding = ModelCard::PosEncoding::none;
  c.n_head = c.n_kv_head = c.head_dim = 0;
  EL_TRY_ASSIGN(c.d_model, r.size("hidden_size"));
  EL_TRY_ASSIGN(c.n_layer, r.size("num_hidden_layers"));
  EL_TRY_ASSIGN(c.vocab_size, r.size("vocab_size"));
  EL_TRY_ASSIGN(c.max_seq_len, r.size_or("context_length", 1024));
  EL_TRY_ASSIGN(const int attention, r.size_or("attention_hidden_size", c.d_model));
  c.rwkv_attention_hidden_size = attention == c.d_model ? 0 : attention;  // 0: d_model
  if (r.given("intermediate_size")) {
    EL_TRY_ASSIGN(c.d_ff, r.size("intermediate_size"));
  } else if (int64_t{4} * c.d_model > std::numeric_limits<int>::max()) {
    return r.error("hidden_size",
                   fmt::format("hidden_size {} makes the default intermediate_size (4 x {}) "
                               "exceed 2^31 - 1",
                               c.d_model, c.d_model),
                   "give intermediate_size");
  } else {
    c.d_ff = 4 * c.d_model;  // RwkvConfig's default
  }
  EL_TRY_ASSIGN(double eps, r.number_or("layer_norm_epsilon", 1e-5));
  EL_TRY_ASSIGN(c.norm_eps, r.positive_float("layer_norm_epsilon", eps));
  EL_TRY_ASSIGN(c.tied_embeddings, r.boolean_or("tie_word_embeddings", false));
  EL_TRY_ASSIGN(std::optional<int64_t> rescale, r.opt_int("rescale_every"));
  const int64_t every = rescale.value_or(6);
  if (every > std::numeric_limits<int>::max()) {
    return r.error("rescale_every", fmt::format("rescale_every {} is out of range", every));
  }
  c.rwkv_rescale_every = every > 0 ? static_cast<int>(every) : 0;
  return Status::Ok();
}

// model_type deepseek_v3 / deepseek_v2 (DeepseekV3Config / DeepseekV2Config):
// multi-head latent attention (attention: mla, nn/mla.h) with dense SwiGLU
// MLPs only. Both families run layer i's MLP as an MoE when i >=
// first_k_dense_replace, so a config is accepted only when that covers every
// layer. RoPE: interleaved pairs (V2 always; V3 with rope_interleave, its
// default), default / linear / llama3 frequencies (read_rope; yarn is refused
// there). num_key_value_heads is ignored, as transformers' MLA ignores it.
Status read_deepseek(const Reader& r, const std::string& mt, ModelCard& c) {
  c.norm = ModelCard::Norm::rmsnorm;
  c.pos_encoding = ModelCard::PosEncoding::rope;
  c.mlp = ModelCard::Mlp::swiglu;
  c.attention = ModelCard::Attention::mla;
  EL_TRY_ASSIGN(c.d_model, r.size("hidden_size"));
  EL_TRY_ASSIGN(c.n_layer, r.size("num_hidden_layers"));
  EL_TRY_ASSIGN(c.n_head, r.size("num_attention_heads"));
  c.n_kv_head = c.n_head;
  c.head_dim = 0;
  // DeepseekV3Config's default is 3, DeepseekV2Config's 0.
  EL_TRY_ASSIGN(std::optional<int64_t> dense, r.opt_int("first_k_dense_replace"));
  const int64_t first_moe = dense ? *dense : (mt == "deepseek_v3" ? 3 : 0);
  if (first_moe < c.n_layer) {
    return r.error(
        "first_k_dense_replace",
        fmt::format("first_k_dense_replace ({}{}) is below num_hidden_layers ({}): layers {} to {} "
                    "use the mixture-of-experts MLP (n_routed_experts, n_shared_experts, "
                    "num_experts_per_tok, moe_intermediate_size), which this engine does not "
                    "implement",
                    first_moe, dense ? "" : ", the default", c.n_layer, std::max<int64_t>(0, first_moe),
                    c.n_layer - 1),
        "only dense DeepSeek checkpoints load: first_k_dense_replace >= num_hidden_layers");
  }
  if (mt == "deepseek_v3") {
    EL_TRY_ASSIGN(bool interleave, r.boolean_or("rope_interleave", true));
    if (!interleave) {
      return r.error("rope_interleave",
                     "rope_interleave false is not supported (MLA rotates DeepSeek's interleaved "
                     "pairs x[2i], x[2i+1])",
                     "set it to true (the DeepSeek-V3 default)");
    }
  }
  EL_TRY_ASSIGN(c.d_ff, r.size("intermediate_size"));
  EL_TRY_ASSIGN(c.vocab_size, r.size("vocab_size"));
  EL_TRY_ASSIGN(c.max_seq_len,
                r.size_or("max_position_embeddings", mt == "deepseek_v3" ? 4096 : 2048));
  EL_TRY_ASSIGN(double eps, r.number_or("rms_norm_eps", 1e-6));
  EL_TRY_ASSIGN(c.norm_eps, r.positive_float("rms_norm_eps", eps));
  EL_TRY_ASSIGN(double init_std, r.number_or("initializer_range", 0.02));
  EL_TRY_ASSIGN(c.init_std, r.positive_float("initializer_range", init_std));
  EL_TRY_ASSIGN(c.tied_embeddings, r.boolean_or("tie_word_embeddings", false));
  // attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj (mla.cpp's qkv_bias / o_bias).
  EL_TRY_ASSIGN(bool bias, r.boolean_or("attention_bias", false));
  c.qkv_bias = c.o_bias = bias;
  EL_TRY_ASSIGN(std::optional<int> q_lora, r.opt_size("q_lora_rank"));  // null: no compression
  c.q_lora_rank = q_lora ? *q_lora : 0;
  EL_TRY_ASSIGN(c.kv_lora_rank, r.size("kv_lora_rank"));
  EL_TRY_ASSIGN(c.qk_nope_head_dim, r.size("qk_nope_head_dim"));
  EL_TRY_ASSIGN(c.qk_rope_head_dim, r.size("qk_rope_head_dim"));
  EL_TRY_ASSIGN(c.v_head_dim, r.size("v_head_dim"));
  if (c.qk_rope_head_dim % 2 != 0) {
    return r.error("qk_rope_head_dim",
                   fmt::format("qk_rope_head_dim ({}) must be even (RoPE rotates pairs)",
                               c.qk_rope_head_dim));
  }
  return read_rope(r, c);
}

// model_type mixtral / qwen2_moe: the sparse MoE MLP of every layer
// (nn/moe.h; the mapping in hf_config.h). Both routers are softmax top-k.
Status read_moe(const Reader& r, const std::string& mt, ModelCard& c) {
  const bool mixtral = mt == "mixtral";
  const std::string experts_key = mixtral ? "num_local_experts" : "num_experts";
  EL_TRY_ASSIGN(c.moe_experts, r.size_or(experts_key, mixtral ? 8 : 60));
  if (c.moe_experts > kMoeMaxExperts) {
    return r.error(experts_key,
                   fmt::format("{} {} is above the engine's limit {}", experts_key, c.moe_experts,
                               kMoeMaxExperts),
                   "the CUDA router holds a token's scores of every expert in one warp");
  }
  EL_TRY_ASSIGN(c.moe_top_k, r.size_or("num_experts_per_tok", mixtral ? 2 : 4));
  if (c.moe_top_k > c.moe_experts) {
    return r.error("num_experts_per_tok",
                   fmt::format("num_experts_per_tok ({}) exceeds {} ({})", c.moe_top_k,
                               experts_key, c.moe_experts),
                   "a token cannot choose more experts than there are");
  }
  c.moe_router = ModelCard::MoeRouter::softmax;
  // transformers adds the load-balancing loss only with output_router_logits;
  // it has no z-loss and never drops tokens.
  EL_TRY_ASSIGN(bool router_logits, r.boolean_or("output_router_logits", false));
  EL_TRY_ASSIGN(double coef, r.number_or("router_aux_loss_coef", 0.001));
  if (!(coef >= 0.0) || !std::isfinite(coef)) {
    return r.error("router_aux_loss_coef", fmt::format("must be a number >= 0, got {}", coef));
  }
  c.moe_aux_loss_coef = router_logits ? static_cast<float>(coef) : 0.0f;
  c.moe_z_loss_coef = 0.0f;
  c.moe_capacity_factor = 0.0f;
  if (mixtral) {
    c.moe_norm_topk_prob = true;  // MixtralTopKRouter always renormalises
    c.moe_d_ff = 0;               // the experts' width is intermediate_size (d_ff)
    EL_TRY_ASSIGN(double jitter, r.number_or("router_jitter_noise", 0.0));
    if (jitter != 0.0) {
      return r.error("router_jitter_noise",
                     fmt::format("router_jitter_noise {} is not supported (the engine's router "
                                 "has no input noise)",
                                 jitter),
                     "set it to 0.0");
    }
    return Status::Ok();
  }
  // qwen2_moe: every layer sparse, experts of moe_intermediate_size, one
  // shared expert of shared_expert_intermediate_size with its sigmoid gate.
  EL_TRY_ASSIGN(std::optional<int64_t> step, r.opt_int("decoder_sparse_step"));
  if (step.value_or(1) != 1) {
    return r.error("decoder_sparse_step",
                   fmt::format("decoder_sparse_step {} is not supported: only every layer sparse "
                               "(1); layers with a dense MLP between MoE layers are not "
                               "implemented",
                               *step));
  }
  if (r.given("mlp_only_layers")) {
    const json& dense = r.at("mlp_only_layers");
    if (!dense.is_array()) return r.error("mlp_only_layers", "expected a list, got " + shown(dense));
    if (!dense.empty()) {
      return r.error("mlp_only_layers",
                     fmt::format("mlp_only_layers {} is not supported: every layer must be a "
                                 "mixture of experts",
                                 dense.dump()),
                     "only configs with mlp_only_layers [] load");
    }
  }
  EL_TRY_ASSIGN(c.moe_norm_topk_prob, r.boolean_or("norm_topk_prob", false));
  EL_TRY_ASSIGN(const int width, r.size_or("moe_intermediate_size", 1408));
  c.moe_d_ff = width == c.d_ff ? 0 : width;
  EL_TRY_ASSIGN(const int shared, r.size_or("shared_expert_intermediate_size", 5632));
  c.moe_shared_experts = 1;
  c.moe_shared_d_ff = shared == width ? 0 : shared;
  return Status::Ok();
}

}  // namespace el::io::hf_parts
