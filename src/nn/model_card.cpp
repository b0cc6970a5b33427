#include "nn/model_card.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/file_util.h"
#include "io/suggest.h"
#include "io/yaml_util.h"
#include "nn/model_card_fields.h"
#include "nn/model_card_mamba.h"
#include "nn/model_card_moe.h"
#include "nn/model_card_rwkv.h"
#include "nn/model_card_rwkv6.h"

namespace el {

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kKeys = {
    "name",      "n_layer",    "d_model",      "n_head",     "n_kv_head", "head_dim",
    "d_ff",      "vocab_size", "max_seq_len",  "norm",       "norm_eps",  "pos_encoding",
    "rope_theta", "mlp",       "tied_embeddings", "init_std", "qkv_bias",
    "o_bias",    "sliding_window", "rope_scaling", "rope_scaling_factor", "rope_low_freq_factor",
    "rope_high_freq_factor", "rope_original_max_seq_len", "attention", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "parallel_residual",
    "rotary_dims", "mlp_bias", "nsa_window", "nsa_compress_block", "nsa_compress_stride",
    "nsa_select_block", "nsa_select_count", "block"};
const std::vector<std::string> kNorms = {"rmsnorm", "layernorm"};
const std::vector<std::string> kPosEncodings = {"rope", "none", "sinusoidal", "learned", "alibi"};
const std::vector<std::string> kMlps = {"swiglu", "gelu", "gelu_exact"};
const std::vector<std::string> kRopeScalings = {"none", "linear", "llama3"};
const std::vector<std::string> kAttentions = {"standard", "mla", "nsa"};
const std::vector<std::string> kNsaKeys = {"nsa_window", "nsa_compress_block",
                                           "nsa_compress_stride", "nsa_select_block",
                                           "nsa_select_count"};

// kKeys + the keys of the card's parts are the card's keys.
const std::vector<std::string>& card_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k = kKeys;
    for (const auto* part : {&mamba_card::keys(), &moe_card::keys(), &rwkv_card::keys(),
                             &rwkv6_card::keys()})
      k.insert(k.end(), part->begin(), part->end());
    return k;
  }();
  return keys;
}
const std::vector<std::string> kBlocks = {"transformer", "mamba", "rwkv", "rwkv6"};
using card_fields::enum_from;
using card_fields::FieldError;

// The rope_* parameters: each one the chosen scaling uses must be valid, and
// one it does not use must be unset (0), so a card never carries a value that
// silently does nothing.
std::optional<FieldError> check_rope_scaling(const ModelCard& c) {
  using RS = ModelCard::RopeScaling;
  if (static_cast<unsigned>(c.rope_scaling) > 2) {
    return FieldError{"rope_scaling",
                      fmt::format("unknown rope_scaling value {}; allowed: {}",
                                  static_cast<int>(c.rope_scaling), io::quoted_list(kRopeScalings)),
                      {}};
  }
  const char* kind = rope_scaling_name(c.rope_scaling);
  if (c.rope_scaling != RS::none && c.pos_encoding != ModelCard::PosEncoding::rope) {
    return FieldError{"rope_scaling", fmt::format("rope_scaling {} needs pos_encoding: rope", kind),
                      {}};
  }
  const bool uses_factor = c.rope_scaling != RS::none;
  const bool llama3 = c.rope_scaling == RS::llama3;
  const struct {
    const char* field;
    double value;
    bool used;
  } params[] = {{"rope_scaling_factor", c.rope_scaling_factor, uses_factor},
                {"rope_low_freq_factor", c.rope_low_freq_factor, llama3},
                {"rope_high_freq_factor", c.rope_high_freq_factor, llama3},
                {"rope_original_max_seq_len", static_cast<double>(c.rope_original_max_seq_len),
                 llama3}};
  for (const auto& p : params) {
    if (!p.used && p.value != 0.0) {
      return FieldError{p.field,
                        fmt::format("{} is set ({}) but rope_scaling {} does not use it", p.field,
                                    p.value, kind),
                        "remove the key, or choose the rope_scaling that uses it"};
    }
    if (p.used && (!(p.value > 0.0) || !std::isfinite(p.value))) {
      return FieldError{p.field,
                        fmt::format("{} must be a positive number with rope_scaling {}, got {}",
                                    p.field, kind, p.value),
                        {}};
    }
  }
  if (llama3 && !(c.rope_high_freq_factor > c.rope_low_freq_factor)) {
    return FieldError{"rope_high_freq_factor",
                      fmt::format("rope_high_freq_factor ({}) must be greater than "
                                  "rope_low_freq_factor ({})",
                                  c.rope_high_freq_factor, c.rope_low_freq_factor),
                      "llama3 interpolates between the two wavelengths they define"};
  }
  return std::nullopt;
}

