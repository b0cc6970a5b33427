// Mamba-1 against transformers' MambaForCausalLM (slow path): the tiny random
// checkpoints of tools/make_mamba_fixtures.py (tests/fixtures/mamba/<name>/,
// written by save_pretrained) loaded through the normal loader
// (load_hf_model: config.json -> card, MambaForCausalLM names -> DecoderLM's),
// compared with transformers' outputs for the same ids: logits in f32 and
// bf16, the loss and its gradients (layer 0, embeddings, norm_f), the cached
// forward (prefill, decode steps), greedy generation of two prompts of
// different lengths in one right-padded batch, and save -> load. mamba_bias
// covers use_bias, no conv bias, an explicit time_step_rank, untied
// embeddings and another layer_norm_epsilon. Also: checkpoints whose tensors
// do not match the config are refused with the tensor named, and config
// values out of range with the key named.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "autograd/tape.h"
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
  return hftest::family_fixture_dir("mamba", name);
}

io::SafetensorsFile reference(const std::string& name) {
  return hftest::open_reference(fixture_dir(name));
}

std::unique_ptr<DecoderLM> load(const std::string& dir, DType dtype) {
  return hftest::load_golden(dir, dtype, "mamba");
}

// f32: the same arithmetic on both sides (the sequential scan); exp, the
// softplus and the GEMMs' summation order differ, ~1e-6 relative per op.
constexpr test::Tolerance kF32Tol{5e-5, 5e-5};
// bf16: both sides round after each op, at different points (transformers
// keeps the residual in f32, residual_in_fp32, and the scan's state in f32,
// but rounds the x_proj / dt_proj outputs and the scan's input in bf16), so
// the two bf16 runs differ by about as much as each differs from f32. Ours
// must stay within kBf16NoiseFactor times transformers' own largest bf16
// error of the f32 logits (plus kBf16Floor).
constexpr double kBf16NoiseFactor = 2.0;
constexpr double kBf16Floor = 1e-2;
// The loss is one mean of 14 cross-entropies of f32 logits.
constexpr double kLossTol = 1e-5;
// Gradients: sums over 16 positions and 64-72 channels of f32 products, in
// other orders; relative to the largest entry of the tensor.
constexpr double kGradTol = 1e-4;
// Our cached bf16 forward against our full bf16 forward: the same rounding
// points, GEMMs of other shapes.
constexpr test::Tolerance kBf16CachedTol{0.06, 0.02};

const std::vector<std::string> kAll = {"mamba_tiny", "mamba_bias"};

class MambaGolden : public ::testing::TestWithParam<std::string> {};

TEST(MambaGoldenCard, CardsFollowTheConfigs) {
  auto tiny = load(fixture_dir("mamba_tiny"), DType::f32);
  ASSERT_TRUE(tiny);
  const ModelCard& t = tiny->card();
  EXPECT_EQ(t.block, ModelCard::Block::mamba);
  EXPECT_EQ(t.d_model, 32);
  EXPECT_EQ(t.mamba_d_state, 8);
  EXPECT_EQ(t.mamba_d_conv, 4);
  EXPECT_EQ(t.mamba_expand, 2);
  EXPECT_EQ(t.mamba_dt_rank, 0);  // time_step_rank 2 = ceil(32 / 16)
  EXPECT_TRUE(t.mamba_conv_bias);
  EXPECT_FALSE(t.mamba_proj_bias);
  EXPECT_TRUE(t.tied_embeddings);
  EXPECT_EQ(t.pos_encoding, ModelCard::PosEncoding::none);
  auto bias = load(fixture_dir("mamba_bias"), DType::f32);
  ASSERT_TRUE(bias);
  const ModelCard& b = bias->card();
  EXPECT_EQ(b.mamba_dt_rank, 4);
  EXPECT_EQ(b.mamba_expand, 3);
  EXPECT_FALSE(b.mamba_conv_bias);
  EXPECT_TRUE(b.mamba_proj_bias);
  EXPECT_FALSE(b.tied_embeddings);
  EXPECT_FLOAT_EQ(b.norm_eps, 1e-4f);
  for (const auto* m : {tiny.get(), bias.get()}) {
    EXPECT_EQ(m->num_parameters(), count_parameters(m->card()).total) << m->card().name;
  }
}

