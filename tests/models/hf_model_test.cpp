// Tests of DecoderLM <-> Hugging Face directories (models/hf_model.h) against
// transformers itself: the fixtures under tests/fixtures/hf (written by
// tools/make_hf_fixtures.py) hold tiny random Llama / Qwen2 / Mistral models
// and transformers' logits and RoPE frequencies for fixed ids. Our forward
// must match (f32 tightly, bf16 within its rounding), a save -> load round
// trip must give the same logits, and broken checkpoints must fail with the
// tensor, shapes and file named.
//
// Set EL_HF_EXPORT_DIR=/some/dir to keep our exports of every fixture there,
// then check them with transformers:
//   tools/make_hf_fixtures.py --check-export /some/dir/llama_gqa
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/hf_test_util.h"
#include "models/hf_model.h"
#include "nn/rope_scaling.h"

namespace el {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string> kF32Fixtures = {"llama_gqa", "llama_tied", "llama_bias", "qwen2",
                                               "mistral"};

struct Reference {
  Tensor input_ids;    // [B, T] i32
  Tensor logits;       // [B, T, V] f32
  Tensor logits_bf16;  // bf16 fixtures only
  std::vector<float> inv_freq;
};

Reference reference(const std::string& name) {
  auto f = io::SafetensorsFile::open(hftest::fixture_dir(name) + "/reference.safetensors");
  EXPECT_TRUE(f.ok()) << (f.ok() ? "" : f.error().message());
  Reference r;
  r.input_ids = f->load("input_ids").value();
  r.logits = f->load("logits").value();
  if (f->contains("logits_bf16")) r.logits_bf16 = f->load("logits_bf16").value();
  r.inv_freq = f->load("inv_freq")->to_floats();
  return r;
}

// max |a - b| and max |b|.
std::pair<float, float> max_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_floats(), y = b.to_floats();
  EXPECT_EQ(x.size(), y.size());
  float d = 0, m = 0;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    d = std::max(d, std::abs(x[i] - y[i]));
    m = std::max(m, std::abs(y[i]));
  }
  return {d, m};
}

HfModel load(const std::string& dir, DType dtype = DType::f32) {
  auto r = load_hf_model(dir, Device::cpu(), dtype);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? std::move(r).value() : HfModel{};
}

std::string load_error(const std::string& dir) {
  auto r = load_hf_model(dir, Device::cpu());
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message();
}

class HfModelTest : public hftest::TempDirTest {};

TEST(HfModel, LogitsMatchTransformersInF32) {
  for (const auto& name : kF32Fixtures) {
    SCOPED_TRACE(name);
    const Reference ref = reference(name);
    const HfModel hf = load(hftest::fixture_dir(name));
    ASSERT_TRUE(hf.model);
    const auto [diff, scale] = max_diff(hf.model->forward(ref.input_ids), ref.logits);
    EXPECT_GT(scale, 0.5f);  // the fixtures' logits are O(1), not a near-zero model
    EXPECT_LE(diff, 2e-5f * std::max(1.0f, scale)) << "max |logit| " << scale;
  }
}

TEST(HfModel, RopeFrequenciesMatchTransformersBitForBit) {
  // llama_gqa / llama_tied: llama3 scaling (one frequency in the smoothed
  // band); mistral: linear; the others plain.
  for (const std::string name : {"llama_gqa", "llama_tied", "llama_bias", "qwen2", "mistral"}) {
    SCOPED_TRACE(name);
    auto cfg = io::load_hf_config(hftest::fixture_dir(name) + "/config.json");
    ASSERT_TRUE(cfg.ok()) << cfg.error().message();
    EXPECT_EQ(rope_inv_freq_values(cfg->card), reference(name).inv_freq);
  }
}

TEST(HfModel, Llama3ScalingCoversEveryBand) {
  // Llama 3.1's own numbers (theta 500000, D 128, factor 8, original 8192):
  // the highest frequencies are kept, the lowest divided by 8, and the
  // middle band interpolated strictly between the two.
  ModelCard c;
  c.name = "llama3";
  c.n_layer = c.n_head = c.n_kv_head = 1;
  c.d_model = 128;
  c.d_ff = c.vocab_size = c.max_seq_len = 8;
  c.rope_theta = 500000.0f;
  const std::vector<float> plain = rope_inv_freq_values(c);
  c.rope_scaling = ModelCard::RopeScaling::llama3;
  c.rope_scaling_factor = 8.0f;
  c.rope_low_freq_factor = 1.0f;
  c.rope_high_freq_factor = 4.0f;
  c.rope_original_max_seq_len = 8192;
  const std::vector<float> scaled = rope_inv_freq_values(c);
  ASSERT_EQ(scaled.size(), 64u);
  int kept = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < scaled.size(); ++i) {
    if (scaled[i] == plain[i]) {
      ++kept;
    } else if (scaled[i] == plain[i] / 8.0f) {
      ++divided;
    } else {
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8.0f);
      ++smoothed;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
  c.rope_scaling = ModelCard::RopeScaling::linear;
  c.rope_low_freq_factor = c.rope_high_freq_factor = 0.0f;
  c.rope_original_max_seq_len = 0;
  const std::vector<float> linear = rope_inv_freq_values(c);
  for (size_t i = 0; i < linear.size(); ++i) EXPECT_EQ(linear[i], plain[i] / 8.0f);
}

