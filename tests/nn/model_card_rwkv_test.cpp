// block: rwkv and the rwkv_* fields of the model card (nn/model_card.h,
// nn/model_card_rwkv.cpp): defaults (d_ff 4 d_model, LayerNorm, no
// positional encoding), the YAML round trip (d_ff and rwkv_* written only
// with block: rwkv), the Transformer / Mamba keys an RWKV card must not
// carry, and every error naming its key.
#include <gtest/gtest.h>

#include <string>

#include "common/hf_test_util.h"  // EXPECT_HAS
#include "common/test_cards.h"
#include "nn/model_card.h"

namespace el {
namespace {

std::string rwkv_yaml(const std::string& extra = "") {
  return "name: r\nblock: rwkv\nn_layer: 3\nd_model: 24\nvocab_size: 61\nmax_seq_len: 32\n" +
         extra;
}

std::string error_of(const std::string& yaml) { return test::card_parse_error(yaml, "r.yaml"); }

TEST(ModelCardRwkv, DefaultsAreTransformersRwkvConfig) {
  auto r = parse_model_card(rwkv_yaml(), "r.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.block, ModelCard::Block::rwkv);
  EXPECT_EQ(c.d_ff, 96);  // intermediate_size: 4 hidden_size
  EXPECT_EQ(c.norm, ModelCard::Norm::layernorm);
  EXPECT_EQ(c.pos_encoding, ModelCard::PosEncoding::none);
  EXPECT_EQ(c.n_head, 0);
  EXPECT_EQ(c.rwkv_attention_hidden_size, 0);
  EXPECT_EQ(c.rwkv_rescale_every, 0);
  EXPECT_TRUE(validate_model_card(c).ok());
}

TEST(ModelCardRwkv, ParsesFieldsAndRoundTrips) {
  auto r = parse_model_card(rwkv_yaml("d_ff: 40\nrwkv_attention_hidden_size: 16\n"
                                      "rwkv_rescale_every: 2\nnorm: layernorm\nnorm_eps: 1e-4\n"
                                      "pos_encoding: none\ntied_embeddings: true\n"),
                            "r.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.d_ff, 40);
  EXPECT_EQ(c.rwkv_attention_hidden_size, 16);
  EXPECT_EQ(c.rwkv_rescale_every, 2);
  EXPECT_TRUE(c.tied_embeddings);
  const std::string yaml = model_card_to_yaml(c);
  EXPECT_HAS(yaml, "block: rwkv\n");
  EXPECT_HAS(yaml, "d_ff: 40\n");
  EXPECT_HAS(yaml, "rwkv_rescale_every: 2\n");
  EXPECT_EQ(yaml.find("n_head"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("mamba_"), std::string::npos) << yaml;
  auto back = parse_model_card(yaml, "r.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message() << "\n" << yaml;
  EXPECT_EQ(back.value(), c);
}

TEST(ModelCardRwkv, OtherCardsKeepTheirText) {
  const std::string yaml = model_card_to_yaml(test::small_card());
  EXPECT_EQ(yaml.find("rwkv"), std::string::npos) << yaml;
}

TEST(ModelCardRwkv, KeysAnRwkvLayerDoesNotUseAreErrors) {
  for (const char* line : {"n_head: 4\n", "n_kv_head: 2\n", "head_dim: 8\n", "rope_theta: 500\n",
                           "mlp: gelu\n", "qkv_bias: true\n", "o_bias: false\n",
                           "mlp_bias: true\n", "sliding_window: 8\n", "attention: mla\n",
                           "kv_lora_rank: 8\n", "parallel_residual: false\n", "rotary_dims: 4\n",
                           "nsa_window: 8\n", "rope_scaling: linear\n", "mamba_d_state: 4\n"}) {
    const std::string key = std::string(line).substr(0, std::string(line).find(':'));
    const std::string e = error_of(rwkv_yaml(line));
    EXPECT_HAS(e, key);
    EXPECT_HAS(e, "r.yaml:7");  // the key's own line
  }
  EXPECT_HAS(error_of(rwkv_yaml("norm: rmsnorm\n")), "norm rmsnorm is not supported with block: rwkv");
  EXPECT_HAS(error_of(rwkv_yaml("pos_encoding: rope\n")), "pos_encoding rope");
  EXPECT_HAS(error_of(rwkv_yaml("moe_experts: 4\n")), "moe_experts");
}

TEST(ModelCardRwkv, RwkvKeysNeedBlockRwkv) {
  const std::string e = error_of(test::small_card_yaml("t", 48, 61, 16, "rwkv_rescale_every: 6\n"));
  EXPECT_HAS(e, "rwkv_rescale_every is set but block is transformer");
  EXPECT_HAS(error_of("name: m\nblock: mamba\nn_layer: 2\nd_model: 40\nvocab_size: 61\n"
                      "max_seq_len: 32\nrwkv_attention_hidden_size: 8\n"),
             "rwkv_attention_hidden_size is set but block is mamba");
  ModelCard c = test::small_card();
  c.rwkv_rescale_every = 3;
  const Status s = validate_model_card(c);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message(), "rwkv_rescale_every");
}

TEST(ModelCardRwkv, RangeErrorsNameTheirKey) {
  EXPECT_HAS(error_of(rwkv_yaml("d_ff: 0\n")), "d_ff must be positive");
  EXPECT_HAS(error_of(rwkv_yaml("rwkv_attention_hidden_size: -1\n")),
             "rwkv_attention_hidden_size must be >= 0");
  EXPECT_HAS(error_of(rwkv_yaml("rwkv_rescale_every: -2\n")), "rwkv_rescale_every must be >= 0");
  EXPECT_HAS(error_of(rwkv_yaml("norm_eps: 0\n")), "norm_eps");
  // d_ff's default 4 d_model must be an int.
  const std::string wide = error_of(
      "name: r\nblock: rwkv\nn_layer: 3\nd_model: 600000000\nvocab_size: 61\nmax_seq_len: 32\n");
  EXPECT_HAS(wide, "r.yaml:4");
  EXPECT_HAS(wide, "d_model 600000000 makes the default d_ff (4 d_model) exceed 2^31 - 1");
  auto r = parse_model_card(rwkv_yaml(), "r.yaml");
  ASSERT_TRUE(r.ok());
  ModelCard c = r.value();
  c.n_layer = 50;
  c.rwkv_rescale_every = 1;  // 4^50 would overflow ln_out's eps
  EXPECT_HAS(validate_model_card(c).error().message(), "rwkv_rescale_every");
  c.rwkv_rescale_every = 0;
  c.n_head = 2;  // set in code: still refused
  EXPECT_HAS(validate_model_card(c).error().message(), "n_head is not used with block: rwkv");
}

}  // namespace
}  // namespace el
