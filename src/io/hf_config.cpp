#include "io/hf_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/suggest.h"

namespace el::io {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string> kModelTypes = {"llama",    "mistral",     "qwen2",
                                               "gpt_neox", "deepseek_v3", "deepseek_v2",
                                               "rwkv",     "mamba",       "mixtral",
                                               "qwen2_moe"};
// GPT-NeoX's hidden_act values: the erf GELU, and the tanh approximation
// under its three transformers names.
const std::vector<std::string> kNeoxActs = {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"};
const std::vector<std::string> kRopeTypes = {"default", "linear", "llama3"};
// Known rope types we cannot run: reported as "not supported", not "unknown".
const std::vector<std::string> kUnsupportedRopeTypes = {"dynamic", "yarn",  "longrope",    "su",
                                                        "ntk",     "mrope", "proportional"};
const char* const kPassthroughKeys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};

const char* kind_of(const json& j) {
  if (j.is_object()) return "an object";
  if (j.is_array()) return "a list";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_null()) return "null";
  if (j.is_number_float()) return "a non-integer number";
  return "an integer";
}

std::string shown(const json& j) {
  std::string s = j.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return fmt::format("{} {}", kind_of(j), s);
}

// Typed reads from one JSON object; `prefix` qualifies nested keys in errors
// ("rope_scaling.factor"). Absent and null both mean "not given", as in
// transformers (a null field takes the class default).
class Reader {
 public:
  Reader(const json& obj, std::string source, std::string prefix = {})
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  const std::string& source() const { return source_; }
  std::string where(const std::string& key) const {
    return fmt::format("{}: key '{}{}'", source_, prefix_, key);
  }
  Error error(const std::string& key, std::string what, std::string hint = {}) const {
    return make_error(std::move(what), where(key), std::move(hint));
  }
  // Written in the file, even as null (null and absent differ for a few keys).
  bool present(const std::string& key) const { return obj_.find(key) != obj_.end(); }
  bool given(const std::string& key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  const json& at(const std::string& key) const { return obj_.at(key); }

  Result<std::optional<int64_t>> opt_int(const std::string& key) const {
    if (!given(key)) return std::optional<int64_t>{};
    const json& v = at(key);
    if (!v.is_number_integer()) return error(key, "expected an integer, got " + shown(v));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return error(key, "integer " + v.dump() + " is out of range");
    return std::optional<int64_t>{v.get<int64_t>()};
  }
  // A positive integer that fits the card's int fields.
  Result<std::optional<int>> opt_size(const std::string& key) const {
    EL_TRY_ASSIGN(std::optional<int64_t> v, opt_int(key));
    if (!v) return std::optional<int>{};
    if (*v <= 0 || *v > std::numeric_limits<int>::max())
      return error(key, fmt::format("must be a positive integer below 2^31, got {}", *v));
    return std::optional<int>{static_cast<int>(*v)};
  }
  Result<int> size(const std::string& key) const {
    EL_TRY_ASSIGN(std::optional<int> v, opt_size(key));
    if (!v) return error(key, "missing required key");
    return *v;
  }
  Result<int> size_or(const std::string& key, int fallback) const {
    EL_TRY_ASSIGN(std::optional<int> v, opt_size(key));
    return v ? *v : fallback;
  }
  Result<std::optional<double>> opt_number(const std::string& key) const {
    if (!given(key)) return std::optional<double>{};
    const json& v = at(key);
    if (!v.is_number()) return error(key, "expected a number, got " + shown(v));
    return std::optional<double>{v.get<double>()};
  }
  Result<double> number(const std::string& key) const {
    EL_TRY_ASSIGN(std::optional<double> v, opt_number(key));
    if (!v) return error(key, "missing required key");
    return *v;
  }
  Result<double> number_or(const std::string& key, double fallback) const {
    EL_TRY_ASSIGN(std::optional<double> v, opt_number(key));
    return v ? *v : fallback;
  }
  // A positive number stored as the card's f32.
  Result<float> positive_float(const std::string& key, double v) const {
    if (!(v > 0.0) || v > std::numeric_limits<float>::max())
      return error(key, fmt::format("must be a positive number, got {}", v));
    return static_cast<float>(v);
  }
  Result<bool> boolean_or(const std::string& key, bool fallback) const {
    if (!given(key)) return fallback;
    const json& v = at(key);
    if (!v.is_boolean()) return error(key, "expected true or false, got " + shown(v));
    return v.get<bool>();
  }
  Result<std::string> string_or(const std::string& key, std::string fallback) const {
    if (!given(key)) return fallback;
    const json& v = at(key);
    if (!v.is_string()) return error(key, "expected a string, got " + shown(v));
    return v.get<std::string>();
  }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
};

// RoPE base and scaling: v5's "rope_parameters", else v4's "rope_scaling"
// with a top-level "rope_theta".
// default_theta: the config class's (MixtralConfig: 1e6).
Status read_rope(const Reader& top, ModelCard& c, double default_theta = 10000.0) {
  const std::string key = top.given("rope_parameters") ? "rope_parameters" : "rope_scaling";
  double theta = default_theta;  // transformers' default for these families
  EL_TRY_ASSIGN(theta, top.number_or("rope_theta", theta));
  std::string theta_key = "rope_theta";
  c.rope_scaling = ModelCard::RopeScaling::none;
  if (top.given(key)) {
    const json& rs = top.at(key);
    if (!rs.is_object()) return top.error(key, "expected an object or null, got " + shown(rs));
    const Reader r(rs, top.source(), key + ".");
    if (r.given("rope_theta")) {
      EL_TRY_ASSIGN(theta, r.number("rope_theta"));
      theta_key = key + ".rope_theta";
    }
    // v4.43+ writes "rope_type", older configs "type".
    const std::string type_key = r.given("rope_type") ? "rope_type" : "type";
    EL_TRY_ASSIGN(std::string type, r.string_or(type_key, "default"));
    if (std::find(kRopeTypes.begin(), kRopeTypes.end(), type) == kRopeTypes.end()) {
      const bool known = std::find(kUnsupportedRopeTypes.begin(), kUnsupportedRopeTypes.end(),
                                   type) != kUnsupportedRopeTypes.end();
      return r.error(type_key,
                     known ? fmt::format("rope type '{}' is not supported", type)
                           : fmt::format("unknown rope type '{}'{}", type,
                                         did_you_mean(type, kRopeTypes)),
                     "supported rope types: " + quoted_list(kRopeTypes));
    }
    EL_TRY_ASSIGN(double partial, r.number_or("partial_rotary_factor", 1.0));
    if (partial != 1.0) {
      return r.error("partial_rotary_factor",
                     fmt::format("partial_rotary_factor {} is not supported (only 1.0: RoPE on "
                                 "the whole head)",
                                 partial));
    }
    if (type != "default") {
      EL_TRY_ASSIGN(double factor, r.number("factor"));
      EL_TRY_ASSIGN(c.rope_scaling_factor, r.positive_float("factor", factor));
      c.rope_scaling = ModelCard::RopeScaling::linear;
    }
    if (type == "llama3") {
      c.rope_scaling = ModelCard::RopeScaling::llama3;
      EL_TRY_ASSIGN(double low, r.number("low_freq_factor"));
      EL_TRY_ASSIGN(double high, r.number("high_freq_factor"));
      EL_TRY_ASSIGN(c.rope_low_freq_factor, r.positive_float("low_freq_factor", low));
      EL_TRY_ASSIGN(c.rope_high_freq_factor, r.positive_float("high_freq_factor", high));
      if (!(high > low)) {
        return r.error("high_freq_factor",
                       fmt::format("high_freq_factor ({}) must be greater than low_freq_factor ({})",
                                   high, low));
      }
      EL_TRY_ASSIGN(std::optional<int> orig, r.opt_size("original_max_position_embeddings"));
      if (!orig) return r.error("original_max_position_embeddings", "missing required key");
      c.rope_original_max_seq_len = *orig;
    }
  }
  EL_TRY_ASSIGN(c.rope_theta, top.positive_float(theta_key, theta));
  return Status::Ok();
}

// The sliding window as the family declares it (see the header). As in
// transformers, an absent "sliding_window" takes the config class's default
// (4096) and an explicit null means none.
Status read_sliding_window(const Reader& r, const std::string& model_type, int n_layer,
                           ModelCard& c) {
  c.sliding_window = 0;
  if (model_type == "llama") return Status::Ok();
  const bool null_window = r.present("sliding_window") && !r.given("sliding_window");
  if (null_window) return Status::Ok();
  if (model_type == "mixtral") {  // MixtralConfig: sliding_window defaults to None
    EL_TRY_ASSIGN(c.sliding_window, r.size_or("sliding_window", 0));
    return Status::Ok();
  }
  if (model_type == "mistral") {
    EL_TRY_ASSIGN(c.sliding_window, r.size_or("sliding_window", 4096));
    return Status::Ok();
  }
  // qwen2: the window applies only with use_sliding_window, and only to the
  // layers listed as "sliding_attention" (v5's layer_types) or, without that
  // list, to layers at index >= max_window_layers.
  EL_TRY_ASSIGN(bool use, r.boolean_or("use_sliding_window", false));
  if (!use) return Status::Ok();
  bool any_sliding = false;
  if (r.given("layer_types")) {
    const json& lt = r.at("layer_types");
    if (!lt.is_array()) return r.error("layer_types", "expected a list, got " + shown(lt));
    for (const auto& t : lt) any_sliding = any_sliding || (t.is_string() && t == "sliding_attention");
  } else {
    EL_TRY_ASSIGN(std::optional<int64_t> mwl, r.opt_int("max_window_layers"));
    any_sliding = mwl.value_or(28) < n_layer;  // 28: Qwen2Config's default
  }
  if (any_sliding) {
    EL_TRY_ASSIGN(c.sliding_window, r.size_or("sliding_window", 4096));
  }
  return Status::Ok();
}

// The card checks of validate_model_card, phrased with config.json's keys.
Status check_shapes(const Reader& r, const ModelCard& c, bool head_dim_given) {
  if (c.n_head % c.n_kv_head != 0) {
    return r.error("num_key_value_heads",
                   fmt::format("num_attention_heads ({}) must be divisible by "
                               "num_key_value_heads ({})",
                               c.n_head, c.n_kv_head));
  }
  if (!head_dim_given && c.d_model % c.n_head != 0) {
    return r.error("num_attention_heads",
                   fmt::format("hidden_size ({}) must be divisible by num_attention_heads ({}) "
                               "when head_dim is not given",
                               c.d_model, c.n_head));
  }
  if (c.effective_head_dim() % 2 != 0) {
    return r.error(head_dim_given ? "head_dim" : "num_attention_heads",
                   fmt::format("head dim {} must be even (RoPE rotates pairs)",
                               c.effective_head_dim()));
  }
  return Status::Ok();
}

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
  EL_TRY_ASSIGN(c.d_ff, r.size_or("intermediate_size", 4 * c.d_model));
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

// "1e-06" rather than 9.999999974752427e-07 for a card's f32 1e-6f: the
// shortest decimal that reads back as the same f32, as a JSON double.
double json_float(float f) { return std::stod(fmt::format("{}", f)); }

}  // namespace

