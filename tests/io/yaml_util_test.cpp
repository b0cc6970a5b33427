// Tests of the strict YAML helpers: every error names path:LINE, the key and
// what was expected; suggestions for misspelt keys and values; lists, nested
// maps and sweeps as benchmark suites use them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/suggest.h"
#include "io/yaml_util.h"

// EXPECT_HAS(text, part): `text` contains `part` (prints the whole text if not).
#define EXPECT_HAS(text, part)                                            \
  do {                                                                    \
    const std::string el_text_ = (text);                                  \
    EXPECT_NE(el_text_.find(part), std::string::npos)                     \
        << "expected to find \"" << (part) << "\" in \"" << el_text_ << "\""; \
  } while (0)

namespace el::io {
namespace {

const std::vector<std::string> kKnown = {"n_layer", "d_model", "norm", "eps", "tied", "name",
                                         "sizes", "sub"};

YamlMap open_map(const std::string& text, std::vector<std::string> known = kKnown) {
  auto node = parse_yaml(text, "card.yaml");
  EL_ENSURE(node.ok(), "{}", node.error().message());
  auto m = YamlMap::open(node.value(), "card.yaml", "model card", std::move(known));
  EL_ENSURE(m.ok(), "{}", m.error().message());
  return std::move(m).value();
}

std::string open_error(const std::string& text) {
  auto node = parse_yaml(text, "card.yaml");
  if (!node.ok()) return node.error().message();
  auto m = YamlMap::open(node.value(), "card.yaml", "model card", kKnown);
  EXPECT_FALSE(m.ok());
  return m.ok() ? std::string() : m.error().message();
}

TEST(Suggest, LevenshteinAndClosest) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("n_layr", "n_layer"), 1u);
  EXPECT_EQ(edit_distance("nrom", "norm"), 1u);  // a transposition is one edit
  EXPECT_EQ(edit_distance("ab", "ba"), 1u);
  EXPECT_EQ(closest_match("n_layr", {"d_model", "n_layer", "n_head"}), "n_layer");
  EXPECT_EQ(closest_match("rmsnrom", {"rmsnorm", "layernorm"}), "rmsnorm");
  EXPECT_EQ(closest_match("vocabulary", {"n_layer", "mlp"}), "");
  EXPECT_EQ(did_you_mean("swiglue", {"swiglu", "gelu"}), " (did you mean 'swiglu'?)");
  EXPECT_EQ(quoted_list({"a", "b"}), "'a', 'b'");
}

TEST(YamlUtil, ReadsTypedValues) {
  YamlMap m = open_map("name: tiny\nn_layer: 4\nd_model: +128\neps: 1e-5\ntied: true\n");
  EXPECT_EQ(m.get<std::string>("name").value(), "tiny");
  EXPECT_EQ(m.get<int>("n_layer").value(), 4);
  EXPECT_EQ(m.get<int64_t>("d_model").value(), 128);
  EXPECT_FLOAT_EQ(m.get<float>("eps").value(), 1e-5f);
  EXPECT_DOUBLE_EQ(m.get<double>("n_layer").value(), 4.0);  // an integer is a valid number
  EXPECT_TRUE(m.get<bool>("tied").value());
  EXPECT_EQ(m.get_or<int>("sizes", 7).value(), 7);
  EXPECT_EQ(m.keys(), (std::vector<std::string>{"name", "n_layer", "d_model", "eps", "tied"}));
  int x = 0;
  m.read("n_layer", x).check();
  EXPECT_EQ(x, 4);
  int y = 9;
  m.read_optional("sizes", y).check();
  EXPECT_EQ(y, 9);
  EXPECT_EQ(m.where("eps"), "card.yaml:4");
  EXPECT_EQ(m.where(), "card.yaml:1");
}