TEST(HfModel, Bf16Checkpoint) {
  const Reference ref = reference("llama_tied_bf16");
  ASSERT_TRUE(ref.logits_bf16.defined());
  const std::string dir = hftest::fixture_dir("llama_tied_bf16");
  // Into f32 parameters: bf16 -> f32 is exact, so f32 tolerance.
  const HfModel f32 = load(dir, DType::f32);
  EXPECT_EQ(f32.config.torch_dtype, "bfloat16");
  auto [d32, s32] = max_diff(f32.model->forward(ref.input_ids), ref.logits);
  EXPECT_LE(d32, 2e-5f * std::max(1.0f, s32));
  // bf16 parameters and activations against transformers' bf16 forward: both
  // round at every step (8 bits of mantissa), so compare at bf16's scale.
  const HfModel bf = load(dir, DType::bf16);
  EXPECT_EQ(bf.model->param_dtype(), DType::bf16);
  const Tensor logits = bf.model->forward(ref.input_ids);
  auto [db, sb] = max_diff(logits, ref.logits_bf16);
  EXPECT_LE(db, 0.05f * std::max(1.0f, sb)) << "max |logit| " << sb;
  // And the bf16 model is close to the exact f32 result too.
  auto [dx, sx] = max_diff(logits, ref.logits);
  EXPECT_LE(dx, 0.05f * std::max(1.0f, sx));
}

TEST(HfModel, F32CheckpointIntoBf16Parameters) {
  const Reference ref = reference("qwen2");
  const HfModel bf = load(hftest::fixture_dir("qwen2"), DType::bf16);
  auto [d, s] = max_diff(bf.model->forward(ref.input_ids), ref.logits);
  EXPECT_LE(d, 0.05f * std::max(1.0f, s));
}

TEST(HfModel, SpecsMatchTheBuiltModel) {
  for (const std::string name : {"llama_gqa", "llama_tied", "llama_bias", "qwen2", "mistral"}) {
    ModelCard card = io::load_hf_config(hftest::fixture_dir(name) + "/config.json")->card;
    for (int variant = 0; variant < 2; ++variant) {
      if (variant == 1) {  // the card options no HF family uses
        card.norm = ModelCard::Norm::layernorm;
        card.mlp = ModelCard::Mlp::gelu;
      }
      auto model = DecoderLM::create(card, Device::cpu(), 1).value();
      const auto specs = decoder_lm_tensor_specs(card);
      const auto actual = io::hf_tensor_specs(model->parameters());
      ASSERT_EQ(specs.size(), actual.size()) << name;
      for (size_t i = 0; i < specs.size(); ++i) {
        EXPECT_EQ(specs[i].name, actual[i].name);
        EXPECT_EQ(specs[i].shape, actual[i].shape) << specs[i].name;
      }
      EXPECT_EQ(model->num_parameters(), count_parameters(card).total) << name;
    }
  }
}

TEST(HfModel, LoadingKeepsStackedProjections) {
  // q/k/v (and gate/up) stay row blocks of one buffer after loading, so the
  // one-GEMM path still runs.
  const HfModel hf = load(hftest::fixture_dir("llama_gqa"));
  const ParameterList& p = hf.model->parameters();
  auto find = [&](const std::string& n) {
    for (const auto& x : p)
      if (x.name == n) return x.tensor;
    ADD_FAILURE() << n;
    return Tensor();
  };
  const Tensor q = find("model.layers.1.self_attn.q_proj.weight");
  const Tensor v = find("model.layers.1.self_attn.v_proj.weight");
  const Tensor gate = find("model.layers.0.mlp.gate_proj.weight");
  const Tensor up = find("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(q.impl()->storage, v.impl()->storage);
  EXPECT_EQ(gate.impl()->storage, up.impl()->storage);
}

TEST(HfModel, PublishedParameterCounts) {
  // Cards mapped from published config.json files give the parameter counts
  // the model pages state.
  struct Case {
    const char* config;
    int64_t params;
  };
  const Case cases[] = {
      {R"({"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
           "vocab_size": 128256, "tie_word_embeddings": true})", 1235814400},  // Llama-3.2-1B
      {R"({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
           "vocab_size": 128256})", 8030261248},  // Llama-3.1-8B
      {R"({"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
           "vocab_size": 152064})", 7615616512},  // Qwen2.5-7B
      {R"({"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
           "vocab_size": 32000, "sliding_window": 4096})", 7241732096},  // Mistral-7B
  };
  for (const auto& c : cases) {
    auto h = io::parse_hf_config(c.config, "config.json");
    ASSERT_TRUE(h.ok()) << h.error().message();
    EXPECT_TRUE(validate_model_card(h->card).ok());
    EXPECT_EQ(count_parameters(h->card).total, c.params) << c.config;
  }
}

