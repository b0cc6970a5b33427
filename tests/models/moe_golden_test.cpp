// Mixture of experts against transformers' MixtralForCausalLM and
// Qwen2MoeForCausalLM: the tiny random checkpoints of
// tools/make_moe_fixtures.py (tests/fixtures/{mixtral,qwen2_moe}/, written
// by save_pretrained with the experts per expert; mixtral/fused/ holds the
// same weights under the fused in-memory names) loaded through the normal
// loader (load_hf_model), then:
//  * logits for the same ids, full and cached (prefill + decode steps);
//  * the cross-entropy, each layer's load-balancing loss (transformers'
//    load_balancing_loss_func on that layer's router logits) and the
//    gradients of ce + coef * mean(balance) for a few parameters;
//  * config keys the engine cannot run or out of range, and checkpoints with
//    a missing, misshapen or extra expert, router or shared expert, are
//    errors naming the key or the tensor.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>

#include "autograd/tape.h"
#include "common/cached_forward.h"
#include "common/hf_golden_util.h"
#include "common/hf_test_util.h"
#include "common/ops_harness.h"
#include "io/file_util.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/hf_model.h"
#include "nn/kv_cache.h"

namespace el {
namespace {

namespace fs = std::filesystem;

std::string fixture_dir(const std::string& name) {
  return hftest::family_fixture_dir("", name);
}
// The directory holding reference.safetensors for a fixture directory.
std::string family_of(const std::string& name) { return name.substr(0, name.find('/')); }

io::SafetensorsFile reference(const std::string& name) {
  return hftest::open_reference(fixture_dir(family_of(name)));
}

std::unique_ptr<DecoderLM> load(const std::string& name) {
  return hftest::load_golden(fixture_dir(name), DType::f32, family_of(name));
}

// The same f32 weights on both sides; logits of O(1-10) after two layers.
constexpr test::Tolerance kLogitsTol{5e-5, 5e-5};
// Scalars (cross-entropy, balance losses): f32 sums over 16 tokens.
constexpr test::Tolerance kLossTol{1e-5, 1e-5};
// Gradients: f32 backward on both sides, values of O(1e-4 .. 1).
constexpr test::Tolerance kGradTol{2e-6, 1e-3};

class MoeGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeGolden, CardFollowsTheConfig) {
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  const ModelCard& c = model->card();
  const bool mixtral = family_of(GetParam()) == "mixtral";
  EXPECT_EQ(c.moe_experts, 4);
  EXPECT_EQ(c.moe_top_k, 2);
  EXPECT_EQ(c.moe_expert_d_ff(), mixtral ? 24 : 16);
  EXPECT_EQ(c.moe_norm_topk_prob, mixtral);
  EXPECT_EQ(c.moe_shared_width(), mixtral ? 0 : 20);
  EXPECT_EQ(c.qkv_bias, !mixtral);
  EXPECT_FLOAT_EQ(c.moe_aux_loss_coef, 0.02f);  // output_router_logits true
  EXPECT_EQ(c.moe_z_loss_coef, 0.0f);
  EXPECT_EQ(c.moe_capacity_factor, 0.0f);
}

TEST_P(MoeGolden, LogitsMatchTransformers) {
  NoGrad no_grad;
  io::SafetensorsFile ref = reference(GetParam());
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  EXPECT_TRUE(test::all_close(model->forward(ref.load("input_ids").value()).to_floats(),
                              test::to_doubles(ref.load("logits").value()), kLogitsTol,
                              GetParam() + " logits"));
}

TEST_P(MoeGolden, LossBalanceAndGradientsMatchTransformers) {
  io::SafetensorsFile ref = reference(GetParam());
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  const Tensor ids = ref.load("input_ids").value();
  // Next-token targets, the last position ignored (transformers shifts labels).
  std::vector<float> v = ids.to_floats();
  const int64_t B = ids.dim(0), T = ids.dim(1);
  std::vector<int32_t> targets(static_cast<size_t>(B * T), -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) targets[b * T + t] = static_cast<int32_t>(v[b * T + t + 1]);
  const Tensor tgt = Tensor::from_ints(targets, {B, T});
  {
    NoGrad no_grad;  // the cross-entropy alone
    EXPECT_TRUE(test::all_close({model->loss(ids, tgt).item()},
                                test::to_doubles(ref.load("ce").value()), kLossTol, "ce"));
  }
  AuxLosses aux;
  Tensor loss = model->loss(ids, tgt, &aux);
  std::vector<float> balance;
  for (const AuxLoss& a : aux) {
    ASSERT_EQ(std::string(a.name), "moe_balance");  // z-loss coefficient 0: not computed
    EXPECT_FLOAT_EQ(a.weight, 0.01f);                // 0.02 / 2 layers
    balance.push_back(a.value.item());
  }
  EXPECT_TRUE(test::all_close(balance, test::to_doubles(ref.load("aux_per_layer").value()),
                              kLossTol, "balance loss per layer"));
  tape().backward(loss);
  std::map<std::string, Tensor> params;
  for (const auto& p : model->parameters()) params.emplace(p.name, p.tensor);
  int checked = 0;
  for (const std::string& name : ref.names()) {
    if (name.rfind("grad.", 0) != 0) continue;
    const std::string param = name.substr(5);
    ASSERT_TRUE(params.count(param)) << param;
    ASSERT_TRUE(params.at(param).has_grad()) << param;
    EXPECT_TRUE(test::all_close(params.at(param).grad().to_floats(),
                                test::to_doubles(ref.load(name).value()), kGradTol,
                                GetParam() + " gradient of " + param));
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

// Prefill of 3 tokens, then decode steps, against the full-sequence logits.
TEST_P(MoeGolden, CachedForwardMatchesTransformers) {
  io::SafetensorsFile ref = reference(GetParam());
  auto model = load(GetParam());
  ASSERT_TRUE(model);
  EXPECT_TRUE(test::cached_matches_full(*model, ref.load("input_ids").value(),
                                        test::to_doubles(ref.load("logits").value()), 3,
                                        kLogitsTol, GetParam() + " cached"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MoeGolden,
                         ::testing::Values("mixtral", "mixtral/fused", "qwen2_moe"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '/', '_');
                           return s;
                         });

std::string read_text(const std::string& path) { return io::read_file(path).value(); }

// config.json of a fixture with one key's value replaced (JSON text).
std::string with_key(const std::string& family, const std::string& key, const std::string& value) {
  std::string cfg = read_text((fs::path(fixture_dir(family)) / "config.json").string());
  const std::string tag = "\"" + key + "\": ";
  const size_t at = cfg.find(tag);
  EXPECT_NE(at, std::string::npos) << key;
  const size_t end = cfg.find_first_of(",\n", at + tag.size());
  return cfg.substr(0, at + tag.size()) + value + cfg.substr(end);
}

std::string config_error(const std::string& json) {
  auto r = io::parse_hf_config(json, "config.json");
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message();
}

// Keys the engine cannot run and sizes out of range: top-k above the expert
// count, more experts than the router kernels hold, zero widths.
TEST(MoeGoldenErrors, ConfigErrorsNameTheKey) {
  struct Case {
    std::string family, key, value, what;
  };
  const Case cases[] = {
      {"mixtral", "num_experts_per_tok", "5", "num_experts_per_tok (5) exceeds num_local_experts (4)"},
      {"qwen2_moe", "num_experts_per_tok", "9", "num_experts_per_tok (9) exceeds num_experts (4)"},
      {"mixtral", "num_experts_per_tok", "0", "must be a positive integer"},
      {"mixtral", "router_jitter_noise", "0.1", "router_jitter_noise 0.1 is not supported"},
      {"qwen2_moe", "decoder_sparse_step", "2", "decoder_sparse_step 2 is not supported"},
      {"qwen2_moe", "mlp_only_layers", "[1]", "mlp_only_layers [1] is not supported"},
      {"qwen2_moe", "num_experts", "0", "must be a positive integer"},
      {"mixtral", "num_local_experts", "300", "num_local_experts 300 is above the engine's limit 256"},
      {"qwen2_moe", "num_experts", "257", "num_experts 257 is above the engine's limit 256"},
      {"mixtral", "intermediate_size", "0", "must be a positive integer"},
      {"qwen2_moe", "moe_intermediate_size", "0", "must be a positive integer"},
      {"qwen2_moe", "shared_expert_intermediate_size", "-16", "must be a positive integer"},
      {"mixtral", "router_aux_loss_coef", "-1", "must be a number >= 0"},
  };
  for (const Case& c : cases) {
    const std::string msg = config_error(with_key(c.family, c.key, c.value));
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
    EXPECT_NE(msg.find("key '" + c.key + "'"), std::string::npos) << msg;
  }
}

// A checkpoint whose experts do not match its config: the router's shape
// ([E, C]) and the expert tensors are checked and named before anything
// loads; one expert fewer in the config makes expert 3's tensors unknown.
TEST(MoeGoldenErrors, ExpertTensorsThatDoNotMatchAreNamed) {
  const fs::path tmp = fs::temp_directory_path() / "el_moe_golden_errors";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  fs::copy_file(fs::path(fixture_dir("mixtral")) / "model.safetensors", tmp / "model.safetensors");
  auto write_config = [&](const std::string& json) {
    std::ofstream(tmp / "config.json") << json;
  };
  write_config(with_key("mixtral", "num_local_experts", "5"));
  auto more = load_hf_model(tmp.string(), Device::cpu());
  ASSERT_FALSE(more.ok());
  std::string msg = more.error().message();
  EXPECT_NE(msg.find("tensor 'model.layers.0.block_sparse_moe.gate.weight'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("expected [5, 32]"), std::string::npos) << msg;
  // Without the router's mismatch: the unknown experts themselves are named.
  write_config(with_key("mixtral", "num_local_experts", "3"));
  io::HfLoadOptions opts;
  auto ck = io::HfCheckpoint::open(tmp.string()).value();
  const std::vector<io::HfTensorSpec> specs = hf_checkpoint_tensor_specs(ck.config().card, "mixtral");
  bool names_expert3 = false;
  for (const auto& s : specs) names_expert3 = names_expert3 || s.name.find("experts.3.") != std::string::npos;
  EXPECT_FALSE(names_expert3);
  auto fewer = load_hf_model(tmp.string(), Device::cpu());
  ASSERT_FALSE(fewer.ok());
  msg = fewer.error().message();
  EXPECT_NE(msg.find("tensor 'model.layers.0.block_sparse_moe.gate.weight'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("expected [3, 32] from config.json, found [4, 32]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_local_experts"), std::string::npos) << msg;  // the hint's keys
  fs::remove_all(tmp);
}

// Checkpoints damaged against an unchanged config.json: each error names the
// tensor and, for a shape, what the config expects.
class MoeCheckpointErrors : public hftest::TempDirTest {
 protected:
  using Tensors = std::map<std::string, Tensor>;
  // A copy of fixture `name` whose weights went through `edit`.
  std::string damaged(const std::string& name, const std::function<void(Tensors&)>& edit) {
    const fs::path dst = dir_ / name;
    fs::remove_all(dst);
    fs::create_directories(dst);
    fs::copy_file(fs::path(fixture_dir(name)) / "config.json", dst / "config.json");
    const fs::path weights = fs::path(fixture_dir(name)) / "model.safetensors";
    auto f = io::SafetensorsFile::open(weights.string()).value();
    Tensors t;
    for (const auto& n : f.names()) t.emplace(n, f.load(n).value());
    edit(t);
    const std::vector<std::pair<std::string, Tensor>> list(t.begin(), t.end());
    EXPECT_TRUE(io::save_safetensors((dst / "model.safetensors").string(), list).ok());
    return dst.string();
  }
  std::string load_error(const std::string& dir) {
    auto r = load_hf_model(dir, Device::cpu());
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message();
  }
};

TEST_F(MoeCheckpointErrors, MixtralExpertsAndRouterAreNamed) {
  const std::string e = "model.layers.1.block_sparse_moe.experts.";
  // An expert's tensor missing.
  std::string msg = load_error(damaged("mixtral", [&](Tensors& t) { t.erase(e + "2.w3.weight"); }));
  EXPECT_HAS(msg, "tensor '" + e + "2.w3.weight' is missing: the model expects shape [24, 32]");
  // An expert's tensor of the wrong shape (transposed).
  msg = load_error(damaged("mixtral", [&](Tensors& t) {
    t[e + "1.w2.weight"] = Tensor::zeros({24, 32});
  }));
  EXPECT_HAS(msg, "tensor '" + e + "1.w2.weight'");
  EXPECT_HAS(msg, "expected [32, 24] from config.json, found [24, 32]");
  // An expert numbered beyond num_local_experts (4): a fifth expert.
  msg = load_error(damaged("mixtral", [&](Tensors& t) {
    t[e + "4.w1.weight"] = Tensor::zeros({24, 32});
  }));
  EXPECT_HAS(msg, "unexpected tensor '" + e + "4.w1.weight': the mixtral model has no such");
  // A router with fewer rows than num_local_experts: expert 3 has no logit.
  msg = load_error(damaged("mixtral", [&](Tensors& t) {
    t["model.layers.0.block_sparse_moe.gate.weight"] = Tensor::zeros({3, 32});
  }));
  EXPECT_HAS(msg, "tensor 'model.layers.0.block_sparse_moe.gate.weight'");
  EXPECT_HAS(msg, "expected [4, 32] from config.json, found [3, 32]");
}

TEST_F(MoeCheckpointErrors, Qwen2MoeSharedExpertIsNamed) {
  const std::string m = "model.layers.0.mlp.";
  std::string msg =
      load_error(damaged("qwen2_moe", [&](Tensors& t) { t.erase(m + "shared_expert_gate.weight"); }));
  EXPECT_HAS(msg, "tensor '" + m + "shared_expert_gate.weight' is missing");
  msg = load_error(damaged("qwen2_moe", [&](Tensors& t) {
    t[m + "shared_expert.up_proj.weight"] = Tensor::zeros({16, 32});
  }));
  EXPECT_HAS(msg, "tensor '" + m + "shared_expert.up_proj.weight'");
  EXPECT_HAS(msg, "expected [20, 32] from config.json, found [16, 32]");
  EXPECT_HAS(msg, "shared_expert_intermediate_size");  // the hint's keys
  msg = load_error(damaged("qwen2_moe", [&](Tensors& t) { t.erase(m + "experts.3.down_proj.weight"); }));
  EXPECT_HAS(msg, "tensor '" + m + "experts.3.down_proj.weight' is missing");
}

// The fused layout (experts stacked [E, 2F, C]): a stack of the wrong expert
// count is named with both shapes.
TEST_F(MoeCheckpointErrors, FusedExpertStacksAreNamed) {
  const std::string m = "model.layers.1.mlp.experts.";
  const std::string msg = load_error(damaged("mixtral/fused", [&](Tensors& t) {
    t[m + "gate_up_proj"] = Tensor::zeros({3, 48, 32});
  }));
  EXPECT_HAS(msg, "tensor '" + m + "gate_up_proj'");
  EXPECT_HAS(msg, "expected [4, 48, 32] from config.json, found [3, 48, 32]");
}

}  // namespace
}  // namespace el
