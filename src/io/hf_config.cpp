// hf_config.cpp — config.json <-> ModelCard (io/hf_config.h): the entry
// points (hf_config_json picks the family written), and the Llama / Qwen2 /
// Mistral layout both ways (also the attention part of mixtral / qwen2_moe).
// The other families are in hf_config_families.cpp (readers),
// hf_config_export.cpp (writers) and hf_config_mamba.cpp (hf_config_parts.h).
#include "io/hf_config.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/hf_config_parts.h"
#include "io/suggest.h"

namespace el::io {

namespace hf_parts {

namespace {

const std::vector<std::string> kRopeTypes = {"default", "linear", "llama3"};
// Known rope types we cannot run: reported as "not supported", not "unknown".
const std::vector<std::string> kUnsupportedRopeTypes = {"dynamic", "yarn",  "longrope",    "su",
                                                        "ntk",     "mrope", "proportional"};

}  // namespace

// RoPE base and scaling (hf_config_parts.h).
Status read_rope(const Reader& top, ModelCard& c, double default_theta) {
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

}  // namespace hf_parts

namespace {

using hf_parts::json;
using hf_parts::json_float;
using hf_parts::Reader;
using hf_parts::shown;
namespace fs = std::filesystem;

const std::vector<std::string> kModelTypes = {"llama",    "mistral",     "qwen2",
                                               "gpt_neox", "deepseek_v3", "deepseek_v2",
                                               "rwkv",     "mamba",       "mixtral",
                                               "qwen2_moe"};
const char* const kPassthroughKeys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};

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
    EL_TRY(hf_parts::read_gpt_neox(r, out.card));
    return out;
  }
  if (mt == "rwkv") {
    out.card.source_path = source_name;
    out.card.name = card_name.empty() ? mt : card_name;
    EL_TRY(hf_parts::read_rwkv(r, out.card));
    return out;
  }
  if (mt == "mamba") {
    out.card.source_path = source_name;
    out.card.name = card_name.empty() ? mt : card_name;
    EL_TRY(hf_parts::read_mamba(r, out.card));
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
    EL_TRY(hf_parts::read_deepseek(r, mt, out.card));
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
  EL_TRY(hf_parts::read_rope(r, c, mt == "mixtral" ? 1e6 : 10000.0));
  EL_TRY(read_sliding_window(r, mt, c.n_layer, c));
  if (mt == "mixtral" || mt == "qwen2_moe") EL_TRY(hf_parts::read_moe(r, mt, c));
  return out;
}

Result<HfConfig> load_hf_config(const std::string& path) {
  EL_TRY_ASSIGN(std::string text, read_file(path));
  const fs::path dir = fs::path(path).parent_path();
  std::string name = fs::absolute(dir).lexically_normal().filename().string();
  if (name.empty()) name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  return parse_hf_config(text, path, name);
}

namespace {

// The families written, and the block each one's layers are.
struct WrittenFamily {
  const char* model_type;
  const char* architecture;
  ModelCard::Block block;
};
constexpr WrittenFamily kWritten[] = {
    {"llama", "LlamaForCausalLM", ModelCard::Block::transformer},
    {"mistral", "MistralForCausalLM", ModelCard::Block::transformer},
    {"qwen2", "Qwen2ForCausalLM", ModelCard::Block::transformer},
    {"mixtral", "MixtralForCausalLM", ModelCard::Block::transformer},
    {"qwen2_moe", "Qwen2MoeForCausalLM", ModelCard::Block::transformer},
    {"gpt_neox", "GPTNeoXForCausalLM", ModelCard::Block::transformer},
    {"rwkv", "RwkvForCausalLM", ModelCard::Block::rwkv},
    {"mamba", "MambaForCausalLM", ModelCard::Block::mamba}};

const char* block_str(ModelCard::Block b) {  // (block_name is in el_engine)
  return b == ModelCard::Block::rwkv ? "rwkv" : b == ModelCard::Block::mamba ? "mamba" : "transformer";
}

// The Llama layout (llama, mistral, qwen2, and the attention part of
// mixtral / qwen2_moe): the card checks, then the keys.
Result<std::string> llama_layout_config_json(const ModelCard& card, const std::string& mt,
                                             const HfConfigExport& opt) {
  auto card_error = [&](const char* key, std::string what) {
    return hf_parts::card_key_error(card, key, std::move(what));
  };
  if (card.norm != ModelCard::Norm::rmsnorm) {
    return card_error("norm", fmt::format("norm layernorm cannot be exported as {} (rmsnorm "
                                          "only; gpt_neox has LayerNorm, with a GELU mlp)",
                                          mt));
  }
  if (card.mlp != ModelCard::Mlp::swiglu) {
    return card_error("mlp", fmt::format("mlp {} cannot be exported as {} (swiglu only; gpt_neox "
                                         "has a GELU MLP, with norm layernorm)",
                                         card.mlp == ModelCard::Mlp::gelu ? "gelu" : "gelu_exact",
                                         mt));
  }
  // GPT-NeoX's options: only that family holds them, and it needs LayerNorm.
  const std::pair<const char*, bool> neox_only[] = {{"parallel_residual", card.parallel_residual},
                                                    {"rotary_dims", card.rotary_dims != 0},
                                                    {"mlp_bias", card.mlp_bias}};
  for (const auto& [key, set] : neox_only) {
    if (set) {
      return card_error(key, fmt::format("{} cannot be exported as {} (only gpt_neox has it, "
                                         "with norm layernorm and a GELU mlp)",
                                         key, mt));
    }
  }
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
  if (card.attention != ModelCard::Attention::standard)
    return card_error("attention",
                      fmt::format("attention {} cannot be exported (deepseek_v3 configs are "
                                  "not written, NSA has no transformers family; standard "
                                  "attention only)",
                                  // (el_io does not link model_card.cpp's attention_name)
                                  card.attention == ModelCard::Attention::mla ? "mla" : "nsa"));
  const bool moe = mt == "mixtral" || mt == "qwen2_moe";
  if (card.moe_experts > 0 && !moe) {
    return card_error("moe_experts",
                      fmt::format("a mixture-of-experts card cannot be exported as {} (use "
                                  "mixtral or qwen2_moe)",
                                  mt));
  }
  if (card.moe_experts == 0 && moe) {
    return card_error("moe_experts",
                      fmt::format("model_type {} needs a mixture-of-experts card (moe_experts > "
                                  "0)",
                                  mt));
  }
  if (mt == "qwen2" && !(card.qkv_bias && !card.o_bias))
    return card_error("qkv_bias", "qwen2 needs qkv_bias true and o_bias false");
  if ((mt == "mistral" || mt == "mixtral") && (card.qkv_bias || card.o_bias))
    return card_error("qkv_bias", fmt::format("{} has no attention biases", mt));
  if (mt == "llama" && card.qkv_bias != card.o_bias)
    return card_error("o_bias", "llama's attention_bias sets q/k/v and o biases together");
  if (mt == "llama" && card.sliding_window > 0)
    return card_error("sliding_window", "llama has no sliding window (use mistral or qwen2)");
  if (mt == "qwen2_moe" && card.o_bias)
    return card_error("o_bias", "qwen2_moe has no o_proj bias");
  // Qwen2MoeConfig has no head_dim key (the attention derives it).
  const bool derived_head = card.effective_head_dim() * card.n_head == card.d_model;
  if (mt == "qwen2_moe" && !derived_head) {
    return card_error("head_dim", fmt::format("qwen2_moe derives the head dim from hidden_size / "
                                              "num_attention_heads ({}); head_dim {} cannot be "
                                              "written",
                                              card.d_model / card.n_head, card.head_dim));
  }

  json j;
  for (const auto& f : kWritten) {
    if (mt == f.model_type) j["architectures"] = json::array({f.architecture});
  }
  j["model_type"] = mt;
  j["hidden_size"] = card.d_model;
  j["num_hidden_layers"] = card.n_layer;
  j["num_attention_heads"] = card.n_head;
  j["num_key_value_heads"] = card.n_kv_head;
  if (mt != "qwen2_moe") j["head_dim"] = card.effective_head_dim();
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
  } else if (mt == "mistral" || mt == "mixtral") {
    j["sliding_window"] = card.sliding_window > 0 ? json(card.sliding_window) : json(nullptr);
  } else {
    // Every layer slides when the card has a window (the engine rejects
    // longer sequences, so which layers slide never matters to it).
    const bool sliding = card.sliding_window > 0;
    j["use_sliding_window"] = sliding;
    j["sliding_window"] = sliding ? json(card.sliding_window) : json(nullptr);
    j["max_window_layers"] = sliding ? 0 : card.n_layer;
  }
  if (moe) EL_TRY(hf_parts::write_moe(card, mt, j));
  return hf_parts::finish_config(std::move(j), opt, hf_parts::card_owner(card));
}

}  // namespace