const std::vector<std::string>& hf_supported_model_types() { return kModelTypes; }

const char* hf_torch_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    default: return "";
  }
}

std::optional<DType> dtype_from_hf_name(const std::string& name) {
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    if (name == hf_torch_dtype_name(t)) return t;
  return std::nullopt;
}

Result<HfConfig> parse_hf_config(const std::string& json_text, const std::string& source_name,
                                 const std::string& card_name) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    return make_error(fmt::format("not valid JSON: {}", e.what()), source_name);
  }
  if (!root.is_object())
    return make_error("expected a JSON object, got " + shown(root), source_name);
  const Reader r(root, source_name);

  HfConfig out;
  EL_TRY_ASSIGN(out.model_type, r.string_or("model_type", ""));
  if (std::find(kModelTypes.begin(), kModelTypes.end(), out.model_type) == kModelTypes.end()) {
    return r.error("model_type",
                   out.model_type.empty()
                       ? std::string("missing model_type")
                       : fmt::format("unsupported model_type '{}'{}", out.model_type,
                                     did_you_mean(out.model_type, kModelTypes)),
                   "supported model types: " + quoted_list(kModelTypes));
  }
  const std::string& mt = out.model_type;
  if (r.given("quantization_config")) {
    return r.error("quantization_config", "quantized checkpoints are not supported",
                   "use the unquantized (float32/bfloat16/float16) checkpoint");
  }
  // v5 writes "dtype", v4 "torch_dtype".
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (!r.given(key) || !out.torch_dtype.empty()) continue;
    EL_TRY_ASSIGN(out.torch_dtype, r.string_or(key, ""));
  }
  for (const char* key : kPassthroughKeys) {
    if (r.given(key)) out.passthrough[key] = root.at(key).dump();
  }
  if (mt == "gpt_neox") {
    out.card.source_path = source_name;
    out.card.name = card_name.empty() ? mt : card_name;
    EL_TRY(read_gpt_neox(r, out.card));
    return out;
  }
  if (mt == "rwkv") {
    out.card.source_path = source_name;
    out.card.name = card_name.empty() ? mt : card_name;
    EL_TRY(read_rwkv(r, out.card));
    return out;
  }
  if (mt == "mamba") {
    out.card.source_path = source_name;
    out.card.name = card_name.empty() ? mt : card_name;
    EL_TRY(read_mamba(r, out.card));
    return out;
  }
  EL_TRY_ASSIGN(std::string act, r.string_or("hidden_act", "silu"));
  if (act != "silu") {
    return r.error("hidden_act",
                   fmt::format("hidden_act '{}' is not supported; the {} family's SwiGLU MLP "
                               "needs 'silu'",
                               act, mt));
  }
  if (mt == "llama") {
    EL_TRY_ASSIGN(bool mlp_bias, r.boolean_or("mlp_bias", false));
    if (mlp_bias) return r.error("mlp_bias", "mlp_bias true is not supported (MLP without biases)");
  }
  EL_TRY_ASSIGN(double dropout, r.number_or("attention_dropout", 0.0));
  if (dropout != 0.0) {
    return r.error("attention_dropout",
                   fmt::format("attention_dropout {} is not supported (the engine has no "
                               "attention dropout)",
                               dropout),
                   "set it to 0.0");
  }
  if (mt == "deepseek_v3" || mt == "deepseek_v2") {
    out.card.source_path = source_name;
    out.card.name = card_name.empty() ? mt : card_name;
    EL_TRY(read_deepseek(r, mt, out.card));
    return out;
  }

  ModelCard& c = out.card;
  c.source_path = source_name;
  c.name = card_name.empty() ? mt : card_name;
  c.norm = ModelCard::Norm::rmsnorm;
  c.pos_encoding = ModelCard::PosEncoding::rope;
  c.mlp = ModelCard::Mlp::swiglu;
  EL_TRY_ASSIGN(c.d_model, r.size("hidden_size"));
  EL_TRY_ASSIGN(c.n_layer, r.size("num_hidden_layers"));
  EL_TRY_ASSIGN(c.n_head, r.size("num_attention_heads"));
  EL_TRY_ASSIGN(c.n_kv_head, r.size_or("num_key_value_heads", c.n_head));
  EL_TRY_ASSIGN(std::optional<int> head_dim, r.opt_size("head_dim"));
  // 0 (derived) when it is what d_model / n_head gives, like our own cards.
  c.head_dim = head_dim && !(c.d_model % c.n_head == 0 && *head_dim == c.d_model / c.n_head)
                   ? *head_dim
                   : 0;
  EL_TRY_ASSIGN(c.d_ff, r.size("intermediate_size"));
  EL_TRY_ASSIGN(c.vocab_size, r.size("vocab_size"));
  // transformers' per-family defaults when the key is absent.
  const int default_positions =
      mt == "llama" ? 2048 : mt == "mistral" || mt == "mixtral" ? 131072 : 32768;
  EL_TRY_ASSIGN(c.max_seq_len, r.size_or("max_position_embeddings", default_positions));
  EL_TRY_ASSIGN(double eps, r.number_or("rms_norm_eps", mt == "mixtral" ? 1e-5 : 1e-6));
  EL_TRY_ASSIGN(c.norm_eps, r.positive_float("rms_norm_eps", eps));
  EL_TRY_ASSIGN(double init_std, r.number_or("initializer_range", 0.02));
  EL_TRY_ASSIGN(c.init_std, r.positive_float("initializer_range", init_std));
  EL_TRY_ASSIGN(c.tied_embeddings, r.boolean_or("tie_word_embeddings", false));
  if (mt == "llama") {
    EL_TRY_ASSIGN(bool bias, r.boolean_or("attention_bias", false));
    c.qkv_bias = c.o_bias = bias;  // LlamaAttention: bias on q, k, v and o
  } else {
    c.qkv_bias = mt == "qwen2";  // Qwen2Attention: q/k/v biases, none on o
    c.o_bias = false;
  }
  if (mt == "qwen2_moe") {  // v5 writes qkv_bias (default true); v4's attention always had them
    EL_TRY_ASSIGN(c.qkv_bias, r.boolean_or("qkv_bias", true));
  }
  EL_TRY(check_shapes(r, c, head_dim.has_value()));
  EL_TRY(read_rope(r, c, mt == "mixtral" ? 1e6 : 10000.0));
  EL_TRY(read_sliding_window(r, mt, c.n_layer, c));
  if (mt == "mixtral" || mt == "qwen2_moe") EL_TRY(read_moe(r, mt, c));
  return out;
}

