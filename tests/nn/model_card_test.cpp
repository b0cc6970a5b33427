// Tests of model cards: every built-in card loads and validates, each parse and
// validation error names the key (and line), to_yaml round-trips, and the
// lookup of built-in names and paths.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "nn/model_card.h"

// EXPECT_HAS(text, part): `text` contains `part` (prints the whole text if not).
#define EXPECT_HAS(text, part)                                            \
  do {                                                                    \
    const std::string el_text_ = (text);                                  \
    EXPECT_NE(el_text_.find(part), std::string::npos)                     \
        << "expected to find \"" << (part) << "\" in \"" << el_text_ << "\""; \
  } while (0)

namespace el {
namespace {

namespace fs = std::filesystem;

// A valid card; `replace` swaps one "key: value" line (or appends when new).
std::string card_text(const std::string& key = "", const std::string& line = "") {
  std::string s =
      "name: t\n"                // 1
      "n_layer: 2\n"             // 2
      "d_model: 64\n"            // 3
      "n_head: 4\n"              // 4
      "n_kv_head: 2\n"           // 5
      "head_dim: 0\n"            // 6
      "d_ff: 96\n"               // 7
      "vocab_size: 100\n"        // 8
      "max_seq_len: 32\n"        // 9
      "norm: rmsnorm\n"          // 10
      "norm_eps: 1.0e-5\n"       // 11
      "pos_encoding: rope\n"     // 12
      "rope_theta: 10000\n"      // 13
      "mlp: swiglu\n"            // 14
      "tied_embeddings: true\n"  // 15
      "init_std: 0.02\n"         // 16
      "qkv_bias: false\n";       // 17
  if (key.empty()) return s;
  const size_t at = s.find(key + ":");
  if (at == std::string::npos) return s + line + "\n";
  const size_t end = s.find('\n', at);
  return s.substr(0, at) + line + s.substr(end);
}

std::string parse_error(const std::string& text) {
  auto r = parse_model_card(text, "c.yaml");
  EXPECT_FALSE(r.ok()) << "expected an error for:\n" << text;
  return r.ok() ? std::string() : r.error().message();
}

TEST(ModelCard, ParsesEveryField) {
  auto r = parse_model_card(card_text(), "c.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.name, "t");
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.n_kv_head, 2);
  EXPECT_EQ(c.head_dim, 0);
  EXPECT_EQ(c.effective_head_dim(), 16);
  EXPECT_EQ(c.d_ff, 96);
  EXPECT_EQ(c.vocab_size, 100);
  EXPECT_EQ(c.max_seq_len, 32);
  EXPECT_EQ(c.norm, ModelCard::Norm::rmsnorm);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.pos_encoding, ModelCard::PosEncoding::rope);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.f);
  EXPECT_EQ(c.mlp, ModelCard::Mlp::swiglu);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FLOAT_EQ(c.init_std, 0.02f);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.source_path, "c.yaml");
}

TEST(ModelCard, OptionalKeysTakeDefaults) {
  auto r = parse_model_card(
      "name: m\nn_layer: 1\nd_model: 32\nn_head: 2\nd_ff: 64\nvocab_size: 10\nmax_seq_len: 8\n",
      "m.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.n_kv_head, 2);  // defaults to n_head
  EXPECT_EQ(c.head_dim, 0);
  EXPECT_EQ(c.norm, ModelCard::Norm::rmsnorm);
  EXPECT_EQ(c.pos_encoding, ModelCard::PosEncoding::rope);
  EXPECT_EQ(c.mlp, ModelCard::Mlp::swiglu);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.f);
  EXPECT_FLOAT_EQ(c.init_std, 0.02f);
}

TEST(ModelCard, UnknownKeyHasLineAndSuggestion) {
  EXPECT_EQ(parse_error(card_text("n_layer", "n_layr: 2")),
            "c.yaml:2: unknown key 'n_layr' in model card (did you mean 'n_layer'?)");
}

TEST(ModelCard, WrongType) {
  EXPECT_EQ(parse_error(card_text("d_model", "d_model: abc")),
            "c.yaml:3: key 'd_model': expected an integer, got 'abc'");
  EXPECT_EQ(parse_error(card_text("tied_embeddings", "tied_embeddings: 1")),
            "c.yaml:15: key 'tied_embeddings': expected true or false, got '1'");
  EXPECT_EQ(parse_error(card_text("norm_eps", "norm_eps: small")),
            "c.yaml:11: key 'norm_eps': expected a finite number, got 'small'");
}