TEST_P(MambaGolden, LogitsMatchTransformersF32) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  auto model = load(fixture_dir(GetParam()), DType::f32);
  ASSERT_TRUE(model);
  EXPECT_TRUE(test::all_close(model->forward(ref.load("input_ids").value()).to_floats(),
                              test::to_doubles(ref.load("logits").value()), kF32Tol,
                              GetParam() + " f32 logits"));
}

TEST_P(MambaGolden, LogitsMatchTransformersBf16) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  auto model = load(fixture_dir(GetParam()), DType::bf16);
  ASSERT_TRUE(model);
  const std::vector<double> f32 = test::to_doubles(ref.load("logits").value());
  const std::vector<double> bf16 = test::to_doubles(ref.load("logits_bf16").value());
  double noise = 0;
  for (size_t i = 0; i < f32.size(); ++i) noise = std::max(noise, std::abs(bf16[i] - f32[i]));
  EXPECT_TRUE(test::all_close(model->forward(ref.load("input_ids").value()).to_floats(), f32,
                              {kBf16NoiseFactor * noise + kBf16Floor, 0.0},
                              GetParam() + " bf16 logits"));
}

// The checkpoint's name of one of our parameters (the fixture's grad.* keys).
std::string hf_name(const std::string& ours) {
  if (ours == "model.embed_tokens.weight") return "backbone.embeddings.weight";
  if (ours == "model.norm.weight") return "backbone.norm_f.weight";
  std::string s = ours;
  s.replace(0, std::string("model.").size(), "backbone.");
  const std::string norm = "input_layernorm.weight";
  if (s.size() > norm.size() && s.compare(s.size() - norm.size(), norm.size(), norm) == 0) {
    s.replace(s.size() - norm.size(), norm.size(), "norm.weight");
  }
  return s;
}

// transformers' labels=ids loss (token t predicts ids[t + 1]) and its
// gradients, against ours through the same DecoderLM::loss training uses.
TEST_P(MambaGolden, LossAndGradientsMatchTransformers) {
  auto ref = reference(GetParam());
  auto model = load(fixture_dir(GetParam()), DType::f32);
  ASSERT_TRUE(model);
  const Tensor ids = ref.load("input_ids").value();
  const int64_t B = ids.dim(0), T = ids.dim(1);
  std::vector<int32_t> targets(static_cast<size_t>(B * T), -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) targets[b * T + t] = ids.data<int32_t>()[b * T + t + 1];
  Tensor loss = model->loss(ids, Tensor::from_ints(targets, {B, T}));
  EXPECT_NEAR(loss.item(), ref.load("loss").value().item(), kLossTol);
  tape().backward(loss);
  int checked = 0;
  for (const auto& p : model->parameters()) {
    const std::string key = "grad." + hf_name(p.name);
    if (!ref.contains(key)) continue;
    const std::vector<double> want = test::to_doubles(ref.load(key).value());
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::abs(v));
    EXPECT_TRUE(test::all_close(p.tensor.grad().to_floats(), want, {kGradTol * scale, 0.0},
                                GetParam() + " " + key));
    ++checked;
  }
  // Layer 0's norm and mixer tensors (9 or 10 of them), the embeddings and norm_f.
  EXPECT_GE(checked, 11);
}

// Prefill of 3 tokens, then decode steps, in f32 and bf16 (states in f32),
// each step against the full-sequence logits: transformers' in f32, our own
// full forward in bf16.
TEST_P(MambaGolden, CachedForwardMatchesTransformers) {
  NoGrad no_grad;
  auto ref = reference(GetParam());
  const Tensor ids_t = ref.load("input_ids").value();
  for (const DType dt : {DType::f32, DType::bf16}) {
    auto model = load(fixture_dir(GetParam()), dt);
    ASSERT_TRUE(model);
    const Tensor full = dt == DType::f32 ? ref.load("logits").value() : model->forward(ids_t);
    const int64_t B = ids_t.dim(0), T = ids_t.dim(1), V = full.dim(2);
    KvCache cache = KvCache::create(model->card(), B, T, dt, Device::cpu()).value();
    const std::vector<double> want = test::to_doubles(full);
    for (int64_t t0 = 0; t0 < T;) {
      const int64_t t1 = t0 == 0 ? 3 : t0 + 1;
      std::vector<int32_t> step;
      std::vector<double> expect;
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = t0; t < t1; ++t) {
          step.push_back(ids_t.data<int32_t>()[b * T + t]);
          expect.insert(expect.end(), want.begin() + (b * T + t) * V,
                        want.begin() + (b * T + t + 1) * V);
        }
      }
      const Tensor logits = model->forward_cached(Tensor::from_ints(step, {B, t1 - t0}), cache);
      cache.advance(static_cast<int32_t>(t1 - t0));
      EXPECT_TRUE(test::all_close(logits.to_floats(), expect,
                                  dt == DType::f32 ? kF32Tol : kBf16CachedTol,
                                  GetParam() + " cached " + dtype_name(dt) + ", tokens from " +
                                      std::to_string(t0)));
      t0 = t1;
    }
  }
}