TEST(YamlUtil, UnknownKeyWithLineAndSuggestion) {
  const std::string msg = open_error("name: x\n\n# comment\nn_layr: 4\n");
  EXPECT_EQ(msg, "card.yaml:4: unknown key 'n_layr' in model card (did you mean 'n_layer'?)");
  // No close match: list the known keys instead.
  EXPECT_HAS(open_error("zzzzzzzz: 1\n"), "unknown key 'zzzzzzzz' in model card (hint: known keys: 'n_layer'");
}

TEST(YamlUtil, DuplicateKey) {
  EXPECT_EQ(open_error("n_layer: 1\nd_model: 2\nn_layer: 3\n"),
            "card.yaml:3: key 'n_layer' appears twice in model card (first at card.yaml:1)");
}

TEST(YamlUtil, MissingRequiredKey) {
  YamlMap m = open_map("\nname: x\n");
  auto r = m.get<int>("n_layer");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "card.yaml:2: missing required key 'n_layer' in model card");
}

TEST(YamlUtil, WrongTypes) {
  YamlMap m = open_map(
      "n_layer: abc\nd_model: 1e6\nname: [a, b]\ntied: yes\neps: \"0.1\"\nnorm:\nsizes: 3.5\n");
  EXPECT_EQ(m.get<int>("n_layer").error().message(),
            "card.yaml:1: key 'n_layer': expected an integer, got 'abc'");
  EXPECT_EQ(m.get<int>("d_model").error().message(),
            "card.yaml:2: key 'd_model': expected an integer, got '1e6'");
  EXPECT_EQ(m.get<std::string>("name").error().message(),
            "card.yaml:3: key 'name': expected a string, got a list");
  EXPECT_EQ(m.get<bool>("tied").error().message(),
            "card.yaml:4: key 'tied': expected true or false, got 'yes'");
  EXPECT_EQ(m.get<float>("eps").error().message(),
            "card.yaml:5: key 'eps': expected a number, got the string \"0.1\"");
  EXPECT_EQ(m.get<int>("norm").error().message(),
            "card.yaml:6: key 'norm': expected an integer, got nothing (null)");
  EXPECT_EQ(m.get<int>("sizes").error().message(),
            "card.yaml:7: key 'sizes': expected an integer, got '3.5'");
  EXPECT_HAS(m.get<float>("n_layer").error().message(), "expected a finite number, got 'abc'");
}

TEST(YamlUtil, OutOfRange) {
  YamlMap m = open_map("n_layer: 3000000000\nd_model: 99999999999999999999\neps: 1e60\n");
  EXPECT_HAS(m.get<int>("n_layer").error().message(), "integer 3000000000 is out of range");
  EXPECT_EQ(m.get<int64_t>("n_layer").value(), 3000000000);
  EXPECT_HAS(m.get<int64_t>("d_model").error().message(), "out of range");
  EXPECT_HAS(m.get<float>("eps").error().message(), "card.yaml:3: key 'eps': number '1e60' is out of range");
  EXPECT_DOUBLE_EQ(m.get<double>("eps").value(), 1e60);
}

TEST(YamlUtil, Choice) {
  YamlMap m = open_map("norm: rmsnrom\nname: layernorm\n");
  const std::vector<std::string> allowed = {"rmsnorm", "layernorm"};
  EXPECT_EQ(m.get_choice("norm", allowed).error().message(),
            "card.yaml:1: key 'norm': unknown value 'rmsnrom' (did you mean 'rmsnorm'?); allowed: "
            "'rmsnorm', 'layernorm'");
  EXPECT_EQ(m.get_choice("name", allowed).value(), "layernorm");
  EXPECT_EQ(m.get_choice_or("eps", allowed, "rmsnorm").value(), "rmsnorm");
}

TEST(YamlUtil, SyntaxErrorHasLine) {
  auto r = parse_yaml("a: 1\nb: [1, 2\nc: 3\n", "suite.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "suite.yaml:3: YAML syntax error");
  auto r2 = parse_yaml("a: 1\n  b: 2\n", "suite.yaml");
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().where, "suite.yaml:2");
}

