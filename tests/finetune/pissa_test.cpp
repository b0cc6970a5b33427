// pissa_test.cpp — PiSSA initialisation (finetune/pissa.h): the SVD on odd
// shapes, the factors (W_res + s B A == W, W_res holds the tail of the
// spectrum), the adapted model starting equal to the base (f32, bf16, DoRA),
// only a stacked slot's own rows written, merge giving W back, peft's
// numbers (tests/fixtures/peft/llama_pissa: our initialisation up to a sign
// per rank, and peft's adapter loaded on the original base), save -> load,
// and the error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/test_cards.h"
#include "common/finetune_golden.h"
#include "finetune/peft_io.h"
#include "finetune/pissa.h"

namespace el::finetune {
namespace {

ModelCard card(bool qkv_bias = true) { return test::small_card(qkv_bias ? "qkv_bias: true\n" : "qkv_bias: false\n"); }

Tensor ids() { return Tensor::from_ints({1, 5, 9, 33, 2, 60, 7, 11, 4, 0}, {2, 5}); }

std::vector<double> random_matrix(int64_t m, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> a(static_cast<size_t>(m * n));
  for (double& x : a) x = rng.normal();
  return a;
}

std::map<std::string, std::vector<float>> weights(const DecoderLM& m) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& p : m.parameters()) out[p.name] = p.tensor.to_floats();
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
  return d;
}

TEST(PissaSvd, ReconstructsOddShapes) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{5, 9}, {9, 5}, {7, 7}, {1, 6}, {6, 1}, {33, 17}}) {
    SCOPED_TRACE(fmt::format("{}x{}", m, n));
    const std::vector<double> a = random_matrix(m, n, static_cast<uint64_t>(m * 100 + n));
    const Svd s = svd_thin(a, m, n).value();
    const int64_t k = std::min(m, n);
    ASSERT_EQ(s.k, k);
    for (int64_t j = 0; j < k; ++j) {
      EXPECT_GE(s.s[j], 0.0);
      if (j > 0) {
        EXPECT_GE(s.s[j - 1], s.s[j]);
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t c = 0; c < n; ++c) {
        double v = 0;
        for (int64_t j = 0; j < k; ++j) v += s.u[i * k + j] * s.s[j] * s.vt[j * n + c];
        ASSERT_NEAR(v, a[i * n + c], 1e-12) << i << "," << c;
      }
    }
    // Orthonormal columns of U and rows of V^T.
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t q = 0; q < k; ++q) {
        double uu = 0, vv = 0;
        for (int64_t i = 0; i < m; ++i) uu += s.u[i * k + p] * s.u[i * k + q];
        for (int64_t c = 0; c < n; ++c) vv += s.vt[p * n + c] * s.vt[q * n + c];
        EXPECT_NEAR(uu, p == q ? 1.0 : 0.0, 1e-12);
        EXPECT_NEAR(vv, p == q ? 1.0 : 0.0, 1e-12);
      }
    }
  }
}

TEST(PissaSvd, NonFiniteInputIsReported) {
  std::vector<double> a = random_matrix(3, 4, 1);
  a[6] = std::nan("");
  const auto r = svd_thin(a, 3, 4, "w");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("entry (1, 2) is nan"), std::string::npos) << r.error().message();
}

// W_res + s B A == W; W_res's singular values are W's after the first r
// (the principal part moved into the adapter); A = sqrt(S/s) V^T has
// orthogonal rows of squared norm S_j / s.
TEST(PissaFactors, ResidualPlusAdapterIsTheWeight) {
  for (auto [out, in, r] : {std::tuple<int64_t, int64_t, int64_t>{6, 11, 3}, {11, 6, 2}, {8, 8, 8}, {5, 9, 5},
                            {9, 4, 4}, {1, 7, 1}}) {
    SCOPED_TRACE(fmt::format("[{}, {}] r = {}", out, in, r));
    const std::vector<double> wd = random_matrix(out, in, static_cast<uint64_t>(out * 31 + in));
    const std::vector<float> w(wd.begin(), wd.end());
    const float s = 1.7f;
    const PissaFactors f = pissa_factors(w, out, in, r, s).value();
    ASSERT_EQ(f.a.size(), static_cast<size_t>(r * in));
    ASSERT_EQ(f.b.size(), static_cast<size_t>(out * r));
    std::vector<double> res(f.residual.begin(), f.residual.end());
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t i = 0; i < in; ++i) {
        double ba = 0;
        for (int64_t j = 0; j < r; ++j) ba += double(f.b[o * r + j]) * f.a[j * in + i];
        ASSERT_NEAR(f.residual[o * in + i] + s * ba, w[o * in + i], 1e-5) << o << "," << i;
      }
    }
    const Svd full = svd_thin(std::vector<double>(w.begin(), w.end()), out, in).value();
    const Svd tail = svd_thin(res, out, in).value();
    for (int64_t j = 0; j < full.k; ++j) {
      const double want = j + r < full.k ? full.s[j + r] : 0.0;
      EXPECT_NEAR(tail.s[j], want, 1e-5) << j;
    }
    for (int64_t p = 0; p < r; ++p) {
      for (int64_t q = 0; q < r; ++q) {
        double dot = 0;
        for (int64_t i = 0; i < in; ++i) dot += double(f.a[p * in + i]) * f.a[q * in + i];
        EXPECT_NEAR(dot, p == q ? full.s[p] / s : 0.0, 1e-5) << p << "," << q;
      }
    }
  }
}