// attention: mla needs its latent and head dims (and per-head K/V); a card
// with standard attention must not carry them (they would silently do nothing).
std::optional<FieldError> check_attention(const ModelCard& c) {
  if (static_cast<unsigned>(c.attention) >= kAttentions.size()) {
    return FieldError{"attention",
                      fmt::format("unknown attention value {}; allowed: {}",
                                  static_cast<int>(c.attention), io::quoted_list(kAttentions)),
                      {}};
  }
  const std::pair<const char*, int> dims[] = {{"q_lora_rank", c.q_lora_rank},
                                              {"kv_lora_rank", c.kv_lora_rank},
                                              {"qk_nope_head_dim", c.qk_nope_head_dim},
                                              {"qk_rope_head_dim", c.qk_rope_head_dim},
                                              {"v_head_dim", c.v_head_dim}};
  if (c.attention != ModelCard::Attention::mla) {
    for (const auto& [field, v] : dims) {
      if (v != 0) {
        return FieldError{field,
                          fmt::format("{} is set ({}) but attention is {}; it is an MLA "
                                      "dimension",
                                      field, v, attention_name(c.attention)),
                          "add 'attention: mla' or remove the key"};
      }
    }
    return std::nullopt;
  }
  if (c.q_lora_rank < 0) {
    return FieldError{"q_lora_rank",
                      fmt::format("q_lora_rank must be >= 0 (0 = no query compression), got {}",
                                  c.q_lora_rank),
                      {}};
  }
  for (size_t i = 1; i < std::size(dims); ++i) {
    if (dims[i].second <= 0) {
      return FieldError{dims[i].first,
                        fmt::format("{} must be positive with attention: mla, got {}",
                                    dims[i].first, dims[i].second),
                        {}};
    }
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return FieldError{"qk_rope_head_dim",
                      fmt::format("qk_rope_head_dim ({}) must be even", c.qk_rope_head_dim),
                      "RoPE rotates dimensions in pairs"};
  }
  if (c.head_dim != 0) {
    return FieldError{"head_dim",
                      fmt::format("head_dim ({}) is not used with attention: mla", c.head_dim),
                      "remove it: MLA's q/k heads have qk_nope_head_dim + qk_rope_head_dim dims "
                      "and its v heads v_head_dim"};
  }
  if (c.n_kv_head != c.n_head) {
    return FieldError{"n_kv_head",
                      fmt::format("n_kv_head ({}) must equal n_head ({}) with attention: mla",
                                  c.n_kv_head, c.n_head),
                      "MLA builds per-head keys and values from one shared latent; its cache is "
                      "already smaller than MQA's (drop n_kv_head)"};
  }
  return std::nullopt;
}

