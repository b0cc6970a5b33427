// MLA cards and imports: the built-in MLA cards (configs/models/*-mla.yaml)
// and their KV-cache bytes per token against GQA / MQA / MHA (the table in
// docs/ARCHITECTURE.md), the head-dim limits of the CUDA kernels checked at
// model build (check_mla_for_device, naming the field), and transformers'
// deepseek_v3 / deepseek_v2 configs through the normal HF loader
// (io/hf_config.h, models/hf_model.h): the fixtures of
// tools/make_mla_fixtures.py load by directory and match transformers'
// logits; MoE and other unsupported keys are refused by name.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/decoder_lm.h"
#include "models/hf_model.h"
#include "nn/kv_cache.h"
#include "nn/mla.h"

namespace el {
namespace {

namespace fs = std::filesystem;

#define EXPECT_HAS(text, part)                    \
  EXPECT_NE((text).find(part), std::string::npos) \
      << "expected \"" << (part) << "\" in \"" << (text) << "\""

ModelCard builtin(const std::string& name) {
  auto r = find_model_card(name);
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

TEST(MlaCards, PaperCardsFollowTheAuthorsStatement) {
  // latent = hidden / 8, qk head dim 128 (+ the 64 RoPE dims), v 128.
  for (const auto& [name, base] : {std::pair{"qwen2.5-0.5b-mla", "qwen2.5-0.5b"},
                                   {"qwen2.5-1.5b-mla", "qwen2.5-1.5b"},
                                   {"qwen2.5-3b-mla", "qwen2.5-3b"}}) {
    const ModelCard c = builtin(name), b = builtin(base);
    EXPECT_TRUE(validate_model_card(c).ok()) << name;
    EXPECT_EQ(c.attention, ModelCard::Attention::mla) << name;
    EXPECT_EQ(c.kv_lora_rank * 8, c.d_model) << name;
    EXPECT_EQ(c.qk_nope_head_dim, 128) << name;
    EXPECT_EQ(c.qk_rope_head_dim, 64) << name;
    EXPECT_EQ(c.v_head_dim, 128) << name;
    EXPECT_EQ(mla_attention_dim(c), 192) << name;
    // Everything but the attention as the GQA baseline.
    EXPECT_EQ(c.n_layer, b.n_layer) << name;
    EXPECT_EQ(c.d_model, b.d_model) << name;
    EXPECT_EQ(c.n_head, b.n_head) << name;
    EXPECT_EQ(c.d_ff, b.d_ff) << name;
    EXPECT_EQ(c.vocab_size, b.vocab_size) << name;
    EXPECT_EQ(c.max_seq_len, b.max_seq_len) << name;
    EXPECT_EQ(c.rope_theta, b.rope_theta) << name;
    EXPECT_TRUE(check_mla_for_device(c, Device::cuda(0)).ok()) << name;
  }
  const ModelCard tiny = builtin("tiny-mla");
  EXPECT_TRUE(validate_model_card(tiny).ok());
  EXPECT_EQ(tiny.d_model, builtin("tiny").d_model);
  auto m = DecoderLM::create(tiny, Device::cpu(), 1);
  ASSERT_TRUE(m.ok()) << m.error().message();
}

// docs/ARCHITECTURE.md, "KV-cache bytes per token": bf16, one position.
TEST(MlaCards, KvCacheBytesPerTokenTable) {
  struct Row {
    const char* size;
    int64_t mha, gqa, mqa, mla;
  };
  for (const Row& r : {Row{"0.5b", 86016, 12288, 6144, 8448}, Row{"1.5b", 172032, 28672, 14336, 14336},
                       Row{"3b", 294912, 36864, 18432, 23040}}) {
    const std::string base = std::string("qwen2.5-") + r.size;
    auto bytes = [](const std::string& card) {
      return KvCache::bytes_per_sequence(builtin(card), 1, DType::bf16);
    };
    EXPECT_EQ(bytes(base + "-mha"), r.mha) << base;
    EXPECT_EQ(bytes(base), r.gqa) << base;
    EXPECT_EQ(bytes(base + "-mqa"), r.mqa) << base;
    EXPECT_EQ(bytes(base + "-mla"), r.mla) << base;
  }
}

ModelCard mla_card(int kv_lora, int nope, int rope, int v) {
  ModelCard c = builtin("tiny-mla");
  c.kv_lora_rank = kv_lora;
  c.qk_nope_head_dim = nope;
  c.qk_rope_head_dim = rope;
  c.v_head_dim = v;
  c.source_path = "big.yaml";
  EL_ENSURE(validate_model_card(c).ok(), "test card");
  return c;
}

TEST(MlaCards, CudaHeadDimLimitsNameTheField) {
  struct Case {
    ModelCard card;
    std::string key, what;
  };
  const Case cases[] = {
      {mla_card(16, 200, 64, 32), "qk_nope_head_dim",
       "qk_nope_head_dim (200) + qk_rope_head_dim (64) = 264 exceeds 256"},
      {mla_card(16, 32, 16, 300), "v_head_dim", "v_head_dim (300) exceeds 256"},
      {mla_card(600, 32, 16, 32), "kv_lora_rank",
       "kv_lora_rank (600) + qk_rope_head_dim (16) = 616 cache columns exceed 576"},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(check_mla_for_device(c.card, Device::cpu()).ok()) << c.key;  // no CPU limit
    const Status s = check_mla_for_device(c.card, Device::cuda(0));
    ASSERT_FALSE(s.ok()) << c.key;
    EXPECT_HAS(s.error().message(), c.what);
    EXPECT_HAS(s.error().message(), "big.yaml: key '" + c.key + "'");
    // Model build on that backend fails before allocating anything.
    auto m = DecoderLM::create(c.card, Device::cuda(0), 1);
    ASSERT_FALSE(m.ok()) << c.key;
    EXPECT_HAS(m.error().message(), c.what);
  }
  // The limits themselves pass: 256-wide heads, DeepSeek-V3's 512 + 64 cache rows.
  EXPECT_TRUE(check_mla_for_device(mla_card(512, 192, 64, 256), Device::cuda(0)).ok());
  EXPECT_TRUE(check_mla_for_device(builtin("tiny"), Device::cuda(0)).ok());  // not MLA
}

// ---- deepseek_v3 / deepseek_v2 configs through the HF loader -------------------------
std::string fixture_dir(const std::string& name) {
  return (fs::path(EL_TEST_DATA_DIR) / "mla" / name).string();
}

TEST(MlaHfImport, FixturesLoadThroughTheHfLoader) {
  NoGrad no_grad;
  for (const std::string name : {"mla_q_lora", "mla_no_q_lora"}) {
    auto loaded = load_hf_model(fixture_dir(name), Device::cpu(), DType::f32);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message();
    const ModelCard& c = loaded.value().model->card();
    EXPECT_EQ(loaded.value().config.model_type, "deepseek_v3");
    EXPECT_EQ(c.attention, ModelCard::Attention::mla);
    EXPECT_EQ(c.kv_lora_rank, 16);
    auto ref = io::SafetensorsFile::open(fixture_dir(name) + "/reference.safetensors").value();
    const Tensor ids = ref.load("input_ids").value(), logits = ref.load("logits").value();
    EXPECT_TRUE(test::all_close(loaded.value().model->forward(ids).to_floats(),
                                test::to_doubles(logits), test::Tolerance{3e-5, 3e-5},
                                name + " logits through load_hf_model"));
  }
}

// A minimal dense DeepseekV3 config with `extra` keys replacing or adding fields.
std::string deepseek_json(const std::string& model_type, const std::string& extra) {
  return fmt::format(
      R"({{"model_type": "{}", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 96,
      "vocab_size": 128, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
      "v_head_dim": 16, "hidden_act": "silu"{}}})",
      model_type, extra);
}