TEST(ModelCard, MissingKey) {
  EXPECT_EQ(parse_error(card_text("vocab_size", "")),
            "c.yaml:1: missing required key 'vocab_size' in model card");
}

TEST(ModelCard, HeadsNotDivisible) {
  const std::string msg = parse_error(card_text("n_kv_head", "n_kv_head: 3"));
  EXPECT_HAS(msg, "c.yaml:5: n_head (4) must be divisible by n_kv_head (3)");
  ModelCard c = parse_model_card(card_text(), "c.yaml").value();
  c.n_head = 12;
  c.n_kv_head = 5;
  c.d_model = 120;
  c.source_path.clear();
  Status st = validate_model_card(c);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().what, "n_head (12) must be divisible by n_kv_head (5)");
  EXPECT_EQ(st.error().where, "model card 't': key 'n_kv_head'");
}

TEST(ModelCard, DModelNotDivisible) {
  EXPECT_HAS(parse_error(card_text("d_model", "d_model: 66")),
             "c.yaml:4: d_model (66) must be divisible by n_head (4) when head_dim is 0");
  // An explicit head_dim lifts the requirement (q/k/v project to H * D).
  auto r = parse_model_card(card_text("d_model", "d_model: 66").replace(
                                card_text().find("head_dim: 0"), 11, "head_dim: 16"),
                            "c.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->effective_head_dim(), 16);
}

TEST(ModelCard, OddHeadDimWithRope) {
  EXPECT_HAS(parse_error(card_text("head_dim", "head_dim: 9")),
             "c.yaml:6: head_dim (9) must be even with rope");
  // Without RoPE an odd head_dim is fine.
  std::string t = card_text("head_dim", "head_dim: 9");
  t.replace(t.find("pos_encoding: rope"), 18, "pos_encoding: none");
  EXPECT_TRUE(parse_model_card(t, "c.yaml").ok());
}

TEST(ModelCard, NonPositiveSizes) {
  EXPECT_HAS(parse_error(card_text("n_layer", "n_layer: 0")), "c.yaml:2: n_layer must be positive, got 0");
  EXPECT_HAS(parse_error(card_text("vocab_size", "vocab_size: -5")),
             "c.yaml:8: vocab_size must be positive, got -5");
  EXPECT_HAS(parse_error(card_text("head_dim", "head_dim: -2")), "c.yaml:6: head_dim must be positive");
  EXPECT_HAS(parse_error(card_text("norm_eps", "norm_eps: 0")),
             "c.yaml:11: norm_eps must be a positive number, got 0");
  EXPECT_HAS(parse_error(card_text("name", "name: \"\"")), "c.yaml:1: name must not be empty");
}

TEST(ModelCard, BadEnumListsAllowedValues) {
  EXPECT_EQ(parse_error(card_text("norm", "norm: rmsnrom")),
            "c.yaml:10: key 'norm': unknown value 'rmsnrom' (did you mean 'rmsnorm'?); allowed: "
            "'rmsnorm', 'layernorm'");
  EXPECT_HAS(parse_error(card_text("mlp", "mlp: relu")), "allowed: 'swiglu', 'gelu'");
  EXPECT_HAS(parse_error(card_text("pos_encoding", "pos_encoding: t5")),
             "c.yaml:12: key 'pos_encoding': unknown value 't5'; allowed: 'rope', 'none', "
             "'sinusoidal', 'learned', 'alibi'");
  ModelCard c = parse_model_card(card_text(), "c.yaml").value();
  c.mlp = static_cast<ModelCard::Mlp>(7);
  EXPECT_HAS(validate_model_card(c).error().message(), "allowed: 'swiglu', 'gelu'");
}

TEST(ModelCard, YamlSyntaxErrorHasLine) {
  const std::string msg = parse_error("name: t\nn_layer: [2\nd_model: 64\n");
  EXPECT_HAS(msg, "c.yaml:3: YAML syntax error");
}

TEST(ModelCard, ToYamlRoundTrips) {
  ModelCard c = parse_model_card(card_text(), "c.yaml").value();
  c.name = "odd name: with \"quotes\"";
  c.norm = ModelCard::Norm::layernorm;
  c.mlp = ModelCard::Mlp::gelu;
  c.pos_encoding = ModelCard::PosEncoding::none;
  c.norm_eps = 1.2345678e-6f;
  c.init_std = 0.008f;
  c.rope_theta = 1e6f;
  c.qkv_bias = true;
  c.head_dim = 10;
  c.tied_embeddings = false;
  ASSERT_TRUE(validate_model_card(c).ok()) << validate_model_card(c).error().message();
  const std::string yaml = model_card_to_yaml(c);
  auto back = parse_model_card(yaml, "c.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message() << "\n" << yaml;
  EXPECT_EQ(back.value(), c) << yaml;  // exact, floats included
  EXPECT_EQ(model_card_to_yaml(back.value()), yaml);
}

TEST(ModelCard, EveryBuiltinCardLoadsValidatesAndRoundTrips) {
  const auto names = builtin_model_card_names();
  for (const char* expected : {"tiny", "tiny-gqa", "tiny-mqa", "small", "llama-124m",
                               "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  for (const auto& name : names) {
    auto r = find_model_card(name);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->name, name) << "a built-in card's name must equal its file stem";
    EXPECT_TRUE(validate_model_card(r.value()).ok()) << name;
    auto back = parse_model_card(model_card_to_yaml(r.value()), r->source_path);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back.value(), r.value()) << name;
  }
}

TEST(ModelCard, PaperShapes) {
  struct Want { const char* name; int L, C, H, Hkv, F; };
  for (const Want& w : {Want{"qwen2.5-0.5b", 24, 896, 14, 2, 4864},
                        Want{"qwen2.5-1.5b", 28, 1536, 12, 2, 8960},
                        Want{"qwen2.5-3b", 36, 2048, 16, 2, 11008}}) {
    const ModelCard c = find_model_card(w.name).value();
    EXPECT_EQ(c.n_layer, w.L);
    EXPECT_EQ(c.d_model, w.C);
    EXPECT_EQ(c.n_head, w.H);
    EXPECT_EQ(c.n_kv_head, w.Hkv);
    EXPECT_EQ(c.d_ff, w.F);
    EXPECT_EQ(c.vocab_size, 151936);
    EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
    EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
    EXPECT_FLOAT_EQ(c.init_std, 0.008f);
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_EQ(c.mlp, ModelCard::Mlp::swiglu);
    EXPECT_EQ(c.max_seq_len, 8192);
  }
  EXPECT_EQ(find_model_card("tiny-gqa").value().n_kv_head, 2);
  EXPECT_EQ(find_model_card("tiny-mqa").value().n_kv_head, 1);
  const ModelCard l = find_model_card("llama-124m").value();
  EXPECT_FALSE(l.tied_embeddings);
  EXPECT_EQ(l.n_kv_head, 4);
}

TEST(ModelCard, FindByPathAndUnknownName) {
  const fs::path p = fs::path(::testing::TempDir()) /
                     ("el_card_" + std::to_string(::getpid()) + ".yaml");
  { std::ofstream(p) << card_text(); }
  auto r = find_model_card(p.string());
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->source_path, p.string());
  fs::remove(p);

  auto missing = find_model_card("/no/such/card.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.error().message(), "/no/such/card.yaml");

  auto unknown = find_model_card("tiny-gpa");
  ASSERT_FALSE(unknown.ok());
  const std::string msg = unknown.error().message();
  EXPECT_HAS(msg, "unknown model card 'tiny-gpa' (did you mean 'tiny-gqa'?)");
  EXPECT_HAS(msg, "built-in cards: ");
  EXPECT_HAS(msg, "qwen2.5-0.5b");
}

TEST(ModelCard, HomeDirectoryIsSearchedFirst) {
  const fs::path home = fs::path(::testing::TempDir()) /
                        ("el_home_" + std::to_string(::getpid()));
  fs::create_directories(home / "configs" / "models");
  { std::ofstream(home / "configs" / "models" / "mine.yaml") << card_text("name", "name: mine"); }
  const char* old = std::getenv("EFFICIENTLLM_HOME");
  const std::string saved = old ? old : "";
  ::setenv("EFFICIENTLLM_HOME", home.c_str(), 1);
  auto dirs = model_card_search_dirs();
  ASSERT_FALSE(dirs.empty());
  EXPECT_EQ(dirs.front(), fs::canonical(home / "configs" / "models").string());
  auto r = find_model_card("mine");
  EXPECT_TRUE(r.ok()) << r.error().message();
  const auto names = builtin_model_card_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "mine"), names.end());
  if (old) ::setenv("EFFICIENTLLM_HOME", saved.c_str(), 1); else ::unsetenv("EFFICIENTLLM_HOME");
  fs::remove_all(home);
}

}  // namespace
}  // namespace el