// The nsa_* keys (model_card.h): positive, the block sizes multiples of the
// compression stride, blocks and window within max_seq_len; on another
// attention they must keep their defaults (a YAML key without attention: nsa
// is reported at parse time by parse_model_card, whatever its value).
std::optional<FieldError> check_nsa(const ModelCard& c) {
  const ModelCard d;
  const std::pair<const char*, int> f[] = {{"nsa_window", c.nsa_window},
                                           {"nsa_compress_block", c.nsa_compress_block},
                                           {"nsa_compress_stride", c.nsa_compress_stride},
                                           {"nsa_select_block", c.nsa_select_block},
                                           {"nsa_select_count", c.nsa_select_count}};
  const int defaults[] = {d.nsa_window, d.nsa_compress_block, d.nsa_compress_stride,
                          d.nsa_select_block, d.nsa_select_count};
  if (c.attention != ModelCard::Attention::nsa) {
    for (size_t i = 0; i < std::size(f); ++i) {
      if (f[i].second != defaults[i]) {
        return FieldError{f[i].first,
                          fmt::format("{} is set ({}) but attention is {}; it is an NSA parameter",
                                      f[i].first, f[i].second, attention_name(c.attention)),
                          "add 'attention: nsa' or remove the key"};
      }
    }
    return std::nullopt;
  }
  for (const auto& [field, v] : f) {
    if (v <= 0) {
      return FieldError{field, fmt::format("{} must be positive with attention: nsa, got {}", field, v),
                        {}};
    }
  }
  if (c.nsa_compress_block % c.nsa_compress_stride != 0) {
    return FieldError{"nsa_compress_block",
                      fmt::format("nsa_compress_block ({}) must be a multiple of "
                                  "nsa_compress_stride ({})",
                                  c.nsa_compress_block, c.nsa_compress_stride),
                      "compressed tokens start every stride positions and cover whole strides"};
  }
  if (c.nsa_select_block % c.nsa_compress_stride != 0) {
    return FieldError{"nsa_select_block",
                      fmt::format("nsa_select_block ({}) must be a multiple of "
                                  "nsa_compress_stride ({})",
                                  c.nsa_select_block, c.nsa_compress_stride),
                      "a selection block must start where a compressed token starts"};
  }
  if (c.nsa_select_block < c.nsa_compress_block) {
    return FieldError{"nsa_select_block",
                      fmt::format("nsa_select_block ({}) must be >= nsa_compress_block ({})",
                                  c.nsa_select_block, c.nsa_compress_block),
                      "a block's importance sums the compressed tokens lying inside it"};
  }
  const std::pair<const char*, int> lengths[] = {{"nsa_compress_block", c.nsa_compress_block},
                                                 {"nsa_select_block", c.nsa_select_block},
                                                 {"nsa_window", c.nsa_window}};
  for (const auto& [field, v] : lengths) {
    if (v > c.max_seq_len) {
      return FieldError{field,
                        fmt::format("{} {} exceeds max_seq_len {}", field, v, c.max_seq_len),
                        "no sequence of the card would fill one; lower it or raise max_seq_len"};
    }
  }
  if (c.pos_encoding == ModelCard::PosEncoding::alibi) {
    return FieldError{"pos_encoding", "pos_encoding alibi is not supported with attention: nsa",
                      "the NSA kernels add no position bias; use rope or none"};
  }
  if (c.sliding_window != 0) {
    return FieldError{"sliding_window",
                      fmt::format("sliding_window ({}) is not used with attention: nsa",
                                  c.sliding_window),
                      "NSA's own window is nsa_window"};
  }
  return std::nullopt;
}

// block (model_card.h): rwkv is checked by rwkv_card::check and mamba by
// mamba_card::check (each also keeps its fields at their defaults under the
// other blocks). For a mamba or rwkv card this is the whole check
// (check_card's transformer checks need n_head and d_ff).
std::optional<FieldError> check_block(const ModelCard& c) {
  if (static_cast<unsigned>(c.block) >= kBlocks.size()) {
    return FieldError{"block",
                      fmt::format("unknown block value {}; allowed: {}", static_cast<int>(c.block),
                                  io::quoted_list(kBlocks)),
                      {}};
  }
  // block: rwkv, and the rwkv_* fields of other blocks (model_card_rwkv.cpp).
  if (auto fe = rwkv_card::check(c)) return fe;
  if (c.block == ModelCard::Block::rwkv) return std::nullopt;
  // block: rwkv6, and the rwkv6_* fields of other blocks (model_card_rwkv6.cpp).
  if (auto fe = rwkv6_card::check(c)) return fe;
  if (c.block == ModelCard::Block::rwkv6) return std::nullopt;
  // block: mamba, and the mamba_* fields of other blocks (model_card_mamba.cpp).
  return mamba_card::check(c);
}

