// Model card fields of the mixture of experts (moe_* keys, nn/model_card.h):
// defaults, the YAML round trip (written only with moe_experts > 0, so dense
// cards keep their text), the helpers for the expert widths, and every
// validation error naming its field.
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

std::string moe_yaml(const std::string& fields) {
  return test::small_card_yaml("moe", 48, 61, 16, fields);
}

std::string error_of(const std::string& yaml) { return test::card_parse_error(yaml, "moe.yaml"); }
std::string line_of(const std::string& yaml, const std::string& key) {
  return test::yaml_line_of(yaml, key);
}

TEST(ModelCardMoe, Defaults) {
  auto r = parse_model_card(moe_yaml("moe_experts: 8\n"), "moe.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.moe_experts, 8);
  EXPECT_EQ(c.moe_top_k, 2);
  EXPECT_EQ(c.moe_d_ff, 0);
  EXPECT_EQ(c.moe_expert_d_ff(), 48);  // = d_ff
  EXPECT_EQ(c.moe_router, ModelCard::MoeRouter::softmax);
  EXPECT_TRUE(c.moe_norm_topk_prob);
  EXPECT_EQ(c.moe_shared_experts, 0);
  EXPECT_EQ(c.moe_shared_width(), 0);
  EXPECT_FLOAT_EQ(c.moe_aux_loss_coef, 0.01f);
  EXPECT_FLOAT_EQ(c.moe_z_loss_coef, 0.001f);
  EXPECT_EQ(c.moe_capacity_factor, 0.0f);
  // A dense card has no experts.
  EXPECT_EQ(test::small_card().moe_experts, 0);
}

TEST(ModelCardMoe, ParsesFieldsAndRoundTrips) {
  auto r = parse_model_card(moe_yaml("moe_experts: 6\nmoe_top_k: 3\nmoe_d_ff: 20\n"
                                     "moe_router: sigmoid\nmoe_norm_topk_prob: false\n"
                                     "moe_shared_experts: 2\nmoe_shared_d_ff: 12\n"
                                     "moe_aux_loss_coef: 0.02\nmoe_z_loss_coef: 0\n"
                                     "moe_capacity_factor: 1.25\n"),
                            "moe.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.moe_top_k, 3);
  EXPECT_EQ(c.moe_expert_d_ff(), 20);
  EXPECT_EQ(c.moe_router, ModelCard::MoeRouter::sigmoid);
  EXPECT_FALSE(c.moe_norm_topk_prob);
  EXPECT_EQ(c.moe_shared_width(), 24);  // 2 shared experts of 12 = one MLP of 24
  EXPECT_FLOAT_EQ(c.moe_aux_loss_coef, 0.02f);
  EXPECT_EQ(c.moe_z_loss_coef, 0.0f);
  EXPECT_FLOAT_EQ(c.moe_capacity_factor, 1.25f);
  const std::string yaml = model_card_to_yaml(c);
  EXPECT_HAS(yaml, "moe_experts: 6\n");
  EXPECT_HAS(yaml, "moe_router: sigmoid\n");
  EXPECT_HAS(yaml, "moe_capacity_factor: 1.25\n");
  auto back = parse_model_card(yaml, "moe.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back.value(), c);
  // The shared width defaults to the expert width.
  auto s = parse_model_card(moe_yaml("moe_experts: 4\nmoe_d_ff: 16\nmoe_shared_experts: 1\n"),
                            "moe.yaml");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s.value().moe_shared_width(), 16);
}

TEST(ModelCardMoe, DenseCardsKeepTheirText) {
  const std::string yaml = model_card_to_yaml(test::small_card());
  EXPECT_EQ(yaml.find("moe_"), std::string::npos) << yaml;
}

TEST(ModelCardMoe, ErrorsNameTheField) {
  struct Case {
    std::string yaml, key, what;
  };
  const Case cases[] = {
      {moe_yaml("moe_experts: 4\nmoe_top_k: 5\n"), "moe_top_k",
       "moe_top_k (5) exceeds moe_experts (4)"},
      {moe_yaml("moe_experts: 4\nmoe_top_k: 0\n"), "moe_top_k", "moe_top_k must be >= 1, got 0"},
      {moe_yaml("moe_experts: -2\n"), "moe_experts", "moe_experts must be >= 0"},
      {moe_yaml("moe_experts: 257\n"), "moe_experts", "moe_experts must be at most 256, got 257"},
      {moe_yaml("moe_experts: 4\nmoe_shared_experts: 3000\nmoe_shared_d_ff: 1000000\n"),
       "moe_shared_experts",
       "moe_shared_experts (3000) times the shared width (1000000) exceeds 2^31 - 1"},
      {moe_yaml("moe_top_k: 2\n"), "moe_top_k",
       "moe_top_k is set but moe_experts is 0; it is a mixture-of-experts parameter"},
      {moe_yaml("moe_experts: 0\nmoe_router: sigmoid\n"), "moe_router",
       "moe_router is set but moe_experts is 0"},
      {moe_yaml("moe_experts: -1\nmoe_top_k: 1\n"), "moe_top_k",
       "moe_top_k is set but moe_experts is -1"},
      {moe_yaml("moe_experts: 4\nmoe_d_ff: -8\n"), "moe_d_ff", "moe_d_ff must be >= 0, got -8"},
      {moe_yaml("moe_experts: 4\nmoe_shared_d_ff: 16\n"), "moe_shared_d_ff",
       "moe_shared_d_ff (16) is set but moe_shared_experts is 0"},
      {moe_yaml("moe_experts: 4\nmoe_shared_experts: -1\n"), "moe_shared_experts",
       "moe_shared_experts must be >= 0"},
      {moe_yaml("moe_experts: 4\nmoe_aux_loss_coef: -0.1\n"), "moe_aux_loss_coef",
       "moe_aux_loss_coef must be a finite number >= 0, got -0.1"},
      {moe_yaml("moe_experts: 4\nmoe_z_loss_coef: -1e-3\n"), "moe_z_loss_coef",
       "moe_z_loss_coef must be a finite number >= 0"},
      {moe_yaml("moe_experts: 4\nmoe_capacity_factor: -1\n"), "moe_capacity_factor",
       "moe_capacity_factor must be a finite number >= 0"},
      {moe_yaml("moe_experts: 4\nmoe_router: topk\n"), "moe_router", "topk"},
      {moe_yaml("moe_experts: 4\nmlp_bias: true\n"), "mlp_bias",
       "mlp_bias is not supported with moe_experts"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of(c.yaml);
    EXPECT_HAS(msg, c.what);
    EXPECT_HAS(msg, "moe.yaml:" + line_of(c.yaml, c.key));
  }
  // mlp is written before the moe keys, so its own line is named.
  std::string gelu = moe_yaml("moe_experts: 4\n");
  gelu.replace(gelu.find("mlp: swiglu"), 11, "mlp: gelu");
  const std::string msg = error_of(gelu);
  EXPECT_HAS(msg, "mlp gelu is not supported with moe_experts");
  EXPECT_HAS(msg, "moe.yaml:" + line_of(gelu, "mlp"));
  // Built in code: a non-default moe field on a dense card, k > E.
  ModelCard c = test::small_card();
  c.moe_capacity_factor = 2.0f;
  Status st = validate_model_card(c);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "moe_capacity_factor is set but moe_experts is 0");
  EXPECT_HAS(st.error().message(), "key 'moe_capacity_factor'");
  c = test::small_card();
  c.moe_experts = 2;
  c.moe_top_k = 3;
  st = validate_model_card(c);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "key 'moe_top_k'");
}

}  // namespace
}  // namespace el