TEST(PissaFactors, RankAboveMinDimIsRefused) {
  const std::vector<float> w(4 * 6, 1.f);
  const auto r = pissa_factors(w, 4, 6, 5, 1.f, DType::f32, "layer.k");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("PiSSA rank r = 5 for a [4, 6] weight: r must be in [1, min(out, in) = 4]"),
            std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("layer.k"), std::string::npos);
}

LoraConfig pissa_config(int64_t r, std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                       "gate_proj", "up_proj", "down_proj"}) {
  LoraConfig c;
  c.r = r;
  c.alpha = 2.f * static_cast<float>(r);
  c.init = LoraConfig::Init::pissa;
  c.target_modules = std::move(targets);
  return c;
}

// The adapted model starts equal to the base (f32 and bf16, LoRA and DoRA);
// merging gives W back.
TEST(Pissa, ModelStartsEqualToTheBaseAndMergesBackToW) {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool dora : {false, true}) {
      SCOPED_TRACE(fmt::format("{} {}", dtype_name(dt), dora ? "dora" : "lora"));
      auto m = DecoderLM::create(card(), Device::cpu(), 3, dt).value();
      const auto w0 = weights(*m);
      const std::vector<float> before = m->forward(ids()).to_floats();
      LoraConfig cfg = pissa_config(4);
      cfg.use_dora = dora;
      const LoraSummary s = apply_lora(*m, cfg).value();
      EXPECT_EQ(s.adapted_modules, 14);
      const double tol = dt == DType::f32 ? 2e-5 : 3e-2;
      const std::vector<float> after = m->forward(ids()).to_floats();
      EXPECT_LT(max_abs_diff(after, before), tol);
      const auto w1 = weights(*m);
      const std::string q = "model.layers.1.self_attn.q_proj";
      EXPECT_GT(max_abs_diff(w1.at(q + ".weight"), w0.at(q + ".weight")), 1e-3);  // the residual
      double bnorm = 0;
      for (float v : w1.at(q + ".lora_B.weight")) bnorm += std::abs(v);
      EXPECT_GT(bnorm, 0.0);  // B starts on the principal part, not at zero
      if (dora) {
        // m = ||W_res + s B A|| = ||W|| per row.
        const std::vector<float>& mag = w1.at(q + ".lora_magnitude_vector");
        const std::vector<float>& w = w0.at(q + ".weight");
        for (size_t o = 0; o < mag.size(); ++o) {
          double n2 = 0;
          for (size_t i = 0; i < 32; ++i) n2 += double(w[o * 32 + i]) * w[o * 32 + i];
          EXPECT_NEAR(mag[o], std::sqrt(n2), dt == DType::f32 ? 1e-5 : 1e-2) << o;
        }
      }
      merge_lora(*m);
      const auto w2 = weights(*m);
      for (const auto& [name, v] : w0) {
        ASSERT_TRUE(w2.count(name)) << name;
        EXPECT_LT(max_abs_diff(w2.at(name), v), dt == DType::f32 ? 1e-6 : 2e-2) << name;
      }
    }
  }
}

// k_proj is the middle row block of the stacked q/k/v buffer (stacked at
// this width without biases): PiSSA on k alone must write k's rows and leave
// q's and v's bit for bit.
TEST(Pissa, WritesOnlyItsRowsOfAStackedBuffer) {
  auto m = DecoderLM::create(card(false), Device::cpu(), 3).value();
  const std::string pre = "model.layers.0.self_attn.";
  std::map<std::string, Tensor> p;
  for (const auto& x : m->parameters()) p[x.name] = x.tensor;
  ASSERT_EQ(p.at(pre + "q_proj.weight").impl()->storage, p.at(pre + "k_proj.weight").impl()->storage)
      << "expected q/k/v stacked in one buffer at this width";
  const auto w0 = weights(*m);
  ASSERT_TRUE(apply_lora(*m, pissa_config(3, {"model.layers.0.self_attn.k_proj"})).ok());
  const auto w1 = weights(*m);
  EXPECT_EQ(w1.at(pre + "q_proj.weight"), w0.at(pre + "q_proj.weight"));
  EXPECT_EQ(w1.at(pre + "v_proj.weight"), w0.at(pre + "v_proj.weight"));
  EXPECT_GT(max_abs_diff(w1.at(pre + "k_proj.weight"), w0.at(pre + "k_proj.weight")), 1e-3);
}

