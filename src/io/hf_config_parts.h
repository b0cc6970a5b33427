// hf_config_parts.h — internal to io/hf_config*.cpp: what the files of the
// config.json <-> ModelCard mapping (io/hf_config.h) share. hf_config.cpp
// holds the entry points and the Llama / Qwen2 / Mistral layout both ways
// (also the attention part of mixtral / qwen2_moe); hf_config_families.cpp
// the other families' readers (gpt_neox, rwkv, deepseek, the MoE part of
// mixtral / qwen2_moe); hf_config_export.cpp their writers (gpt_neox, rwkv,
// the MoE keys) and what every writer shares; hf_config_mamba.cpp both
// directions of mamba. They were one file until it passed 800 lines; the
// split follows the families.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_config.h"
#include "nn/model_card.h"

namespace el::io::hf_parts {

using json = nlohmann::json;

// What a JSON value is, for error messages: "an integer", "a string", ...
inline const char* kind_of(const json& j) {
  if (j.is_object()) return "an object";
  if (j.is_array()) return "a list";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_null()) return "null";
  if (j.is_number_float()) return "a non-integer number";
  return "an integer";
}

// A value as an error message shows it: its kind and its JSON text, cut at
// 40 characters.
inline std::string shown(const json& j) {
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

// RoPE base and scaling (hf_config.cpp): v5's "rope_parameters", else v4's
// "rope_scaling" with a top-level "rope_theta". default_theta: the config
// class's (MixtralConfig: 1e6).
Status read_rope(const Reader& top, ModelCard& c, double default_theta = 10000.0);

// The per-family readers: each fills the whole card from config.json's
// top-level object (hf_config_families.cpp, read_mamba in hf_config_mamba.cpp).
Status read_gpt_neox(const Reader& r, ModelCard& c);
Status read_rwkv(const Reader& r, ModelCard& c);
Status read_mamba(const Reader& r, ModelCard& c);
// mt: "deepseek_v3" or "deepseek_v2".
Status read_deepseek(const Reader& r, const std::string& mt, ModelCard& c);
// The MoE keys of mt "mixtral" / "qwen2_moe", after the attention part.
Status read_moe(const Reader& r, const std::string& mt, ModelCard& c);

// "1e-06" rather than 9.999999974752427e-07 for a card's f32 1e-6f: the
// shortest decimal that reads back as the same f32, as a JSON double.
inline double json_float(float f) { return std::stod(fmt::format("{}", f)); }

// ---- writers (hf_config_export.cpp) ----------------------------------------------------

// Where an export error points: the card's source path, else "model card 'NAME'".
std::string card_owner(const ModelCard& c);
// An export error at "<owner>: key '<key>'" (a card key), with a hint saying
// which families could hold it unless `hint` is given.
Error card_key_error(const ModelCard& c, const std::string& key, std::string what,
                     std::string hint = {});
// Adds torch_dtype (when given) and the passthrough keys to `j` and returns
// its text as transformers writes it (keys sorted, two-space indent).
Result<std::string> finish_config(json j, const HfConfigExport& opt, const std::string& owner);

// GPTNeoXConfig for a LayerNorm + GELU card (parallel or sequential residual,
// partial rotary, attention and MLP biases) and RwkvConfig for a block: rwkv
// card; the checks and key tables are in io/hf_config.h.
Result<std::string> gpt_neox_config_json(const ModelCard& c, const HfConfigExport& opt);
Result<std::string> rwkv_config_json(const ModelCard& c, const HfConfigExport& opt);
// The mixture-of-experts keys of mt "mixtral" / "qwen2_moe" (the inverse of
// read_moe), added to the attention part hf_config.cpp wrote into `j`;
// errors name the card key neither family can hold (moe_router sigmoid,
// shared experts on mixtral, ...).
Status write_moe(const ModelCard& c, const std::string& mt, json& j);

}  // namespace el::io::hf_parts
