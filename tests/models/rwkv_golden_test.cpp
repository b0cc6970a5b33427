// RWKV-4 against transformers' RwkvForCausalLM: the tiny random checkpoints
// of tools/make_rwkv_fixtures.py (tests/fixtures/rwkv/<name>/, written by
// save_pretrained) loaded through the normal loader (load_hf_model:
// config.json -> card, RwkvForCausalLM names -> DecoderLM's), compared with
// transformers' eval() outputs for the same ids: logits in f32 and bf16, the
// loss, the cached forward (prefill, then decode steps), the recurrent state
// after a prefill, and greedy generation of two prompts of different lengths
// in one right-padded batch. rwkv_rescale covers rescale_every (run as
// LayerNorm eps, nn/rwkv.h), a layer_norm_epsilon other than ln_out's 1e-5
// and tied embeddings; rwkv_attn16 an attention_hidden_size below hidden_size.
// Also: checkpoints whose tensors do not match the config are refused with
// the tensor named.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "autograd/tape.h"
#include "common/cached_forward.h"
#include "common/hf_golden_util.h"
#include "common/hf_test_util.h"
#include "common/ops_harness.h"
#include "infer/generator.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/hf_model.h"
#include "nn/kv_cache.h"

namespace el {
namespace {

namespace fs = std::filesystem;

std::string fixture_dir(const std::string& name) {
  return hftest::family_fixture_dir("rwkv", name);
}

io::SafetensorsFile reference(const std::string& name) {
  return hftest::open_reference(fixture_dir(name));
}

std::unique_ptr<DecoderLM> load(const std::string& name, DType dtype) {
  return hftest::load_golden(fixture_dir(name), dtype, "rwkv");
}

// f32: the same f32 weights and arithmetic order on both sides (the WKV in
// transformers' stable form); what differs is exp/log and the GEMMs'
// summation order, ~1e-6 relative per op over two to four layers.
constexpr test::Tolerance kF32Tol{5e-5, 5e-5};
// bf16: both sides round activations to bf16 after each op, but at
// different points (transformers keeps the WKV state in f32 and rounds its
// output, the receptance gate and each mix separately), so the two bf16
// runs differ by about as much as each differs from f32 (up to 0.18 on
// rwkv_rescale's logits of up to 19). Our bf16 logits must stay within
// kBf16NoiseFactor times transformers' own largest bf16 error of the f32
// logits (plus kBf16Floor).
constexpr double kBf16NoiseFactor = 2.0;
constexpr double kBf16Floor = 1e-2;
// Our cached bf16 forward against our full bf16 forward: the same rounding
// points, GEMMs of other shapes; a few bf16 ulps.
constexpr test::Tolerance kBf16Tol{0.06, 0.02};
// The loss is one mean of 16 cross-entropies of f32 logits.
constexpr double kLossTol = 1e-5;

const std::vector<std::string> kAll = {"rwkv_tiny", "rwkv_rescale", "rwkv_attn16"};
// transformers' cached forward needs attention_hidden_size == hidden_size.
const std::vector<std::string> kCached = {"rwkv_tiny", "rwkv_rescale"};

class RwkvGolden : public ::testing::TestWithParam<std::string> {};
class RwkvGoldenCached : public ::testing::TestWithParam<std::string> {};

TEST(RwkvGoldenCard, CardsFollowTheConfigs) {
  auto tiny = load("rwkv_tiny", DType::f32);
  ASSERT_TRUE(tiny);
  const ModelCard& t = tiny->card();
  EXPECT_EQ(t.block, ModelCard::Block::rwkv);
  EXPECT_EQ(t.d_model, 32);
  EXPECT_EQ(t.d_ff, 128);                         // intermediate_size default 4 C
  EXPECT_EQ(t.rwkv_attention_hidden_size, 0);     // = hidden_size
  EXPECT_EQ(t.rwkv_rescale_every, 6);             // the config's default
  EXPECT_EQ(t.norm, ModelCard::Norm::layernorm);
  EXPECT_EQ(t.pos_encoding, ModelCard::PosEncoding::none);
  EXPECT_FALSE(t.tied_embeddings);
  auto rescale = load("rwkv_rescale", DType::f32);
  ASSERT_TRUE(rescale);
  EXPECT_EQ(rescale->card().rwkv_rescale_every, 2);
  EXPECT_FLOAT_EQ(rescale->card().norm_eps, 1e-4f);
  EXPECT_TRUE(rescale->card().tied_embeddings);
  auto a16 = load("rwkv_attn16", DType::f32);
  ASSERT_TRUE(a16);
  EXPECT_EQ(a16->card().rwkv_attention_hidden_size, 16);
  EXPECT_EQ(a16->card().d_ff, 56);
  for (const auto* m : {tiny.get(), rescale.get(), a16.get()}) {
    EXPECT_EQ(m->num_parameters(), count_parameters(m->card()).total) << m->card().name;
  }
}

TEST_P(RwkvGolden, LogitsMatchTransformersF32) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  auto model = load(GetParam(), DType::f32);
  ASSERT_TRUE(model);
  EXPECT_TRUE(test::all_close(model->forward(ref.load("input_ids").value()).to_floats(),
                              test::to_doubles(ref.load("logits").value()), kF32Tol,
                              GetParam() + " f32 logits"));
}

TEST_P(RwkvGolden, LogitsMatchTransformersBf16) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  auto model = load(GetParam(), DType::bf16);
  ASSERT_TRUE(model);
  const std::vector<double> f32 = test::to_doubles(ref.load("logits").value());
  const std::vector<double> bf16 = test::to_doubles(ref.load("logits_bf16").value());
  double noise = 0;
  for (size_t i = 0; i < f32.size(); ++i) noise = std::max(noise, std::abs(bf16[i] - f32[i]));
  EXPECT_TRUE(test::all_close(model->forward(ref.load("input_ids").value()).to_floats(), f32,
                              {kBf16NoiseFactor * noise + kBf16Floor, 0.0},
                              GetParam() + " bf16 logits"));
}