// Our initialisation against peft's (init.safetensors): residuals, logits
// and loss directly; A, B and their gradients up to one sign per rank.
TEST(PissaGolden, InitialisationMatchesPeft) {
  const std::string dir = test::peft_fixture_dir("llama_pissa");
  auto hf = load_hf_model(dir + "/base", Device::cpu());
  ASSERT_TRUE(hf.ok()) << hf.error().message();
  DecoderLM& model = *hf->model;
  LoraConfig cfg = pissa_config(4);
  cfg.alpha = 8.f;
  ASSERT_TRUE(apply_lora(model, cfg).ok());
  const auto expect = io::SafetensorsFile::open(dir + "/init.safetensors").value();
  auto host = [&](const std::string& key) { return expect.load(key).value().to_floats(); };
  const Tensor x = expect.load("ids").value(), targets = expect.load("targets").value();
  EXPECT_TRUE(test::golden_close(model.forward(x).to_floats(), host("logits"), 2e-5, "logits"));
  Tensor loss = model.loss(x, targets);
  tape().backward(loss);
  EXPECT_NEAR(loss.item(), host("loss")[0], 1e-5);
  int residuals = 0, adapters = 0;
  for (const auto& p : model.parameters()) {
    const std::string& name = p.name;
    if (expect.contains("residual." + name)) {
      EXPECT_TRUE(test::golden_close(p.tensor.to_floats(), host("residual." + name), 1e-5, name));
      ++residuals;
    }
    const size_t at = name.find(".lora_A.weight");
    if (at == std::string::npos) continue;
    const std::string slot = name.substr(0, at);
    const std::string a_key = slot + ".lora_A.weight", b_key = slot + ".lora_B.weight";
    Tensor a, b;
    for (const auto& q : model.parameters()) {
      if (q.name == a_key) a = q.tensor;
      if (q.name == b_key) b = q.tensor;
    }
    const int64_t r = a.dim(0), in = a.dim(1), out = b.dim(0);
    std::vector<float> ga = a.grad().to_floats(), gb = b.grad().to_floats();
    std::vector<float> va = a.to_floats(), vb = b.to_floats();
    const std::vector<float> pa = host("init." + a_key);
    for (int64_t j = 0; j < r; ++j) {
      double dot = 0;
      for (int64_t i = 0; i < in; ++i) dot += double(va[j * in + i]) * pa[j * in + i];
      const float sign = dot < 0 ? -1.f : 1.f;  // peft's SVD may pick the other sign
      for (int64_t i = 0; i < in; ++i) va[j * in + i] *= sign, ga[j * in + i] *= sign;
      for (int64_t o = 0; o < out; ++o) vb[o * r + j] *= sign, gb[o * r + j] *= sign;
    }
    EXPECT_TRUE(test::golden_close(va, pa, 1e-5, a_key));
    EXPECT_TRUE(test::golden_close(vb, host("init." + b_key), 1e-5, b_key));
    EXPECT_TRUE(test::golden_close(ga, host("grad." + a_key), 2e-5, "grad " + a_key));
    EXPECT_TRUE(test::golden_close(gb, host("grad." + b_key), 2e-5, "grad " + b_key));
    ++adapters;
  }
  EXPECT_EQ(residuals, 14);
  EXPECT_EQ(adapters, 14);
}

// peft's PiSSA adapter (B moved after the initialisation) on the original
// base: we rebuild the residual as peft does, then logits, loss, gradients.
TEST(PissaGolden, PeftAdapterLoadsOnTheOriginalBase) {
  test::check_peft_fixture("llama_pissa", Device::cpu(), DType::f32, 2e-5);
}

std::string temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("el_pissa_" + name);
  std::filesystem::remove_all(p);
  return p.string();
}