// rotary_dims: a part of each standard-attention head, rotated in pairs.
std::optional<FieldError> check_rotary_dims(const ModelCard& c) {
  if (c.rotary_dims == 0) return std::nullopt;
  if (c.pos_encoding != ModelCard::PosEncoding::rope) {
    return FieldError{"rotary_dims",
                      fmt::format("rotary_dims ({}) needs pos_encoding: rope", c.rotary_dims),
                      "remove the key: without RoPE no dims are rotated"};
  }
  if (c.attention != ModelCard::Attention::standard) {
    return FieldError{"rotary_dims",
                      fmt::format("rotary_dims ({}) is not used with attention: mla",
                                  c.rotary_dims),
                      "MLA rotates its qk_rope_head_dim dims"};
  }
  const int d = c.effective_head_dim();
  if (c.rotary_dims < 0 || c.rotary_dims > d || c.rotary_dims % 2 != 0) {
    return FieldError{"rotary_dims",
                      fmt::format("rotary_dims must be even and in [2, head_dim {}] (0 = the "
                                  "whole head), got {}",
                                  d, c.rotary_dims),
                      "RoPE rotates dimensions in pairs"};
  }
  return std::nullopt;
}

std::optional<FieldError> check_card(const ModelCard& c) {
  if (c.name.empty()) return FieldError{"name", "name must not be empty", {}};
  if (auto fe = moe_card::check(c)) return fe;
  if (auto fe = check_block(c)) return fe;
  if (c.block != ModelCard::Block::transformer) return std::nullopt;  // checked by check_block
  const std::pair<const char*, int> sizes[] = {
      {"n_layer", c.n_layer},   {"d_model", c.d_model},       {"n_head", c.n_head},
      {"n_kv_head", c.n_kv_head}, {"d_ff", c.d_ff},           {"vocab_size", c.vocab_size},
      {"max_seq_len", c.max_seq_len}};
  for (const auto& [field, v] : sizes) {
    if (v <= 0) return FieldError{field, fmt::format("{} must be positive, got {}", field, v), {}};
  }
  if (c.head_dim < 0) {
    return FieldError{
        "head_dim",
        fmt::format("head_dim must be positive (or 0 for d_model / n_head), got {}", c.head_dim),
        {}};
  }
  // Enum values out of range can only come from code (a cast), never from YAML.
  auto bad_enum = [](const char* field, int v, const std::vector<std::string>& allowed) {
    return FieldError{field,
                      fmt::format("unknown {} value {}; allowed: {}", field, v,
                                  io::quoted_list(allowed)),
                      {}};
  };
  if (static_cast<unsigned>(c.norm) > 1) return bad_enum("norm", static_cast<int>(c.norm), kNorms);
  if (static_cast<unsigned>(c.pos_encoding) >= kPosEncodings.size())
    return bad_enum("pos_encoding", static_cast<int>(c.pos_encoding), kPosEncodings);
  if (static_cast<unsigned>(c.mlp) >= kMlps.size())
    return bad_enum("mlp", static_cast<int>(c.mlp), kMlps);
  if (c.n_head % c.n_kv_head != 0) {
    return FieldError{
        "n_kv_head",
        fmt::format("n_head ({}) must be divisible by n_kv_head ({})", c.n_head, c.n_kv_head),
        "each key/value head is shared by n_head / n_kv_head query heads"};
  }
  if (auto fe = check_attention(c)) return fe;
  const bool mla = c.attention == ModelCard::Attention::mla;  // no head_dim (checked above)
  if (!mla && c.head_dim == 0 && c.d_model % c.n_head != 0) {
    return FieldError{"n_head",
                      fmt::format("d_model ({}) must be divisible by n_head ({}) when head_dim is 0",
                                  c.d_model, c.n_head),
                      "set head_dim explicitly or change n_head"};
  }
  if (!mla && c.pos_encoding == ModelCard::PosEncoding::rope && c.effective_head_dim() % 2 != 0) {
    return FieldError{c.head_dim > 0 ? "head_dim" : "n_head",
                      fmt::format("head_dim ({}) must be even with rope", c.effective_head_dim()),
                      "RoPE rotates dimensions in pairs"};
  }
  const std::pair<const char*, float> positives[] = {
      {"norm_eps", c.norm_eps}, {"init_std", c.init_std}, {"rope_theta", c.rope_theta}};
  for (const auto& [field, v] : positives) {
    if (!(v > 0.0f) || !std::isfinite(v)) {
      return FieldError{field, fmt::format("{} must be a positive number, got {}", field, v), {}};
    }
  }
  if (c.sliding_window < 0) {
    return FieldError{"sliding_window",
                      fmt::format("sliding_window must be >= 0 (0 = none), got {}", c.sliding_window),
                      {}};
  }
  if (auto fe = check_rotary_dims(c)) return fe;
  if (auto fe = check_nsa(c)) return fe;
  return check_rope_scaling(c);
}

