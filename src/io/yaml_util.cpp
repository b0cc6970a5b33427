#include "io/yaml_util.h"

#include <charconv>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "io/file_util.h"
#include "io/suggest.h"

namespace el::io {

namespace {

// yaml-cpp tags a quoted scalar "!" and a plain one "?": a quoted value is
// always a string, even if it looks like a number.
bool is_quoted(const YAML::Node& n) { return n.Tag() == "!"; }

std::string expected(std::string_view what, std::string_view type, const YAML::Node& n) {
  return fmt::format("{}: expected {}, got {}", what, type, yaml_describe(n));
}

Result<int64_t> parse_int(const YAML::Node& n, const std::string& source, std::string_view what) {
  if (!n.IsScalar() || is_quoted(n))
    return make_error(expected(what, "an integer", n), yaml_where(source, n));
  std::string_view s = n.Scalar();
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  int64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return make_error(fmt::format("{}: integer '{}' is out of range", what, n.Scalar()),
                      yaml_where(source, n));
  }
  if (ec != std::errc() || p != s.data() + s.size() || s.empty())
    return make_error(expected(what, "an integer", n), yaml_where(source, n));
  return v;
}

// Parses a finite float of type F (float directly, not via double, so that a
// float written with fmt's shortest round-trip form reads back bit-exact).
template <class F>
Result<F> parse_float(const YAML::Node& n, const std::string& source, std::string_view what) {
  if (!n.IsScalar() || is_quoted(n))
    return make_error(expected(what, "a number", n), yaml_where(source, n));
  std::string_view s = n.Scalar();
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  F v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return make_error(fmt::format("{}: number '{}' is out of range", what, n.Scalar()),
                      yaml_where(source, n));
  }
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || !std::isfinite(v))
    return make_error(expected(what, "a finite number", n), yaml_where(source, n));
  return v;
}

}  // namespace

// ---- files and parsing ---------------------------------------------------------------

Result<YAML::Node> parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    const std::string where =
        e.mark.is_null() ? source : fmt::format("{}:{}", source, e.mark.line + 1);
    return make_error("YAML syntax error: " + e.msg, where);
  }
}

Result<YAML::Node> load_yaml_file(const std::string& path) {
  EL_TRY_ASSIGN(std::string text, read_file(path));
  return parse_yaml(text, path);
}

std::string yaml_where(const std::string& source, const YAML::Node& node) {
  if (!node.IsDefined() || node.Mark().is_null()) return source;
  return fmt::format("{}:{}", source, node.Mark().line + 1);
}

std::string yaml_describe(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing (null)";
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a list";
  if (is_quoted(n)) return fmt::format("the string \"{}\"", n.Scalar());
  return fmt::format("'{}'", n.Scalar());
}

// ---- scalar conversions -----------------------------------------------------------------

template <>
Result<int64_t> yaml_as<int64_t>(const YAML::Node& n, const std::string& source,
                                 std::string_view what) {
  return parse_int(n, source, what);
}

template <>
Result<int> yaml_as<int>(const YAML::Node& n, const std::string& source, std::string_view what) {
  EL_TRY_ASSIGN(int64_t v, parse_int(n, source, what));
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    return make_error(fmt::format("{}: integer {} is out of range (32-bit)", what, v),
                      yaml_where(source, n));
  }
  return static_cast<int>(v);
}

template <>
Result<double> yaml_as<double>(const YAML::Node& n, const std::string& source,
                               std::string_view what) {
  return parse_float<double>(n, source, what);
}

template <>
Result<float> yaml_as<float>(const YAML::Node& n, const std::string& source,
                             std::string_view what) {
  return parse_float<float>(n, source, what);
}

template <>
Result<bool> yaml_as<bool>(const YAML::Node& n, const std::string& source, std::string_view what) {
  if (n.IsScalar() && !is_quoted(n)) {
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  return make_error(expected(what, "true or false", n), yaml_where(source, n));
}

template <>
Result<std::string> yaml_as<std::string>(const YAML::Node& n, const std::string& source,
                                         std::string_view what) {
  if (!n.IsScalar()) return make_error(expected(what, "a string", n), yaml_where(source, n));
  return n.Scalar();
}

// ---- YamlMap ------------------------------------------------------------------------------

Result<YamlMap> YamlMap::open_any(const YAML::Node& node, std::string source,
                                  std::string context) {
  if (!node.IsDefined() || !node.IsMap()) {
    return make_error(fmt::format("expected a mapping (key: value lines) for {}, got {}", context,
                                  yaml_describe(node)),
                      yaml_where(source, node));
  }
  YamlMap m;
  m.map_ = node;
  m.source_ = std::move(source);
  m.context_ = std::move(context);
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies, not references: yaml-cpp's iterator returns a temporary pair.
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    if (!k.IsScalar()) {
      return make_error(fmt::format("keys of {} must be plain names, got {}", m.context_,
                                    yaml_describe(k)),
                        yaml_where(m.source_, k));
    }
    const std::string key = k.Scalar();
    for (size_t i = 0; i < m.keys_.size(); ++i) {
      if (m.keys_[i] == key) {
        return make_error(
            fmt::format("key '{}' appears twice in {} (first at {})", key, m.context_,
                        yaml_where(m.source_, m.key_nodes_[i])),
            yaml_where(m.source_, k));
      }
    }
    m.keys_.push_back(key);
    m.key_nodes_.push_back(k);
    m.value_nodes_.push_back(v);
  }
  return m;
}