TEST(YamlUtil, NotAMapping) {
  EXPECT_EQ(open_error("- 1\n- 2\n"),
            "card.yaml:1: expected a mapping (key: value lines) for model card, got a list");
  EXPECT_EQ(open_error(""), "card.yaml: expected a mapping (key: value lines) for model card, got nothing (null)");
  EXPECT_HAS(open_error("just a string\n"), "got 'just a string'");
}

TEST(YamlUtil, ListsNestedMapsAndSweeps) {
  YamlMap m = open_map(
      "sizes: [1, 2, 3]\n"
      "name: [a, b]\n"
      "n_layer: 4\n"
      "sub:\n"
      "  eps: 0.5\n"
      "  nrom: x\n"
      "d_model: []\n");
  EXPECT_EQ(m.get<std::vector<int>>("sizes").value(), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(m.get<std::vector<std::string>>("name").value(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.get_sweep<int>("n_layer").value(), std::vector<int>{4});
  EXPECT_EQ(m.get_sweep<int64_t>("sizes").value(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(m.get_sweep<int>("d_model").error().message(),
            "card.yaml:7: key 'd_model': the list of values is empty");
  EXPECT_EQ(m.get<std::vector<int>>("n_layer").error().message(),
            "card.yaml:3: key 'n_layer': expected a list, got '4'");
  EXPECT_EQ(m.get_sweep<int>("name").error().message(),
            "card.yaml:2: key 'name' item 1: expected an integer, got 'a'");
  auto items = m.get_list("sizes").value();
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(yaml_as<int>(items[2], "card.yaml", "sizes[2]").value(), 3);
  // Nested map with its own keys: the unknown key reports its own line.
  auto sub = m.get_map("sub", "section 'sub'", {"eps", "norm"});
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(sub.error().message(),
            "card.yaml:6: unknown key 'nrom' in section 'sub' (did you mean 'norm'?)");
  auto sub2 = m.get_map("sub", "section 'sub'", {"eps", "nrom"});
  ASSERT_TRUE(sub2.ok());
  EXPECT_DOUBLE_EQ(sub2->get<double>("eps").value(), 0.5);
  EXPECT_EQ(m.get_map("n_layer", "x", {}).error().message(),
            "card.yaml:3: key 'n_layer': expected a mapping, got '4'");
  // A list of mappings (benchmark suite runs), each opened on its own.
  auto node = parse_yaml("runs:\n  - {name: a}\n  - {nme: b}\n", "s.yaml").value();
  auto suite = YamlMap::open(node, "s.yaml", "suite", {"runs"}).value();
  auto runs = suite.get_list("runs").value();
  EXPECT_TRUE(YamlMap::open(runs[0], "s.yaml", "run 1", {"name"}).ok());
  EXPECT_EQ(YamlMap::open(runs[1], "s.yaml", "run 2", {"name"}).error().message(),
            "s.yaml:3: unknown key 'nme' in run 2 (did you mean 'name'?)");
}

TEST(YamlUtil, OpenAnyAcceptsAllKeys) {
  auto node = parse_yaml("x: 1\ny: two\n", "m.yaml").value();
  auto m = YamlMap::open_any(node, "m.yaml", "metadata");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->keys(), (std::vector<std::string>{"x", "y"}));
}

TEST(YamlUtil, LoadFile) {
  const auto p = std::filesystem::path(::testing::TempDir()) / "el_yaml_util_test.yaml";
  { std::ofstream(p) << "n_layer: 2\n"; }
  auto n = load_yaml_file(p.string());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n.value()["n_layer"].as<int>(), 2);
  std::filesystem::remove(p);
  auto missing = load_yaml_file("/nonexistent/x.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "/nonexistent/x.yaml: cannot open file: No such file or directory");
}

}  // namespace
}  // namespace el::io
