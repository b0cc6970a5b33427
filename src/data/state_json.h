// state_json.h — reading the JSON of a data iterator's resumable state
// (DataLoaderState, SftBatcherState). The state comes from a checkpoint file,
// so every field is checked; errors name the state (`where`) and the key.
#pragma once

#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"

namespace el::data::state_json {

inline Result<nlohmann::json> parse_object(std::string_view text, const char* where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return make_error(fmt::format("malformed JSON: {}", e.what()), where);
  }
  if (!j.is_object()) return make_error("expected a JSON object", where);
  return j;
}

inline Status read_int(const nlohmann::json& j, const char* key, const char* where, int64_t* out) {
  if (!j.contains(key) || !j[key].is_number_integer())
    return make_error("missing or not an integer", fmt::format("{}: key '{}'", where, key));
  *out = j[key].get<int64_t>();
  return Status::Ok();
}

inline Status read_rng(const nlohmann::json& j, const char* key, const char* where, Rng::State* out) {
  const nlohmann::json r = j.contains(key) ? j[key] : nlohmann::json();
  const std::string at = fmt::format("{}: key '{}'", where, key);
  if (!r.is_array() || r.size() != out->size())
    return make_error(fmt::format("expected an array of {} unsigned integers", out->size()), at);
  for (size_t i = 0; i < out->size(); ++i) {
    if (!r[i].is_number_unsigned()) return make_error("expected unsigned integers", at);
    (*out)[i] = r[i].get<uint64_t>();
  }
  return Status::Ok();
}

}  // namespace el::data::state_json