// A YAML scalar for the card name: plain when it is a simple identifier,
// otherwise double-quoted with escapes.
std::string yaml_string(const std::string& s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
  }) && s.front() != '-' && s.front() != '.';
  if (plain) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(ch));
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

bool has_yaml_extension(const std::string& s) {
  auto ends = [&](std::string_view suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  return ends(".yaml") || ends(".yml");
}

std::optional<fs::path> executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec || exe.empty()) return std::nullopt;
  return exe.parent_path();
}

}  // namespace

const char* norm_name(ModelCard::Norm n) {
  return n == ModelCard::Norm::layernorm ? "layernorm" : "rmsnorm";
}
const char* pos_encoding_name(ModelCard::PosEncoding p) {
  switch (p) {
    case ModelCard::PosEncoding::none: return "none";
    case ModelCard::PosEncoding::sinusoidal: return "sinusoidal";
    case ModelCard::PosEncoding::learned: return "learned";
    case ModelCard::PosEncoding::alibi: return "alibi";
    default: return "rope";
  }
}
const char* mlp_name(ModelCard::Mlp m) {
  switch (m) {
    case ModelCard::Mlp::gelu: return "gelu";
    case ModelCard::Mlp::gelu_exact: return "gelu_exact";
    default: return "swiglu";
  }
}
const char* attention_name(ModelCard::Attention a) {
  switch (a) {
    case ModelCard::Attention::mla: return "mla";
    case ModelCard::Attention::nsa: return "nsa";
    default: return "standard";
  }
}
const char* block_name(ModelCard::Block b) {
  switch (b) {
    case ModelCard::Block::mamba: return "mamba";
    case ModelCard::Block::rwkv: return "rwkv";
    case ModelCard::Block::rwkv6: return "rwkv6";
    default: return "transformer";
  }
}
const char* moe_router_name(ModelCard::MoeRouter r) {
  return r == ModelCard::MoeRouter::sigmoid ? "sigmoid" : "softmax";
}
const char* rope_scaling_name(ModelCard::RopeScaling r) {
  switch (r) {
    case ModelCard::RopeScaling::linear: return "linear";
    case ModelCard::RopeScaling::llama3: return "llama3";
    default: return "none";
  }
}

Status check_sequence_length(const ModelCard& card, int64_t seq_len) {
  const std::string owner =
      !card.source_path.empty() ? card.source_path : fmt::format("model card '{}'", card.name);
  if (seq_len > card.max_seq_len && card.pos_encoding == ModelCard::PosEncoding::learned) {
    // The learned table has max_seq_len rows: no position past them exists.
    return make_error(
        fmt::format("seq_len {} exceeds max_seq_len {} of model card '{}': with pos_encoding: "
                    "learned the position table has only {} rows, so the model cannot run past "
                    "its trained length",
                    seq_len, card.max_seq_len, card.name, card.max_seq_len),
        owner + ": key 'max_seq_len'",
        "lower --seq-len; sinusoidal, rope and alibi compute positions past the table (raise "
        "max_seq_len in a card with one of them)");
  }
  if (seq_len > card.max_seq_len) {
    return make_error(fmt::format("seq_len {} exceeds max_seq_len {} of model card '{}'", seq_len,
                                  card.max_seq_len, card.name),
                      owner + ": key 'max_seq_len'",
                      "lower --seq-len or raise max_seq_len in the card");
  }
  if (card.sliding_window > 0 && seq_len > card.sliding_window) {
    return make_error(
        fmt::format("seq_len {} exceeds sliding_window {} of model card '{}': the model attends to "
                    "the last {} positions only and the engine has no sliding-window attention",
                    seq_len, card.sliding_window, card.name, card.sliding_window),
        owner + ": key 'sliding_window'",
        fmt::format("use --seq-len {} or less", card.sliding_window));
  }
  return Status::Ok();
}

Status validate_model_card(const ModelCard& card) {
  auto fe = check_card(card);
  if (!fe) return Status::Ok();
  const std::string owner =
      !card.source_path.empty() ? card.source_path : fmt::format("model card '{}'", card.name);
  return make_error(fe->what, fmt::format("{}: key '{}'", owner, fe->field), fe->hint);
}

