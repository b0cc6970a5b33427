// MLA against transformers' DeepseekV3: the tiny random checkpoints of
// tools/make_mla_fixtures.py (tests/fixtures/mla/<name>/) loaded by name into
// our DecoderLM (attention: mla), logits compared with transformers' for the
// same ids, in f32 and bf16, and through the absorbed cached forward.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "io/safetensors.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"

namespace el {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name, const std::string& file) {
  return (fs::path(EL_TEST_DATA_DIR) / "mla" / name / file).string();
}

// The card of a DeepseekV3 config.json with dense MLPs (what the fixtures use).
ModelCard card_from_config(const std::string& path) {
  std::ifstream in(path);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("model_type"), "deepseek_v3");
  EXPECT_EQ(j.at("first_k_dense_replace"), j.at("num_hidden_layers"));  // no MoE layer
  EXPECT_TRUE(j.at("rope_interleave").get<bool>());
  EXPECT_EQ(j.at("rope_parameters").at("rope_type"), "default");
  ModelCard c;
  c.name = "deepseek_v3_tiny";
  c.n_layer = j.at("num_hidden_layers");
  c.d_model = j.at("hidden_size");
  c.n_head = j.at("num_attention_heads");
  c.n_kv_head = j.at("num_key_value_heads");
  c.d_ff = j.at("intermediate_size");
  c.vocab_size = j.at("vocab_size");
  c.max_seq_len = j.at("max_position_embeddings");
  c.norm_eps = j.at("rms_norm_eps");
  c.rope_theta = j.at("rope_parameters").at("rope_theta");
  c.tied_embeddings = j.at("tie_word_embeddings");
  c.qkv_bias = c.o_bias = j.at("attention_bias");
  c.attention = ModelCard::Attention::mla;
  c.q_lora_rank = j.at("q_lora_rank").is_null() ? 0 : j.at("q_lora_rank").get<int>();
  c.kv_lora_rank = j.at("kv_lora_rank");
  c.qk_nope_head_dim = j.at("qk_nope_head_dim");
  c.qk_rope_head_dim = j.at("qk_rope_head_dim");
  c.v_head_dim = j.at("v_head_dim");
  return c;
}

std::unique_ptr<DecoderLM> load(const std::string& name, DType dtype) {
  const ModelCard card = card_from_config(fixture(name, "config.json"));
  EXPECT_TRUE(validate_model_card(card).ok());
  auto model = DecoderLM::create(card, Device::cpu(), 0, dtype, /*init_weights=*/false).value();
  auto file = io::SafetensorsFile::open(fixture(name, "model.safetensors")).value();
  EXPECT_EQ(file.names().size(), model->parameters().size());  // every tensor, no more
  for (const auto& p : model->parameters()) {
    Tensor t = p.tensor;
    const Status s = file.load_into(p.name, t);
    EXPECT_TRUE(s.ok()) << s.error().message();
  }
  return model;
}

struct Reference {
  Tensor ids, logits, logits_bf16;
};

Reference reference(const std::string& name) {
  auto f = io::SafetensorsFile::open(fixture(name, "reference.safetensors")).value();
  return {f.load("input_ids").value(), f.load("logits").value(), f.load("logits_bf16").value()};
}

std::vector<double> doubles(const Tensor& t) {
  return test::to_doubles(t);
}

// f32: the same bf16 weights in f32 arithmetic on both sides; logits are
// O(10), sums of O(100) terms, so ~1e-5 relative.
constexpr test::Tolerance kF32Tol{3e-5, 3e-5};
// bf16: both sides round activations to bf16 after each op, in different
// orders; a few bf16 ulps (2^-8) of logits up to ~20.
constexpr test::Tolerance kBf16Tol{0.12, 0.02};

class MlaGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(MlaGolden, LogitsMatchTransformersF32) {
  NoGrad no_grad;
  const Reference ref = reference(GetParam());
  auto model = load(GetParam(), DType::f32);
  EXPECT_TRUE(test::all_close(model->forward(ref.ids).to_floats(), doubles(ref.logits), kF32Tol,
                              GetParam() + " f32 logits"));
}

TEST_P(MlaGolden, LogitsMatchTransformersBf16) {
  NoGrad no_grad;
  const Reference ref = reference(GetParam());
  auto model = load(GetParam(), DType::bf16);
  EXPECT_TRUE(test::all_close(model->forward(ref.ids).to_floats(), doubles(ref.logits_bf16),
                              kBf16Tol, GetParam() + " bf16 logits"));
}

// Prefill of 4 tokens from position 0 (training-form attention), then decode
// steps through the absorbed form, in f32 and in bf16 (cache in the model's dtype).
TEST_P(MlaGolden, CachedForwardMatchesTransformers) {
  NoGrad no_grad;
  const Reference ref = reference(GetParam());
  for (const DType dt : {DType::f32, DType::bf16}) {
    auto model = load(GetParam(), dt);
    const int64_t B = ref.ids.dim(0), T = ref.ids.dim(1), V = ref.logits.dim(2);
    KvCache cache = KvCache::create(model->card(), B, T, dt, Device::cpu()).value();
    const std::vector<float> ids = ref.ids.to_floats();
    const std::vector<double> want = doubles(dt == DType::f32 ? ref.logits : ref.logits_bf16);
    const int64_t prefill = 4;
    for (int64_t t0 = 0; t0 < T;) {
      const int64_t t1 = t0 == 0 ? prefill : t0 + 1;
      std::vector<int32_t> step;
      std::vector<double> expect;
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = t0; t < t1; ++t) {
          step.push_back(static_cast<int32_t>(ids[b * T + t]));
          expect.insert(expect.end(), want.begin() + (b * T + t) * V,
                        want.begin() + (b * T + t + 1) * V);
        }
      }
      const Tensor logits = model->forward_cached(Tensor::from_ints(step, {B, t1 - t0}), cache);
      cache.advance(static_cast<int32_t>(t1 - t0));
      EXPECT_TRUE(test::all_close(
          logits.to_floats(), expect, dt == DType::f32 ? kF32Tol : kBf16Tol,
          GetParam() + " cached " + dtype_name(dt) + ", tokens from " + std::to_string(t0)));
      t0 = t1;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MlaGolden, ::testing::Values("mla_q_lora", "mla_no_q_lora"));

}  // namespace
}  // namespace el