// transformers' labels=ids loss: token t predicts ids[t + 1], the last
// position has no target.
TEST_P(RwkvGolden, LossMatchesTransformers) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  auto model = load(GetParam(), DType::f32);
  ASSERT_TRUE(model);
  const Tensor ids = ref.load("input_ids").value();
  const int64_t B = ids.dim(0), T = ids.dim(1);
  std::vector<int32_t> targets(static_cast<size_t>(B * T), -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) targets[b * T + t] = ids.data<int32_t>()[b * T + t + 1];
  const float loss = model->loss(ids, Tensor::from_ints(targets, {B, T})).item();
  EXPECT_NEAR(loss, ref.load("loss").value().item(), kLossTol);
}

// Prefill of 3 tokens, then decode steps, in f32 and bf16 (an f32 cache:
// RWKV's state is f32 anyway, its shift rows hold bf16 values exactly), each step against the full-sequence logits: transformers'
// in f32, our own full forward in bf16.
TEST_P(RwkvGolden, CachedForwardMatchesTransformers) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  const Tensor ids_t = ref.load("input_ids").value();
  for (const DType dt : {DType::f32, DType::bf16}) {
    auto model = load(GetParam(), dt);
    ASSERT_TRUE(model);
    const Tensor full =
        dt == DType::f32 ? ref.load("logits").value() : model->forward(ids_t);
    EXPECT_TRUE(test::cached_matches_full(*model, ids_t, test::to_doubles(full), 3,
                                          dt == DType::f32 ? kF32Tol : kBf16Tol,
                                          GetParam() + " cached " + dtype_name(dt)));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RwkvGolden, ::testing::ValuesIn(kAll),
                         [](const auto& info) { return info.param; });

// The state after the whole sequence: transformers' five [B, C, L] tensors
// (ffn shift, att shift, num, den, max) against the cache's per-layer ones.
TEST_P(RwkvGoldenCached, StateAfterPrefillMatchesTransformers) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  auto model = load(GetParam(), DType::f32);
  ASSERT_TRUE(model);
  const Tensor ids = ref.load("input_ids").value();
  const int64_t B = ids.dim(0), T = ids.dim(1), C = model->card().d_model;
  const int64_t L = model->card().n_layer;
  KvCache cache = KvCache::create(model->card(), B, T, DType::f32, Device::cpu()).value();
  model->forward_cached(ids, cache);
  struct Part {
    const char* name;
    const std::vector<Tensor>* ours;
    int row;  // -1: the [B, C] shift rows; else row of [B, 3, C]
  };
  const Part parts[] = {{"state_att_x", &cache.rwkv_att_shift, -1},
                        {"state_ffn_x", &cache.rwkv_ffn_shift, -1},
                        {"state_num", &cache.rwkv_wkv, 0},
                        {"state_den", &cache.rwkv_wkv, 1},
                        {"state_max", &cache.rwkv_wkv, 2}};
  for (const Part& p : parts) {
    const std::vector<double> theirs = test::to_doubles(ref.load(p.name).value());  // [B, C, L]
    std::vector<float> got;
    std::vector<double> want;
    for (int64_t l = 0; l < L; ++l) {
      const std::vector<float> ours = (*p.ours)[static_cast<size_t>(l)].to_floats();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c) {
          got.push_back(p.row < 0 ? ours[b * C + c] : ours[(b * 3 + p.row) * C + c]);
          want.push_back(theirs[(b * C + c) * L + l]);
        }
    }
    // num and den carry e^(k - max) factors: relative agreement.
    EXPECT_TRUE(test::all_close(got, want, {5e-5, 1e-4}, GetParam() + " " + p.name));
  }
}

