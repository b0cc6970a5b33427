// The block key and the Mamba fields of the model card (nn/model_card.h):
// defaults, the YAML round trip (block and mamba_* written only with
// block: mamba, so other cards keep their text), the attention / MLP keys a
// Mamba card must not carry, and every range error naming its key.
#include <gtest/gtest.h>

#include <string>

#include "common/test_cards.h"
#include "nn/model_card.h"

namespace el {
namespace {

#ifndef EXPECT_HAS
#define EXPECT_HAS(text, part)                    \
  EXPECT_NE((text).find(part), std::string::npos) \
      << "expected \"" << (part) << "\" in \"" << (text) << "\""
#endif

std::string mamba_yaml(const std::string& extra = "") {
  return "name: m\nblock: mamba\nn_layer: 2\nd_model: 40\nvocab_size: 61\nmax_seq_len: 32\n" +
         extra;
}

std::string error_of(const std::string& yaml) {
  auto r = parse_model_card(yaml, "m.yaml");
  EXPECT_FALSE(r.ok()) << yaml;
  return r.ok() ? std::string() : r.error().message();
}

TEST(ModelCardMamba, DefaultsAreTransformersMambaConfig) {
  auto r = parse_model_card(mamba_yaml(), "m.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.block, ModelCard::Block::mamba);
  EXPECT_EQ(c.pos_encoding, ModelCard::PosEncoding::none);
  EXPECT_EQ(c.n_head, 0);
  EXPECT_EQ(c.d_ff, 0);
  EXPECT_EQ(c.mamba_d_state, 16);
  EXPECT_EQ(c.mamba_d_conv, 4);
  EXPECT_EQ(c.mamba_expand, 2);
  EXPECT_EQ(c.mamba_dt_rank, 0);
  EXPECT_TRUE(c.mamba_conv_bias);
  EXPECT_FALSE(c.mamba_proj_bias);
  EXPECT_EQ(c.mamba_d_inner(), 80);
  EXPECT_EQ(c.mamba_effective_dt_rank(), 3);  // ceil(40 / 16)
}

TEST(ModelCardMamba, ParsesFieldsAndRoundTrips) {
  auto r = parse_model_card(mamba_yaml("mamba_d_state: 5\nmamba_d_conv: 3\nmamba_expand: 3\n"
                                       "mamba_dt_rank: 7\nmamba_conv_bias: false\n"
                                       "mamba_proj_bias: true\npos_encoding: none\n"),
                            "m.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.mamba_d_state, 5);
  EXPECT_EQ(c.mamba_d_conv, 3);
  EXPECT_EQ(c.mamba_expand, 3);
  EXPECT_EQ(c.mamba_effective_dt_rank(), 7);
  EXPECT_FALSE(c.mamba_conv_bias);
  EXPECT_TRUE(c.mamba_proj_bias);
  const std::string yaml = model_card_to_yaml(c);
  EXPECT_HAS(yaml, "block: mamba\n");
  EXPECT_HAS(yaml, "mamba_d_conv: 3\n");
  EXPECT_EQ(yaml.find("n_head"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("d_ff"), std::string::npos) << yaml;
  auto back = parse_model_card(yaml, "m.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message() << "\n" << yaml;
  EXPECT_EQ(back.value(), c);
}

TEST(ModelCardMamba, TransformerCardsKeepTheirText) {
  const std::string yaml = model_card_to_yaml(test::small_card());
  EXPECT_EQ(yaml.find("block"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("mamba_"), std::string::npos) << yaml;
  auto r =
      parse_model_card(test::small_card_yaml("t", 48, 61, 16, "block: transformer\n"), "t.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value().block, ModelCard::Block::transformer);
}

TEST(ModelCardMamba, UnknownBlockValueNamesTheKey) {
  const std::string e = error_of(mamba_yaml().replace(mamba_yaml().find("mamba\n"), 5, "mambo"));
  EXPECT_HAS(e, "block");
  ModelCard c = test::small_card();
  c.block = static_cast<ModelCard::Block>(7);
  const Status s = validate_model_card(c);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message(), "key 'block'");
}

TEST(ModelCardMamba, AttentionAndMlpKeysAreErrors) {
  for (const char* line : {"n_head: 4\n", "n_kv_head: 2\n", "head_dim: 8\n", "d_ff: 64\n",
                           "rope_theta: 10000\n", "mlp: swiglu\n", "qkv_bias: false\n",
                           "attention: standard\n", "sliding_window: 8\n", "rotary_dims: 4\n",
                           "parallel_residual: false\n", "nsa_window: 8\n", "mlp_bias: true\n",
                           "moe_experts: 8\n"}) {
    const std::string key = std::string(line).substr(0, std::string(line).find(':'));
    const std::string e = error_of(mamba_yaml(line));
    EXPECT_HAS(e, key);
    EXPECT_HAS(e, "not used with block: mamba");
  }
  EXPECT_HAS(error_of(mamba_yaml("pos_encoding: rope\n")), "pos_encoding rope is not used");
}

TEST(ModelCardMamba, MambaKeysNeedBlockMamba) {
  const std::string e = error_of(test::small_card_yaml("t", 48, 61, 16, "mamba_d_state: 8\n"));
  EXPECT_HAS(e, "mamba_d_state is set but block is transformer");
  ModelCard c = test::small_card();
  c.mamba_d_conv = 2;
  const Status s = validate_model_card(c);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message(), "key 'mamba_d_conv'");
}

TEST(ModelCardMamba, RangeErrorsNameTheKey) {
  struct Case {
    std::string extra, key;
  };
  const Case cases[] = {{"mamba_d_state: 0\n", "mamba_d_state"},
                        {"mamba_d_state: 257\n", "mamba_d_state"},
                        {"mamba_d_conv: 0\n", "mamba_d_conv"},
                        {"mamba_d_conv: 65\n", "mamba_d_conv"},
                        {"mamba_expand: 0\n", "mamba_expand"},
                        {"mamba_dt_rank: -1\n", "mamba_dt_rank"},
                        {"mamba_dt_rank: 81\n", "mamba_dt_rank"},
                        {"norm_eps: 0\n", "norm_eps"}};
  for (const auto& c : cases) {
    auto r = parse_model_card(mamba_yaml(c.extra), "m.yaml");
    ASSERT_FALSE(r.ok()) << c.extra;
    EXPECT_HAS(r.error().message(), c.key);
    EXPECT_HAS(r.error().where, "m.yaml:7");  // the appended key's line
  }
  EXPECT_HAS(error_of("name: m\nblock: mamba\nn_layer: 0\nd_model: 40\nvocab_size: 61\n"
                      "max_seq_len: 32\n"),
             "n_layer must be positive");
  // The inner width I = mamba_expand * d_model must be an int.
  auto wide = parse_model_card("name: m\nblock: mamba\nn_layer: 2\nd_model: 200000000\n"
                               "vocab_size: 61\nmax_seq_len: 32\nmamba_expand: 16\n",
                               "m.yaml");
  ASSERT_FALSE(wide.ok());
  EXPECT_HAS(wide.error().message(), "mamba_expand (16) * d_model (200000000) exceeds 2^31 - 1");
  EXPECT_HAS(wide.error().where, "m.yaml:7");
  // A card built in code names the card and the key.
  ModelCard c = parse_model_card(mamba_yaml(), "m.yaml").value();
  c.mamba_d_state = 300;
  const Status s = validate_model_card(c);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().where, "key 'mamba_d_state'");
  c = parse_model_card(mamba_yaml(), "m.yaml").value();
  c.d_ff = 8;
  EXPECT_HAS(validate_model_card(c).error().where, "key 'd_ff'");
}

}  // namespace
}  // namespace el