TEST(MlaHfImport, DenseConfigsMapToMlaCards) {
  auto v3 = io::parse_hf_config(
      deepseek_json("deepseek_v3", R"(, "first_k_dense_replace": 2, "q_lora_rank": null)"),
      "config.json");
  ASSERT_TRUE(v3.ok()) << v3.error().message();
  const ModelCard& c = v3.value().card;
  EXPECT_EQ(c.attention, ModelCard::Attention::mla);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.n_kv_head, c.n_head);
  EXPECT_EQ(c.max_seq_len, 4096);  // DeepseekV3Config's default
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_TRUE(validate_model_card(c).ok());
  // V3's default first_k_dense_replace (3) covers these 2 layers.
  EXPECT_TRUE(io::parse_hf_config(deepseek_json("deepseek_v3", ""), "config.json").ok());
  // deepseek_v2: first_k_dense_replace defaults to 0 (every layer MoE), so it must be given.
  auto v2 = io::parse_hf_config(
      deepseek_json("deepseek_v2", R"(, "first_k_dense_replace": 3, "q_lora_rank": 32,
      "attention_bias": true)"),
      "config.json");
  ASSERT_TRUE(v2.ok()) << v2.error().message();
  EXPECT_EQ(v2.value().card.q_lora_rank, 32);
  EXPECT_TRUE(v2.value().card.qkv_bias && v2.value().card.o_bias);
  EXPECT_EQ(v2.value().card.max_seq_len, 2048);
}

TEST(MlaHfImport, UnsupportedConfigsNameTheKey) {
  struct Case {
    std::string model_type, extra, key, what;
  };
  const Case cases[] = {
      {"deepseek_v3", R"(, "first_k_dense_replace": 1)", "first_k_dense_replace",
       "first_k_dense_replace (1) is below num_hidden_layers (2): layers 1 to 1 use the "
       "mixture-of-experts MLP"},
      {"deepseek_v2", "", "first_k_dense_replace", "first_k_dense_replace (0, the default)"},
      {"deepseek_v3", R"(, "first_k_dense_replace": 2, "rope_interleave": false)",
       "rope_interleave", "rope_interleave false is not supported"},
      {"deepseek_v3", R"(, "first_k_dense_replace": 2, "qk_rope_head_dim": 7)",
       "qk_rope_head_dim", "qk_rope_head_dim (7) must be even"},
      {"deepseek_v3",
       R"(, "first_k_dense_replace": 2, "rope_scaling": {"type": "yarn", "factor": 40})",
       "rope_scaling.type", "rope type 'yarn'"},
  };
  for (const Case& c : cases) {
    auto r = io::parse_hf_config(deepseek_json(c.model_type, c.extra), "config.json");
    ASSERT_FALSE(r.ok()) << c.extra;
    EXPECT_HAS(r.error().message(), c.what);
    EXPECT_HAS(r.error().message(), "config.json: key '" + c.key + "'");
  }
  // The first error is the first layer that would be MoE, with the MoE keys named.
  auto r = io::parse_hf_config(deepseek_json("deepseek_v3", R"(, "first_k_dense_replace": 0)"),
                               "config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "n_routed_experts");
  EXPECT_HAS(r.error().message(), "layers 0 to 1");
}

}  // namespace
}  // namespace el
