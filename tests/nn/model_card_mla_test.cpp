// Model card fields of attention: mla (nn/model_card.h): parsing, the YAML
// round trip (old cards keep their text), and every validation error naming
// its field.
#include <gtest/gtest.h>

#include <string>

#include "common/test_cards.h"
#include "nn/model_card.h"

namespace el {
namespace {

const std::string kMla =
    "attention: mla\nq_lora_rank: 16\nkv_lora_rank: 12\nqk_nope_head_dim: 8\n"
    "qk_rope_head_dim: 4\nv_head_dim: 6\n";

// The small test card (n_kv_head 2) with n_kv_head equal to n_head, as MLA needs.
std::string mla_yaml(const std::string& fields) {
  std::string y = test::small_card_yaml("mla", 48, 61, 16, fields);
  const std::string kv = "n_kv_head: 2\n";
  y.replace(y.find(kv), kv.size(), "n_kv_head: 4\n");
  return y;
}

std::string error_of(const std::string& yaml) {
  auto r = parse_model_card(yaml, "mla.yaml");
  EXPECT_FALSE(r.ok()) << yaml;
  return r.ok() ? std::string() : r.error().message();
}

#ifndef EXPECT_HAS
#define EXPECT_HAS(text, part)                    \
  EXPECT_NE((text).find(part), std::string::npos) \
      << "expected \"" << (part) << "\" in \"" << (text) << "\""
#endif

TEST(ModelCardMla, ParsesFieldsAndRoundTrips) {
  auto r = parse_model_card(mla_yaml(kMla), "mla.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.attention, ModelCard::Attention::mla);
  EXPECT_EQ(c.q_lora_rank, 16);
  EXPECT_EQ(c.kv_lora_rank, 12);
  EXPECT_EQ(c.qk_nope_head_dim, 8);
  EXPECT_EQ(c.qk_rope_head_dim, 4);
  EXPECT_EQ(c.v_head_dim, 6);
  const std::string yaml = model_card_to_yaml(c);
  EXPECT_HAS(yaml, "attention: mla\n");
  EXPECT_HAS(yaml, "kv_lora_rank: 12\n");
  auto back = parse_model_card(yaml, "mla.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back.value(), c);
  // q_lora_rank 0 (no query compression) is the default and not written.
  ModelCard c0 = c;
  c0.q_lora_rank = 0;
  EXPECT_TRUE(validate_model_card(c0).ok());
  EXPECT_EQ(model_card_to_yaml(c0).find("q_lora_rank"), std::string::npos);
}

TEST(ModelCardMla, StandardCardsKeepTheirText) {
  const ModelCard c = test::small_card();
  EXPECT_EQ(c.attention, ModelCard::Attention::standard);
  const std::string yaml = model_card_to_yaml(c);
  for (const char* key : {"attention", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                          "qk_rope_head_dim", "v_head_dim"}) {
    EXPECT_EQ(yaml.find(key), std::string::npos) << key;
  }
  auto r =
      parse_model_card(test::small_card_yaml("t", 48, 61, 16, "attention: standard\n"), "t.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value().attention, ModelCard::Attention::standard);
}

TEST(ModelCardMla, ErrorsNameTheField) {
  struct Case {
    std::string yaml, key, what;
  };
  const std::string dims_but_rank =
      "attention: mla\nqk_nope_head_dim: 8\nqk_rope_head_dim: 4\nv_head_dim: 6\n";
  const Case cases[] = {
      {mla_yaml(dims_but_rank + "kv_lora_rank: 0\n"), "kv_lora_rank",
       "kv_lora_rank must be positive with attention: mla, got 0"},
      {mla_yaml(dims_but_rank), "kv_lora_rank", "kv_lora_rank must be positive"},
      {mla_yaml("attention: mla\nkv_lora_rank: 12\nqk_nope_head_dim: 8\nqk_rope_head_dim: 5\n"
                "v_head_dim: 6\n"),
       "qk_rope_head_dim", "qk_rope_head_dim (5) must be even"},
      {mla_yaml("attention: mla\nkv_lora_rank: 12\nqk_nope_head_dim: -1\nqk_rope_head_dim: 4\n"
                "v_head_dim: 6\n"),
       "qk_nope_head_dim", "qk_nope_head_dim must be positive with attention: mla, got -1"},
      {mla_yaml("attention: mla\nkv_lora_rank: 12\nqk_nope_head_dim: 8\nqk_rope_head_dim: 4\n"),
       "v_head_dim", "v_head_dim must be positive"},
      {mla_yaml(kMla + "head_dim: 8\n"), "head_dim",
       "head_dim (8) is not used with attention: mla"},
      {mla_yaml("attention: mla\nq_lora_rank: -2\nkv_lora_rank: 12\nqk_nope_head_dim: 8\n"
                "qk_rope_head_dim: 4\nv_head_dim: 6\n"),
       "q_lora_rank", "q_lora_rank must be >= 0"},
      {test::small_card_yaml("mla", 48, 61, 16, kMla), "n_kv_head",
       "n_kv_head (2) must equal n_head (4) with attention: mla"},
      {test::small_card_yaml("std", 48, 61, 16, "kv_lora_rank: 12\n"), "kv_lora_rank",
       "kv_lora_rank is set (12) but attention is standard"},
      {test::small_card_yaml("std", 48, 61, 16, "q_lora_rank: 8\n"), "q_lora_rank",
       "q_lora_rank is set (8) but attention is standard"},
      {test::small_card_yaml("std", 48, 61, 16, "attention: latent\n"), "attention", "latent"},
  };
  for (const Case& c : cases) {
    const std::string e = error_of(c.yaml);
    EXPECT_HAS(e, c.what);
    EXPECT_HAS(e, "mla.yaml:");  // a line of the file
  }
  // validate_model_card names the key for a card built in code.
  ModelCard c = parse_model_card(mla_yaml(kMla), "mla.yaml").value();
  c.source_path.clear();
  c.v_head_dim = 0;
  const Status s = validate_model_card(c);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message(), "key 'v_head_dim'");
  c.v_head_dim = 6;
  c.attention = static_cast<ModelCard::Attention>(7);
  EXPECT_HAS(validate_model_card(c).error().message(), "unknown attention value 7");
}

}  // namespace
}  // namespace el