Result<YamlMap> YamlMap::open(const YAML::Node& node, std::string source, std::string context,
                              std::vector<std::string> known_keys) {
  EL_TRY_ASSIGN(YamlMap m, open_any(node, std::move(source), std::move(context)));
  for (size_t i = 0; i < m.keys_.size(); ++i) {
    const std::string& k = m.keys_[i];
    bool known = false;
    for (const auto& kk : known_keys) known = known || kk == k;
    if (!known) {
      return make_error(
          fmt::format("unknown key '{}' in {}{}", k, m.context_, did_you_mean(k, known_keys)),
          yaml_where(m.source_, m.key_nodes_[i]),
          closest_match(k, known_keys).empty() ? "known keys: " + quoted_list(known_keys) : "");
    }
  }
  return m;
}

bool YamlMap::has(std::string_view key) const {
  for (const auto& k : keys_)
    if (k == key) return true;
  return false;
}

YAML::Node YamlMap::node(std::string_view key) const {
  for (size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == key) return value_nodes_[i];
  return YAML::Node(YAML::NodeType::Undefined);
}

std::string YamlMap::where(std::string_view key) const {
  for (size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == key) return yaml_where(source_, key_nodes_[i]);
  return where();
}

std::string YamlMap::value_what(std::string_view key) const {
  return fmt::format("key '{}'", key);
}

Result<YAML::Node> YamlMap::require(std::string_view key) const {
  if (!has(key))
    return make_error(fmt::format("missing required key '{}' in {}", key, context_), where());
  return node(key);
}

namespace {

// Element conversion for get<T>: a scalar T, or a list of them.
template <class T>
struct Getter {
  static Result<T> get(const YAML::Node& n, const std::string& source, const std::string& what,
                       const std::string& where) {
    auto r = yaml_as<T>(n, source, what);
    if (!r.ok()) return make_error(r.error().what, where, r.error().hint);
    return r;
  }
};

template <class T>
struct Getter<std::vector<T>> {
  static Result<std::vector<T>> get(const YAML::Node& n, const std::string& source,
                                    const std::string& what, const std::string& where) {
    if (!n.IsSequence()) return make_error(expected(what, "a list", n), where);
    std::vector<T> out;
    for (size_t i = 0; i < n.size(); ++i) {
      EL_TRY_ASSIGN(T v, yaml_as<T>(n[i], source, fmt::format("{} item {}", what, i + 1)));
      out.push_back(std::move(v));
    }
    return out;
  }
};

}  // namespace

template <class T>
Result<T> YamlMap::get(std::string_view key) const {
  EL_TRY_ASSIGN(YAML::Node n, require(key));
  // Report the key's line: for a null value ("key:" with nothing after it)
  // the parser positions the value on the following line.
  return Getter<T>::get(n, source_, value_what(key), where(key));
}

template <class T>
Result<T> YamlMap::get_or(std::string_view key, T fallback) const {
  if (!has(key)) return fallback;
  return get<T>(key);
}

Result<std::string> YamlMap::get_choice(std::string_view key,
                                        const std::vector<std::string>& allowed) const {
  EL_TRY_ASSIGN(std::string v, get<std::string>(key));
  for (const auto& a : allowed)
    if (a == v) return v;
  return make_error(fmt::format("{}: unknown value '{}'{}; allowed: {}", value_what(key), v,
                                did_you_mean(v, allowed), quoted_list(allowed)),
                    where(key));
}

Result<std::string> YamlMap::get_choice_or(std::string_view key,
                                           const std::vector<std::string>& allowed,
                                           std::string fallback) const {
  if (!has(key)) return fallback;
  return get_choice(key, allowed);
}

Result<YamlMap> YamlMap::get_map(std::string_view key, std::string context,
                                 std::vector<std::string> known_keys) const {
  EL_TRY_ASSIGN(YAML::Node n, require(key));
  if (!n.IsMap()) return make_error(expected(value_what(key), "a mapping", n), where(key));
  return open(n, source_, std::move(context), std::move(known_keys));
}

Result<std::vector<YAML::Node>> YamlMap::get_list(std::string_view key) const {
  EL_TRY_ASSIGN(YAML::Node n, require(key));
  if (!n.IsSequence()) return make_error(expected(value_what(key), "a list", n), where(key));
  std::vector<YAML::Node> out;
  for (size_t i = 0; i < n.size(); ++i) out.push_back(n[i]);
  return out;
}

template <class T>
Result<std::vector<T>> YamlMap::get_sweep(std::string_view key) const {
  EL_TRY_ASSIGN(YAML::Node n, require(key));
  if (n.IsSequence()) {
    if (n.size() == 0)
      return make_error(fmt::format("{}: the list of values is empty", value_what(key)),
                        where(key));
    return Getter<std::vector<T>>::get(n, source_, value_what(key), where(key));
  }
  EL_TRY_ASSIGN(T v, Getter<T>::get(n, source_, value_what(key), where(key)));
  return std::vector<T>{std::move(v)};
}

// Explicit instantiations: the value types configs use.
#define EL_YAML_INSTANTIATE(T)                                                      \
  template Result<T> YamlMap::get<T>(std::string_view) const;                       \
  template Result<T> YamlMap::get_or<T>(std::string_view, T) const;                 \
  template Result<std::vector<T>> YamlMap::get<std::vector<T>>(std::string_view) const; \
  template Result<std::vector<T>> YamlMap::get_or<std::vector<T>>(std::string_view,     \
                                                                  std::vector<T>) const; \
  template Result<std::vector<T>> YamlMap::get_sweep<T>(std::string_view) const;
EL_YAML_INSTANTIATE(int)
EL_YAML_INSTANTIATE(int64_t)
EL_YAML_INSTANTIATE(float)
EL_YAML_INSTANTIATE(double)
EL_YAML_INSTANTIATE(bool)
EL_YAML_INSTANTIATE(std::string)
#undef EL_YAML_INSTANTIATE

}  // namespace el::io