std::vector<int32_t> ints(const io::SafetensorsFile& ref, const char* key) {
  const Tensor t = ref.load(key).value();
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

// Two prompts of 5 and 3 tokens in one right-padded batch: each row's
// greedy continuation equals transformers' for that prompt alone.
TEST_P(MambaGolden, GreedyGenerationMatchesTransformers) {
  auto ref = reference(GetParam());
  auto model = load(fixture_dir(GetParam()), DType::f32);
  ASSERT_TRUE(model);
  infer::GenerationConfig g;
  g.max_new_tokens = 6;
  g.ignore_stop = true;
  auto out = infer::generate(*model, {ints(ref, "prompt_a"), ints(ref, "prompt_b")}, g);
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(out->requests[0].tokens, ints(ref, "gen_a"));
  EXPECT_EQ(out->requests[1].tokens, ints(ref, "gen_b"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MambaGolden, ::testing::ValuesIn(kAll),
                         [](const auto& info) { return info.param; });

class MambaCheckpoint : public hftest::TempDirTest {
 protected:
  // A copy of fixture tests/fixtures/mamba/<name> with config.json edited.
  std::string copy(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path dst = dir_ / name;
    fs::remove_all(dst);
    fs::copy(fixture_dir(name), dst, fs::copy_options::recursive);
    nlohmann::json j = nlohmann::json::parse(hftest::read_text(dst / "config.json"));
    edit(j);
    hftest::write_text(dst / "config.json", j.dump(1));
    return dst.string();
  }
  std::string load_error(const std::string& dir) {
    auto r = load_hf_model(dir, Device::cpu());
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message();
  }
};

// save_hf_model writes MambaForCausalLM's names and a MambaConfig that load
// back to the same card and the same logits.
TEST_F(MambaCheckpoint, SaveThenLoadGivesTheSameModel) {
  NoGrad no_grad;
  for (const std::string& name : kAll) {
    auto model = load(fixture_dir(name), DType::f32);
    ASSERT_TRUE(model);
    const std::string out = path(name + "_saved");
    const Status s = save_hf_model(*model, out);
    ASSERT_TRUE(s.ok()) << s.error().message();
    auto back = load(out, DType::f32);
    ASSERT_TRUE(back);
    ModelCard a = model->card(), b = back->card();
    a.source_path = b.source_path = "";
    a.name = b.name = "";
    EXPECT_EQ(a, b) << name;
    const Tensor ids = reference(name).load("input_ids").value();
    EXPECT_EQ(model->forward(ids).to_floats(), back->forward(ids).to_floats()) << name;
    const nlohmann::json j =
        nlohmann::json::parse(hftest::read_text(fs::path(out) / "config.json"));
    EXPECT_EQ(j["model_type"], "mamba");
    EXPECT_EQ(j["architectures"][0], "MambaForCausalLM");
    EXPECT_EQ(j["intermediate_size"], model->card().mamba_d_inner());
  }
}

TEST_F(MambaCheckpoint, TensorsThatDoNotMatchTheConfigAreNamed) {
  const std::string wide = copy("mamba_tiny", [](nlohmann::json& j) {
    j["state_size"] = 6;
  });
  std::string e = load_error(wide);
  EXPECT_HAS(e, "tensor 'backbone.layers.0.mixer.x_proj.weight'");
  EXPECT_HAS(e, "expected [14, 64] from config.json, found [18, 64]");
  const std::string conv = copy("mamba_tiny", [](nlohmann::json& j) { j["conv_kernel"] = 3; });
  EXPECT_HAS(load_error(conv), "tensor 'backbone.layers.0.mixer.conv1d.weight'");
  const std::string nobias =
      copy("mamba_bias", [](nlohmann::json& j) { j["use_conv_bias"] = true; });
  EXPECT_HAS(load_error(nobias), "tensor 'backbone.layers.0.mixer.conv1d.bias' is missing");
  const std::string deep =
      copy("mamba_tiny", [](nlohmann::json& j) { j["num_hidden_layers"] = 3; });
  EXPECT_HAS(load_error(deep), "tensor 'backbone.layers.2.norm.weight' is missing");
  const std::string shallow =
      copy("mamba_bias", [](nlohmann::json& j) { j["num_hidden_layers"] = 2; });
  e = load_error(shallow);
  EXPECT_HAS(e, "unexpected tensor 'backbone.layers.2.");
  EXPECT_HAS(e, "the mamba model has no such parameter");
  const std::string untied =
      copy("mamba_tiny", [](nlohmann::json& j) { j["tie_word_embeddings"] = false; });
  EXPECT_HAS(load_error(untied), "tensor 'lm_head.weight' is missing");
}

TEST_F(MambaCheckpoint, ConfigValuesAreCheckedByKey) {
  const std::pair<std::function<void(nlohmann::json&)>, const char*> cases[] = {
      {[](nlohmann::json& j) { j["state_size"] = 300; }, "key 'state_size'"},
      {[](nlohmann::json& j) { j["state_size"] = 0; }, "key 'state_size'"},
      {[](nlohmann::json& j) { j["conv_kernel"] = 65; }, "key 'conv_kernel'"},
      {[](nlohmann::json& j) { j["conv_kernel"] = -1; }, "key 'conv_kernel'"},
      {[](nlohmann::json& j) { j["conv_kernel"] = 0; }, "key 'conv_kernel'"},
      {[](nlohmann::json& j) { j["state_size"] = 1000000000000; }, "key 'state_size'"},
      {[](nlohmann::json& j) { j["expand"] = 17; }, "key 'expand'"},
      {[](nlohmann::json& j) {
         j["hidden_size"] = 200000000;
         j["expand"] = 16;
       },
       "key 'expand': expand 16 x hidden_size 200000000 exceeds 2^31 - 1"},
      {[](nlohmann::json& j) { j["intermediate_size"] = 0; }, "key 'intermediate_size'"},
      {[](nlohmann::json& j) { j["time_step_rank"] = 0; }, "key 'time_step_rank'"},
      {[](nlohmann::json& j) { j["num_hidden_layers"] = 2000000000; },
       "key 'num_hidden_layers': num_hidden_layers 2000000000 exceeds the"},
      {[](nlohmann::json& j) { j["expand"] = 1.5; }, "key 'expand'"},
      {[](nlohmann::json& j) { j["intermediate_size"] = 60; }, "key 'intermediate_size'"},
      {[](nlohmann::json& j) { j["time_step_rank"] = "big"; }, "key 'time_step_rank'"},
      {[](nlohmann::json& j) { j["time_step_rank"] = 65; }, "key 'time_step_rank'"},
      {[](nlohmann::json& j) { j["hidden_act"] = "gelu"; }, "key 'hidden_act'"},
      {[](nlohmann::json& j) { j["hidden_size"] = -4; }, "key 'hidden_size'"},
  };
  for (const auto& [edit, key] : cases) {
    EXPECT_HAS(load_error(copy("mamba_tiny", edit)), key);
  }
  // Keys that do not change the function are accepted.
  const std::string ok_dir = copy("mamba_tiny", [](nlohmann::json& j) {
    j["use_mambapy"] = true;
    j["rescale_prenorm_residual"] = true;
    j["time_step_rank"] = "auto";
    j["residual_in_fp32"] = false;
  });
  auto ok = load_hf_model(ok_dir, Device::cpu());
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  // The tensor list of model info --hf.
  const auto specs = hf_checkpoint_tensor_specs(ok->model->card(), "mamba");
  EXPECT_EQ(specs.front().name, "backbone.embeddings.weight");
  EXPECT_EQ(specs[1].name, "backbone.layers.0.norm.weight");
  EXPECT_EQ(specs.back().name, "backbone.norm_f.weight");
}

}  // namespace
}  // namespace el