Result<ModelCard> parse_model_card(const std::string& yaml_text, const std::string& source_name) {
  EL_TRY_ASSIGN(YAML::Node root, io::parse_yaml(yaml_text, source_name));
  EL_TRY_ASSIGN(io::YamlMap m, io::YamlMap::open(root, source_name, "model card", card_keys()));

  ModelCard c;
  c.source_path = source_name;
  EL_TRY(m.read("name", c.name));
  // block first: it decides which keys the card needs and which it must not have.
  EL_TRY_ASSIGN(std::string block, m.get_choice_or("block", kBlocks, block_name(c.block)));
  c.block = enum_from<ModelCard::Block>(block, kBlocks);
  EL_TRY(mamba_card::read(m, c));  // block: mamba's keys (and the keys it must not have)
  EL_TRY(m.read("n_layer", c.n_layer));
  EL_TRY(m.read("d_model", c.d_model));
  if (c.block == ModelCard::Block::transformer) {  // a mamba card has none (checked above)
    EL_TRY(m.read("n_head", c.n_head));
    c.n_kv_head = c.n_head;
    EL_TRY(m.read_optional("n_kv_head", c.n_kv_head));
    EL_TRY(m.read_optional("head_dim", c.head_dim));
    EL_TRY(m.read("d_ff", c.d_ff));
  }
  EL_TRY(rwkv_card::read(m, c));  // block: rwkv's keys (and the keys it must not have)
  EL_TRY(rwkv6_card::read(m, c));  // block: rwkv6's likewise
  EL_TRY(m.read("vocab_size", c.vocab_size));
  EL_TRY(m.read("max_seq_len", c.max_seq_len));
  EL_TRY_ASSIGN(std::string norm, m.get_choice_or("norm", kNorms, norm_name(c.norm)));
  c.norm = enum_from<ModelCard::Norm>(norm, kNorms);
  EL_TRY(m.read_optional("norm_eps", c.norm_eps));
  EL_TRY_ASSIGN(std::string pe,
                m.get_choice_or("pos_encoding", kPosEncodings, pos_encoding_name(c.pos_encoding)));
  c.pos_encoding = enum_from<ModelCard::PosEncoding>(pe, kPosEncodings);
  EL_TRY(m.read_optional("rope_theta", c.rope_theta));
  EL_TRY_ASSIGN(std::string mlp, m.get_choice_or("mlp", kMlps, mlp_name(c.mlp)));
  c.mlp = enum_from<ModelCard::Mlp>(mlp, kMlps);
  EL_TRY(m.read_optional("tied_embeddings", c.tied_embeddings));
  EL_TRY(m.read_optional("init_std", c.init_std));
  EL_TRY(m.read_optional("qkv_bias", c.qkv_bias));
  EL_TRY(m.read_optional("o_bias", c.o_bias));
  EL_TRY(m.read_optional("sliding_window", c.sliding_window));
  EL_TRY_ASSIGN(std::string rs, m.get_choice_or("rope_scaling", kRopeScalings,
                                                rope_scaling_name(c.rope_scaling)));
  c.rope_scaling = enum_from<ModelCard::RopeScaling>(rs, kRopeScalings);
  EL_TRY(m.read_optional("rope_scaling_factor", c.rope_scaling_factor));
  EL_TRY(m.read_optional("rope_low_freq_factor", c.rope_low_freq_factor));
  EL_TRY(m.read_optional("rope_high_freq_factor", c.rope_high_freq_factor));
  EL_TRY(m.read_optional("rope_original_max_seq_len", c.rope_original_max_seq_len));
  EL_TRY_ASSIGN(std::string attn,
                m.get_choice_or("attention", kAttentions, attention_name(c.attention)));
  c.attention = enum_from<ModelCard::Attention>(attn, kAttentions);
  EL_TRY(m.read_optional("q_lora_rank", c.q_lora_rank));
  EL_TRY(m.read_optional("kv_lora_rank", c.kv_lora_rank));
  EL_TRY(m.read_optional("qk_nope_head_dim", c.qk_nope_head_dim));
  EL_TRY(m.read_optional("qk_rope_head_dim", c.qk_rope_head_dim));
  EL_TRY(m.read_optional("v_head_dim", c.v_head_dim));
  EL_TRY(m.read_optional("parallel_residual", c.parallel_residual));
  EL_TRY(m.read_optional("rotary_dims", c.rotary_dims));
  EL_TRY(m.read_optional("mlp_bias", c.mlp_bias));
  if (c.attention != ModelCard::Attention::nsa) {
    EL_TRY(card_fields::refuse_keys(
        m, kNsaKeys,
        fmt::format("is set but attention is {}; it is an NSA parameter",
                    attention_name(c.attention)),
        "add 'attention: nsa' or remove the key"));
  }
  EL_TRY(m.read_optional("nsa_window", c.nsa_window));
  EL_TRY(m.read_optional("nsa_compress_block", c.nsa_compress_block));
  EL_TRY(m.read_optional("nsa_compress_stride", c.nsa_compress_stride));
  EL_TRY(m.read_optional("nsa_select_block", c.nsa_select_block));
  EL_TRY(m.read_optional("nsa_select_count", c.nsa_select_count));
  EL_TRY(moe_card::read(m, c));  // the moe_* keys

  if (auto fe = check_card(c)) {
    // Point at the field's line; a defaulted field (absent) points at the card.
    return make_error(fe->what, m.where(fe->field), fe->hint);
  }
  return c;
}