std::string hf_export_model_type(const ModelCard& c, const std::string& requested) {
  if (!requested.empty()) return requested;
  if (c.block == ModelCard::Block::rwkv) return "rwkv";
  if (c.block == ModelCard::Block::mamba) return "mamba";
  // LayerNorm with a GELU MLP: GPT-NeoX, the one such family written. (Only
  // one of the two matches no family; the Llama writer names it.)
  if (c.norm == ModelCard::Norm::layernorm && c.mlp != ModelCard::Mlp::swiglu) return "gpt_neox";
  if (c.moe_experts > 0) return c.moe_shared_experts > 0 ? "qwen2_moe" : "mixtral";
  if (c.qkv_bias && !c.o_bias) return "qwen2";
  return c.sliding_window > 0 ? "mistral" : "llama";
}

Result<std::string> hf_config_json(const ModelCard& card, const HfConfigExport& opt) {
  if (card.block == ModelCard::Block::rwkv6) {  // nn/rwkv6.h
    return hf_parts::card_key_error(
        card, "block",
        "block rwkv6 (RWKV-6) cannot be exported: transformers has no RWKV-6 model class "
        "(RWKV-6 checkpoints on the Hub run as remote code), and import is not supported either",
        "keep the engine's own checkpoints for RWKV-6 cards");
  }
  const std::string mt = hf_export_model_type(card, opt.model_type);
  const WrittenFamily* family = nullptr;
  std::vector<std::string> written;
  for (const auto& f : kWritten) {
    written.push_back(f.model_type);
    if (mt == f.model_type) family = &f;
  }
  if (!family) {
    return make_error(fmt::format("unsupported model_type '{}' for export{}", mt,
                                  did_you_mean(mt, written)),
                      hf_parts::card_owner(card), "model types written: " + quoted_list(written));
  }
  if (card.block != family->block) {
    return hf_parts::card_key_error(
        card, "block",
        fmt::format("block {} cannot be exported as model_type {} (its layers are block {})",
                    block_str(card.block), mt, block_str(family->block)),
        "leave the model type empty to write the card's own family");
  }
  if (mt == "mamba") return mamba_config_json(card, opt);
  if (mt == "rwkv") return hf_parts::rwkv_config_json(card, opt);
  if (mt == "gpt_neox") return hf_parts::gpt_neox_config_json(card, opt);
  return llama_layout_config_json(card, mt, opt);
}

}  // namespace el::io