// Two prompts of 5 and 3 tokens in one right-padded batch: each row's
// greedy continuation equals transformers' for that prompt alone.
TEST_P(RwkvGoldenCached, GreedyGenerationMatchesTransformers) {
  auto ref = reference(GetParam());
  auto model = load(GetParam(), DType::f32);
  ASSERT_TRUE(model);
  auto ints = [&](const char* key) {
    const Tensor t = ref.load(key).value();
    return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  };
  infer::GenerationConfig g;
  g.max_new_tokens = 6;
  g.ignore_stop = true;
  auto out = infer::generate(*model, {ints("prompt_a"), ints("prompt_b")}, g);
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(out->requests[0].tokens, ints("gen_a"));
  EXPECT_EQ(out->requests[1].tokens, ints("gen_b"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RwkvGoldenCached, ::testing::ValuesIn(kCached),
                         [](const auto& info) { return info.param; });

class RwkvCheckpoint : public hftest::TempDirTest {
 protected:
  // A copy of fixture tests/fixtures/rwkv/<name> with config.json edited.
  std::string copy(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    return copy_with_config(fixture_dir(name), edit);
  }
  std::string load_error(const std::string& dir) {
    auto r = load_hf_model(dir, Device::cpu());
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message();
  }
};

TEST_F(RwkvCheckpoint, TensorsThatDoNotMatchTheConfigAreNamed) {
  const std::string wide =
      copy("rwkv_tiny", [](nlohmann::json& j) { j["intermediate_size"] = 64; });
  std::string e = load_error(wide);
  EXPECT_HAS(e, "tensor 'rwkv.blocks.0.feed_forward.key.weight'");
  EXPECT_HAS(e, "expected [64, 32] from config.json, found [128, 32]");
  const std::string narrow =
      copy("rwkv_tiny", [](nlohmann::json& j) { j["attention_hidden_size"] = 16; });
  EXPECT_HAS(load_error(narrow), "tensor 'rwkv.blocks.0.attention.time_decay'");
  const std::string deep = copy("rwkv_tiny", [](nlohmann::json& j) { j["num_hidden_layers"] = 3; });
  EXPECT_HAS(load_error(deep), "tensor 'rwkv.blocks.2.ln1.weight' is missing");
  const std::string shallow =
      copy("rwkv_rescale", [](nlohmann::json& j) { j["num_hidden_layers"] = 3; });
  e = load_error(shallow);
  EXPECT_HAS(e, "unexpected tensor 'rwkv.blocks.3.");
  EXPECT_HAS(e, "the rwkv model has no such parameter");
  // Untied config over a tied checkpoint: the head is missing.
  const std::string untied =
      copy("rwkv_rescale", [](nlohmann::json& j) { j["tie_word_embeddings"] = false; });
  EXPECT_HAS(load_error(untied), "tensor 'head.weight' is missing");
}

TEST_F(RwkvCheckpoint, ConfigValuesAreChecked) {
  const std::string bad = copy("rwkv_tiny", [](nlohmann::json& j) { j["hidden_size"] = -4; });
  EXPECT_HAS(load_error(bad), "key 'hidden_size'");
  const std::string ctx = copy("rwkv_tiny", [](nlohmann::json& j) { j["context_length"] = "x"; });
  EXPECT_HAS(load_error(ctx), "key 'context_length'");
  const std::pair<std::function<void(nlohmann::json&)>, const char*> sizes[] = {
      {[](nlohmann::json& j) { j["attention_hidden_size"] = 0; }, "key 'attention_hidden_size'"},
      {[](nlohmann::json& j) { j["intermediate_size"] = 0; }, "key 'intermediate_size'"},
      {[](nlohmann::json& j) { j["vocab_size"] = 0; }, "key 'vocab_size'"},
      {[](nlohmann::json& j) { j["layer_norm_epsilon"] = 0; }, "key 'layer_norm_epsilon'"},
      {[](nlohmann::json& j) {
         j["hidden_size"] = 600000000;
         j.erase("intermediate_size");
       },
       "key 'hidden_size': hidden_size 600000000 makes the default intermediate_size"},
      {[](nlohmann::json& j) { j["num_hidden_layers"] = 2000000000; },
       "key 'num_hidden_layers': num_hidden_layers 2000000000 exceeds the"},
  };
  for (const auto& [edit, what] : sizes) EXPECT_HAS(load_error(copy("rwkv_tiny", edit)), what);
  // rescale_every <= 0 means none, as in transformers.
  const std::string none = copy("rwkv_tiny", [](nlohmann::json& j) { j["rescale_every"] = -1; });
  auto ok = load_hf_model(none, Device::cpu());
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->model->card().rwkv_rescale_every, 0);
  // The tensor list of model info --hf.
  const auto specs = hf_checkpoint_tensor_specs(ok->model->card(), "rwkv");
  EXPECT_EQ(specs.front().name, "rwkv.embeddings.weight");
  EXPECT_EQ(specs.back().name, "head.weight");
  EXPECT_EQ(specs[1].name, "rwkv.blocks.0.pre_ln.weight");
  // An RWKV card is written as an RwkvConfig (hf_export_test.cpp), as no other family.
  io::HfConfigExport llama;
  llama.model_type = "llama";
  EXPECT_HAS(io::hf_config_json(ok->model->card(), llama).error().message(), "key 'block'");
}

}  // namespace
}  // namespace el