Result<ModelCard> load_model_card(const std::string& path) {
  EL_TRY_ASSIGN(std::string text, io::read_file(path));
  return parse_model_card(text, path);
}

std::string model_card_to_yaml(const ModelCard& c) {
  std::string s;
  s += fmt::format("name: {}\n", yaml_string(c.name));
  // A non-transformer block has no attention / MLP keys (model_card.h).
  const bool transformer = c.block == ModelCard::Block::transformer;
  if (!transformer) s += fmt::format("block: {}\n", block_name(c.block));
  s += fmt::format("n_layer: {}\n", c.n_layer);
  s += fmt::format("d_model: {}\n", c.d_model);
  if (transformer) {
    s += fmt::format("n_head: {}\n", c.n_head);
    s += fmt::format("n_kv_head: {}\n", c.n_kv_head);
    s += fmt::format("head_dim: {}\n", c.head_dim);
    s += fmt::format("d_ff: {}\n", c.d_ff);
  }
  s += fmt::format("vocab_size: {}\n", c.vocab_size);
  s += fmt::format("max_seq_len: {}\n", c.max_seq_len);
  s += fmt::format("norm: {}\n", norm_name(c.norm));
  // fmt's "{}" prints the shortest string that reads back as the same float.
  s += fmt::format("norm_eps: {}\n", c.norm_eps);
  s += fmt::format("pos_encoding: {}\n", pos_encoding_name(c.pos_encoding));
  if (transformer) {
    s += fmt::format("rope_theta: {}\n", c.rope_theta);
    s += fmt::format("mlp: {}\n", mlp_name(c.mlp));
  }
  s += fmt::format("tied_embeddings: {}\n", c.tied_embeddings);
  s += fmt::format("init_std: {}\n", c.init_std);
  if (transformer) s += fmt::format("qkv_bias: {}\n", c.qkv_bias);
  // Later keys only when set (see the header): older cards keep their text.
  const ModelCard d;
  if (c.o_bias != d.o_bias) s += fmt::format("o_bias: {}\n", c.o_bias);
  if (c.sliding_window != d.sliding_window) s += fmt::format("sliding_window: {}\n", c.sliding_window);
  if (c.rope_scaling != d.rope_scaling)
    s += fmt::format("rope_scaling: {}\n", rope_scaling_name(c.rope_scaling));
  if (c.rope_scaling_factor != d.rope_scaling_factor)
    s += fmt::format("rope_scaling_factor: {}\n", c.rope_scaling_factor);
  if (c.rope_low_freq_factor != d.rope_low_freq_factor)
    s += fmt::format("rope_low_freq_factor: {}\n", c.rope_low_freq_factor);
  if (c.rope_high_freq_factor != d.rope_high_freq_factor)
    s += fmt::format("rope_high_freq_factor: {}\n", c.rope_high_freq_factor);
  if (c.rope_original_max_seq_len != d.rope_original_max_seq_len)
    s += fmt::format("rope_original_max_seq_len: {}\n", c.rope_original_max_seq_len);
  if (c.attention != d.attention) s += fmt::format("attention: {}\n", attention_name(c.attention));
  const std::pair<const char*, int> mla_dims[] = {{"q_lora_rank", c.q_lora_rank},
                                                  {"kv_lora_rank", c.kv_lora_rank},
                                                  {"qk_nope_head_dim", c.qk_nope_head_dim},
                                                  {"qk_rope_head_dim", c.qk_rope_head_dim},
                                                  {"v_head_dim", c.v_head_dim}};
  for (const auto& [key, v] : mla_dims) {
    if (v != 0) s += fmt::format("{}: {}\n", key, v);
  }
  if (c.parallel_residual != d.parallel_residual)
    s += fmt::format("parallel_residual: {}\n", c.parallel_residual);
  if (c.rotary_dims != d.rotary_dims) s += fmt::format("rotary_dims: {}\n", c.rotary_dims);
  if (c.mlp_bias != d.mlp_bias) s += fmt::format("mlp_bias: {}\n", c.mlp_bias);
  s += mamba_card::to_yaml(c);  // block: mamba: the mamba_* keys
  if (c.attention == ModelCard::Attention::nsa) {
    s += fmt::format("nsa_window: {}\n", c.nsa_window);
    s += fmt::format("nsa_compress_block: {}\n", c.nsa_compress_block);
    s += fmt::format("nsa_compress_stride: {}\n", c.nsa_compress_stride);
    s += fmt::format("nsa_select_block: {}\n", c.nsa_select_block);
    s += fmt::format("nsa_select_count: {}\n", c.nsa_select_count);
  }
  s += rwkv_card::to_yaml(c);  // block: rwkv: d_ff and the rwkv_* keys
  s += rwkv6_card::to_yaml(c);  // block: rwkv6: d_ff and the rwkv6_* keys
  s += moe_card::to_yaml(c);  // moe_experts > 0: the moe_* keys
  return s;
}