TEST(Pissa, SaveThenLoadOnAFreshBaseGivesTheSameLogits) {
  for (bool dora : {false, true}) {
    auto m = DecoderLM::create(card(), Device::cpu(), 7).value();
    LoraConfig cfg = pissa_config(4, {"q_proj", "v_proj", "down_proj"});
    cfg.use_dora = dora;
    ASSERT_TRUE(apply_lora(*m, cfg).ok());
    Rng rng(3);  // move B (and m) as training would
    for (const auto& p : m->parameters()) {
      if (p.name.find("lora_B") == std::string::npos && p.name.find("magnitude") == std::string::npos) continue;
      std::vector<float> v = p.tensor.to_floats();
      for (float& x : v) x += 0.05f * rng.normal();
      Tensor(p.tensor).copy_from(Tensor::from_floats(v, p.tensor.shape()));
    }
    const std::vector<float> want = m->forward(ids()).to_floats();
    const std::string dir = temp_dir(dora ? "dora" : "lora");
    ASSERT_TRUE(save_peft_adapter(*m, cfg, dir).ok());
    std::ifstream f(dir + "/adapter_config.json");
    EXPECT_EQ(nlohmann::json::parse(f)["init_lora_weights"], "pissa");
    EXPECT_EQ(read_peft_config(dir + "/adapter_config.json").value().init, LoraConfig::Init::pissa);

    auto fresh = DecoderLM::create(card(), Device::cpu(), 7).value();
    auto s = load_peft_adapter(*fresh, dir);
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_LT(max_abs_diff(fresh->forward(ids()).to_floats(), want), 1e-5);
    // The same adapter on another base is another model (the rule in peft_io.h).
    auto other = DecoderLM::create(card(), Device::cpu(), 8).value();
    ASSERT_TRUE(load_peft_adapter(*other, dir).ok());
    EXPECT_GT(max_abs_diff(other->forward(ids()).to_floats(), want), 1e-2);
  }
}

TEST(Pissa, BadTargetsAreReportedAndLeaveTheModelUnchanged) {
  auto m = DecoderLM::create(card(), Device::cpu(), 3).value();
  const auto w0 = weights(*m);
  // k_proj is [16, 32]: r = 20 is more than its rank.
  auto r = apply_lora(*m, pissa_config(20, {"q_proj", "k_proj"}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("PiSSA rank r = 20 exceeds min(out, in) = 16 of this [16, 32] weight"),
            std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().where.find("model.layers.0.self_attn.k_proj"), std::string::npos) << r.error().where;
  EXPECT_EQ(weights(*m), w0);

  // A non-finite weight.
  for (const auto& p : m->parameters()) {
    if (p.name != "model.layers.1.mlp.up_proj.weight") continue;
    std::vector<float> v = p.tensor.to_floats();
    v[3 * 32 + 5] = INFINITY;
    Tensor(p.tensor).copy_from(Tensor::from_floats(v, p.tensor.shape()));
  }
  const auto w1 = weights(*m);
  r = apply_lora(*m, pissa_config(4));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("model.layers.1.mlp.up_proj: weight entry (3, 5) is inf"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(weights(*m).size(), w1.size());  // no adapters added
  for (const auto& [name, v] : weights(*m)) {
    if (name.find("up_proj") == std::string::npos) {
      EXPECT_EQ(v, w1.at(name)) << name;
    }
  }
}

TEST(Pissa, UnsupportedInitialisationsInAdapterConfigsAreReported) {
  for (const auto& [init, want] :
       std::vector<std::pair<nlohmann::json, std::string>>{
           {"pissa_niter_4", "init_lora_weights 'pissa_niter_4' (PiSSA through a randomized SVD) is not supported"},
           {"olora", "init_lora_weights 'olora' is not supported"},
           {42, "expected true, false or a method name"}}) {
    const std::string dir = temp_dir("cfg");
    std::filesystem::create_directories(dir);
    const nlohmann::json cfg = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
                                {"target_modules", {"q_proj"}}, {"init_lora_weights", init}};
    std::ofstream(dir + "/adapter_config.json") << cfg.dump();
    const auto r = read_peft_config(dir + "/adapter_config.json");
    ASSERT_FALSE(r.ok()) << init;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().where.find("adapter_config.json: key 'init_lora_weights'"), std::string::npos)
        << r.error().where;
  }
  // Initialisations that only draw A and B load as plain LoRA.
  for (const nlohmann::json& init : {nlohmann::json(false), nlohmann::json("eva"), nlohmann::json("gaussian")}) {
    const std::string dir = temp_dir("cfg_ok");
    std::filesystem::create_directories(dir);
    const nlohmann::json cfg = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
                                {"target_modules", {"q_proj"}}, {"init_lora_weights", init}};
    std::ofstream(dir + "/adapter_config.json") << cfg.dump();
    EXPECT_TRUE(read_peft_config(dir + "/adapter_config.json").ok()) << init;
  }
}

}  // namespace
}  // namespace el::finetune