TEST_F(HfModelTest, SaveLoadRoundTripGivesTheSameLogits) {
  const char* keep = std::getenv("EL_HF_EXPORT_DIR");
  for (const std::string name : {"llama_gqa", "llama_tied", "llama_tied_bf16", "llama_bias",
                                 "qwen2", "mistral"}) {
    SCOPED_TRACE(name);
    const Reference ref = reference(name);
    const bool bf16 = name == "llama_tied_bf16";
    const HfModel a = load(hftest::fixture_dir(name), bf16 ? DType::bf16 : DType::f32);
    io::HfSaveOptions opt;
    opt.model_type = a.config.model_type;
    opt.passthrough = a.config.passthrough;
    if (name == "llama_gqa") opt.max_shard_bytes = 64 * 1024;  // sharded with an index
    const std::string out = keep && *keep ? (fs::path(keep) / name).string() : path(name);
    ASSERT_TRUE(save_hf_model(*a.model, out, opt).ok());
    EXPECT_EQ(fs::exists(fs::path(out) / "model.safetensors.index.json"), name == "llama_gqa");

    const HfModel b = load(out, bf16 ? DType::bf16 : DType::f32);
    ASSERT_TRUE(b.model);
    EXPECT_EQ(b.config.card.name, name);
    EXPECT_EQ(b.config.model_type, a.config.model_type);
    EXPECT_EQ(b.config.torch_dtype, bf16 ? "bfloat16" : "float32");
    EXPECT_EQ(b.config.passthrough, a.config.passthrough);
    ModelCard ca = a.config.card, cb = b.config.card;
    ca.name = cb.name = "";
    ca.source_path = cb.source_path = "";
    ca.init_std = cb.init_std;  // not part of a checkpoint's function
    EXPECT_EQ(ca, cb);
    const auto& pa = a.model->parameters();
    const auto& pb = b.model->parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_EQ(pa[i].tensor.to_floats(), pb[i].tensor.to_floats()) << pa[i].name;
    }
    const Tensor la = a.model->forward(ref.input_ids), lb = b.model->forward(ref.input_ids);
    EXPECT_EQ(la.to_floats(), lb.to_floats());
  }
}

TEST_F(HfModelTest, TensorsThatDoNotMatchTheConfig) {
  const std::string dir = copy_fixture("llama_gqa");
  const fs::path cfg = fs::path(dir) / "config.json";
  json j = json::parse(hftest::read_text(cfg));
  j["intermediate_size"] = 80;  // the tensors are 96 wide
  hftest::write_text(cfg, j.dump());
  std::string e = load_error(dir);
  EXPECT_HAS(e, "tensor 'model.layers.0.mlp.");
  EXPECT_HAS(e, "shape mismatch: expected [");
  EXPECT_HAS(e, "from config.json, found [");
  EXPECT_HAS(e, "96");
  EXPECT_HAS(e, dir + "/model-0000");
  EXPECT_HAS(e, "more problem(s)");
  j["intermediate_size"] = 96;
  j["num_key_value_heads"] = 4;  // k/v are [32, 64] in the files, not [64, 64]
  hftest::write_text(cfg, j.dump());
  e = load_error(dir);
  EXPECT_HAS(e, "tensor 'model.layers.0.self_attn.k_proj.weight'");
  EXPECT_HAS(e, "expected [64, 64] from config.json, found [32, 64]");
  j["num_key_value_heads"] = 2;
  j["num_hidden_layers"] = 3;  // no layer 2 in the files
  hftest::write_text(cfg, j.dump());
  EXPECT_HAS(load_error(dir), "tensor 'model.layers.2.input_layernorm.weight' is missing");
  j["num_hidden_layers"] = 1;  // layer 1's tensors are unknown
  hftest::write_text(cfg, j.dump());
  EXPECT_HAS(load_error(dir), "unexpected tensor 'model.layers.1.");
  io::HfLoadOptions allow;
  allow.allow_unknown_tensors = true;
  EXPECT_TRUE(load_hf_model(dir, Device::cpu(), DType::f32, allow).ok());
}

TEST_F(HfModelTest, MissingShard) {
  const std::string dir = copy_fixture("llama_gqa");
  fs::remove(fs::path(dir) / "model-00003-of-00004.safetensors");
  const std::string e = load_error(dir);
  EXPECT_HAS(e, dir + "/model.safetensors.index.json");
  EXPECT_HAS(e, "shard 'model-00003-of-00004.safetensors' is missing");
}

TEST_F(HfModelTest, SlidingWindowLimitsTheSequenceLength) {
  const HfModel hf = load(hftest::fixture_dir("mistral"));
  const ModelCard& c = hf.config.card;
  EXPECT_EQ(c.sliding_window, 16);
  EXPECT_TRUE(check_sequence_length(c, 16).ok());
  const Status st = check_sequence_length(c, 17);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "config.json: key 'sliding_window'");
  EXPECT_HAS(st.error().message(), "seq_len 17 exceeds sliding_window 16");
  EXPECT_THROW(hf.model->forward(Tensor::from_ints(std::vector<int32_t>(17, 1), {1, 17})),
               Exception);
}

}  // namespace
}  // namespace el