Result<HfConfig> load_hf_config(const std::string& path) {
  EL_TRY_ASSIGN(std::string text, read_file(path));
  const fs::path dir = fs::path(path).parent_path();
  std::string name = fs::absolute(dir).lexically_normal().filename().string();
  if (name.empty()) name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  return parse_hf_config(text, path, name);
}

Result<std::string> hf_config_json(const ModelCard& card, const HfConfigExport& opt) {
  const std::string owner =
      !card.source_path.empty() ? card.source_path : fmt::format("model card '{}'", card.name);
  auto card_error = [&](const char* key, std::string what) {
    return make_error(std::move(what), fmt::format("{}: key '{}'", owner, key),
                      "Hugging Face llama/qwen2/mistral checkpoints cannot express it");
  };
  if (card.block == ModelCard::Block::rwkv)
    return card_error("block", "block rwkv cannot be exported (no RwkvConfig writer)");
  if (card.block == ModelCard::Block::mamba) return mamba_config_json(card, opt);
  if (card.norm != ModelCard::Norm::rmsnorm)
    return card_error("norm", "norm layernorm cannot be exported (rmsnorm only)");
  if (card.mlp != ModelCard::Mlp::swiglu) {
    return card_error("mlp", fmt::format("mlp {} cannot be exported (swiglu only)",
                                         card.mlp == ModelCard::Mlp::gelu ? "gelu" : "gelu_exact"));
  }
  if (card.parallel_residual)
    return card_error("parallel_residual", "parallel_residual cannot be exported");
  if (card.rotary_dims != 0)
    return card_error("rotary_dims", "a partial rotary (rotary_dims) cannot be exported");
  if (card.mlp_bias) return card_error("mlp_bias", "mlp_bias cannot be exported");
  if (card.pos_encoding != ModelCard::PosEncoding::rope) {
    using PE = ModelCard::PosEncoding;  // (names spelt out: pos_encoding_name is in el_engine)
    const PE pe = card.pos_encoding;
    const char* name = pe == PE::none         ? "none"
                       : pe == PE::sinusoidal ? "sinusoidal"
                       : pe == PE::learned    ? "learned"
                                              : "alibi";
    return card_error("pos_encoding",
                      fmt::format("pos_encoding {} cannot be exported (rope only)", name));
  }
  if (card.o_bias && !card.qkv_bias)
    return card_error("o_bias", "o_bias without qkv_bias matches no supported family");
  if (card.moe_experts > 0) {
    return card_error("moe_experts",
                      "a mixture-of-experts card cannot be exported (mixtral and qwen2_moe "
                      "configs are read, not written)");
  }
  if (card.attention != ModelCard::Attention::standard)
    return card_error("attention",
                      fmt::format("attention {} cannot be exported (deepseek_v3 configs are "
                                  "not written, NSA has no transformers family; standard "
                                  "attention only)",
                                  // (el_io does not link model_card.cpp's attention_name)
                                  card.attention == ModelCard::Attention::mla ? "mla" : "nsa"));

  std::string mt = opt.model_type;
  if (mt.empty()) {
    mt = card.qkv_bias && !card.o_bias ? "qwen2" : card.sliding_window > 0 ? "mistral" : "llama";
  }
  const std::vector<std::string> writable = {"llama", "mistral", "qwen2"};
  if (std::find(writable.begin(), writable.end(), mt) == writable.end()) {
    return make_error(fmt::format("unsupported model_type '{}' for export{}", mt,
                                  did_you_mean(mt, writable)),
                      owner, "model types written: " + quoted_list(writable));
  }
  if (mt == "qwen2" && !(card.qkv_bias && !card.o_bias))
    return card_error("qkv_bias", "qwen2 needs qkv_bias true and o_bias false");
  if (mt == "mistral" && (card.qkv_bias || card.o_bias))
    return card_error("qkv_bias", "mistral has no attention biases");
  if (mt == "llama" && card.qkv_bias != card.o_bias)
    return card_error("o_bias", "llama's attention_bias sets q/k/v and o biases together");
  if (mt == "llama" && card.sliding_window > 0)
    return card_error("sliding_window", "llama has no sliding window (use mistral or qwen2)");

  json j;
  j["architectures"] = json::array({mt == "llama"     ? "LlamaForCausalLM"
                                    : mt == "mistral" ? "MistralForCausalLM"
                                                      : "Qwen2ForCausalLM"});
  j["model_type"] = mt;
  j["hidden_size"] = card.d_model;
  j["num_hidden_layers"] = card.n_layer;
  j["num_attention_heads"] = card.n_head;
  j["num_key_value_heads"] = card.n_kv_head;
  j["head_dim"] = card.effective_head_dim();
  j["intermediate_size"] = card.d_ff;
  j["vocab_size"] = card.vocab_size;
  j["max_position_embeddings"] = card.max_seq_len;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = json_float(card.norm_eps);
  j["initializer_range"] = json_float(card.init_std);
  j["tie_word_embeddings"] = card.tied_embeddings;
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  j["rope_theta"] = json_float(card.rope_theta);
  json rs = nullptr;
  if (card.rope_scaling != ModelCard::RopeScaling::none) {
    rs = json::object();
    // (the card's names are transformers' rope types; spelt out here because
    // rope_scaling_name lives in the model layer)
    rs["rope_type"] = card.rope_scaling == ModelCard::RopeScaling::llama3 ? "llama3" : "linear";
    rs["factor"] = json_float(card.rope_scaling_factor);
    if (card.rope_scaling == ModelCard::RopeScaling::llama3) {
      rs["low_freq_factor"] = json_float(card.rope_low_freq_factor);
      rs["high_freq_factor"] = json_float(card.rope_high_freq_factor);
      rs["original_max_position_embeddings"] = card.rope_original_max_seq_len;
    }
  }
  j["rope_scaling"] = rs;
  if (mt == "llama") {
    j["attention_bias"] = card.qkv_bias;
    j["mlp_bias"] = false;
  } else if (mt == "mistral") {
    j["sliding_window"] = card.sliding_window > 0 ? json(card.sliding_window) : json(nullptr);
  } else {
    // Every layer slides when the card has a window (the engine rejects
    // longer sequences, so which layers slide never matters to it).
    const bool sliding = card.sliding_window > 0;
    j["use_sliding_window"] = sliding;
    j["sliding_window"] = sliding ? json(card.sliding_window) : json(nullptr);
    j["max_window_layers"] = sliding ? 0 : card.n_layer;
  }
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

}  // namespace el::io
