// yaml_util.h — strict, line-numbered reading of YAML config files.
//
// Model cards and benchmark suites are hand-written, so a typo must fail loudly
// and point at the line, never be ignored or silently defaulted. YamlMap reads
// one mapping against a fixed set of known keys and turns every mistake into
// an Error whose `where` is "path:LINE":
//   unknown key   -> "unknown key 'n_layr' in model card (did you mean 'n_layer'?)"
//   missing key   -> "missing required key 'n_layer' in model card"
//   wrong type    -> "key 'n_layer': expected an integer, got 'abc'"
//   bad choice    -> "key 'norm': unknown value 'rmsnrom' (did you mean 'rmsnorm'?);
//                     allowed: 'rmsnorm', 'layernorm'"
//   duplicate key -> "key 'd_model' appears twice in model card (first at line 3)"
// Syntax errors from the YAML parser carry the parser's line the same way.
//
// Types are strict: integers must be written as integers ("1e6" is not an
// integer), booleans as true/false (not yes/no), and a quoted "12" is a string,
// not a number. Lines are 1-based.
//
// Nested structures (benchmark suites): get_map() opens a sub-mapping with its
// own known keys, get_list() returns the items of a sequence (open each item
// with YamlMap::open), and get_sweep<T>() accepts either one value or a list of
// values, for options a suite sweeps over.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/error.h"

namespace el::io {

// Parses YAML text; `source` (a path or a name) is used in error locations.
Result<YAML::Node> parse_yaml(const std::string& text, const std::string& source);
Result<YAML::Node> load_yaml_file(const std::string& path);

// "source:LINE" for a node that has a position, else "source".
std::string yaml_where(const std::string& source, const YAML::Node& node);
// How a value looks, for "got ..." in messages: "'abc'", "the string \"12\"",
// "a mapping", "a list", "nothing (null)".
std::string yaml_describe(const YAML::Node& node);

// Converts one scalar node to T, with `what` naming the value in the error
// (e.g. "key 'n_layer'"). T is one of: int, int64_t, float, double, bool,
// std::string.
template <class T>
Result<T> yaml_as(const YAML::Node& node, const std::string& source, std::string_view what);
template <>
Result<int> yaml_as<int>(const YAML::Node&, const std::string&, std::string_view);
template <>
Result<int64_t> yaml_as<int64_t>(const YAML::Node&, const std::string&, std::string_view);
template <>
Result<float> yaml_as<float>(const YAML::Node&, const std::string&, std::string_view);
template <>
Result<double> yaml_as<double>(const YAML::Node&, const std::string&, std::string_view);
template <>
Result<bool> yaml_as<bool>(const YAML::Node&, const std::string&, std::string_view);
template <>
Result<std::string> yaml_as<std::string>(const YAML::Node&, const std::string&,
                                         std::string_view);

class YamlMap {
 public:
  // `node` must be a mapping whose keys are all in `known_keys` (each key at
  // most once); `context` names the mapping in messages ("model card",
  // "suite 'decode' run 2").
  static Result<YamlMap> open(const YAML::Node& node, std::string source, std::string context,
                              std::vector<std::string> known_keys);
  // Same, accepting any keys (free-form string maps such as metadata).
  static Result<YamlMap> open_any(const YAML::Node& node, std::string source,
                                  std::string context);

  const std::string& source() const { return source_; }
  const std::string& context() const { return context_; }
  // Keys present, in file order.
  const std::vector<std::string>& keys() const { return keys_; }
  bool has(std::string_view key) const;
  // The value node; a null (undefined) node if the key is absent.
  YAML::Node node(std::string_view key) const;
  // "source:LINE" of `key` if present, else of the mapping itself.
  std::string where(std::string_view key) const;
  std::string where() const { return yaml_where(source_, map_); }

  // The value of a required key; error if absent.
  Result<YAML::Node> require(std::string_view key) const;

  // Typed values; T as for yaml_as, or std::vector<T> of those (a YAML list).
  template <class T>
  Result<T> get(std::string_view key) const;                // required
  template <class T>
  Result<T> get_or(std::string_view key, T fallback) const;  // optional

  // Assign-style wrappers that read well in a parser body:
  //   EL_TRY(m.read("n_layer", card.n_layer));
  template <class T>
  Status read(std::string_view key, T& out) const {
    auto r = get<T>(key);
    if (!r.ok()) return r.error();
    out = std::move(r).value();
    return Status::Ok();
  }
  // Leaves `out` unchanged when the key is absent.
  template <class T>
  Status read_optional(std::string_view key, T& out) const {
    if (!has(key)) return Status::Ok();
    return read(key, out);
  }

  // A string that must be one of `allowed` (error lists them and suggests).
  Result<std::string> get_choice(std::string_view key,
                                 const std::vector<std::string>& allowed) const;
  Result<std::string> get_choice_or(std::string_view key, const std::vector<std::string>& allowed,
                                    std::string fallback) const;

  // A nested mapping with its own known keys; `context` names it in messages.
  Result<YamlMap> get_map(std::string_view key, std::string context,
                          std::vector<std::string> known_keys) const;
  // The items of a list (required key); each item keeps its own line.
  Result<std::vector<YAML::Node>> get_list(std::string_view key) const;
  // One value or a list of values (required key), for swept options:
  //   seq_len: 512          -> {512}
  //   seq_len: [512, 1024]  -> {512, 1024}
  // An empty list is an error.
  template <class T>
  Result<std::vector<T>> get_sweep(std::string_view key) const;

 private:
  YamlMap() = default;
  std::string value_what(std::string_view key) const;  // "key 'x'"

  YAML::Node map_;
  std::string source_;
  std::string context_;
  std::vector<std::string> keys_;
  std::vector<YAML::Node> key_nodes_;    // parallel to keys_, for line numbers
  std::vector<YAML::Node> value_nodes_;  // parallel to keys_
};

}  // namespace el::io