std::vector<std::string> model_card_search_dirs() {
  std::vector<fs::path> candidates;
  if (const char* home = std::getenv("EFFICIENTLLM_HOME"); home && *home)
    candidates.push_back(fs::path(home) / "configs" / "models");
  if (auto dir = executable_dir()) {
    candidates.push_back(*dir / ".." / ".." / "configs" / "models");
    candidates.push_back(*dir / ".." / "configs" / "models");
  }
#ifdef EL_SOURCE_DIR
  candidates.push_back(fs::path(EL_SOURCE_DIR) / "configs" / "models");
#endif
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& p : candidates) {
    std::error_code ec;
    if (!fs::is_directory(p, ec)) continue;
    const fs::path canon = fs::canonical(p, ec);
    const std::string key = ec ? p.lexically_normal().string() : canon.string();
    if (seen.insert(key).second) out.push_back(key);
  }
  return out;
}

std::vector<std::string> builtin_model_card_names() {
  std::set<std::string> names;
  for (const auto& dir : model_card_search_dirs()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".yaml") names.insert(e.path().stem().string());
    }
  }
  return {names.begin(), names.end()};
}

Result<ModelCard> find_model_card(const std::string& name_or_path) {
  if (has_yaml_extension(name_or_path) || name_or_path.find('/') != std::string::npos)
    return load_model_card(name_or_path);
  const auto dirs = model_card_search_dirs();
  for (const auto& dir : dirs) {
    const fs::path p = fs::path(dir) / (name_or_path + ".yaml");
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return load_model_card(p.string());
  }
  if (dirs.empty()) {
    return make_error(fmt::format("unknown model card '{}': no configs/models directory found",
                                  name_or_path),
                      "find_model_card",
                      "set EFFICIENTLLM_HOME to the EfficientLLM source tree, or pass a path to "
                      "a .yaml card");
  }
  const auto names = builtin_model_card_names();
  return make_error(fmt::format("unknown model card '{}'{}", name_or_path,
                                io::did_you_mean(name_or_path, names)),
                    "find_model_card",
                    fmt::format("built-in cards: {} (in {}); or pass a path to a .yaml file",
                                fmt::join(names, ", "), fmt::join(dirs, ", ")));
}

}  // namespace el
