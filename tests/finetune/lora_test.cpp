// lora_test.cpp — LoRA / RSLoRA / DoRA as a model transform: gradients of a
// single adapted layer against central differences of the documented forward
// (DoRA's norm held constant, as PEFT does), the adapted model starting equal
// to the base model, merging, freezing, and the error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "common/test_cards.h"
#include "autograd/tape.h"
#include "finetune/lora.h"
#include "ops/ops.h"
#include "train/optimizer.h"

namespace el::finetune {
namespace {

ModelCard test_card() { return test::small_card("qkv_bias: true\n"); }

Tensor random_ids(int64_t b, int64_t t, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(b * t));
  for (auto& x : v) x = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return Tensor::from_ints(v, {b, t});
}

Tensor random_host(const Shape& shape, Rng& rng, float scale) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = rng.normal() * scale;
  return Tensor::from_floats(v, shape);
}

std::vector<float> host(const Tensor& t) { return t.to_floats(); }

// The documented forward on the host in double: y = c * (x W^T + s x A^T B^T) + bias,
// c = m / n0 for DoRA (n0 given), c = 1 for LoRA.
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w,
                              const std::vector<float>& bias, const std::vector<float>& a,
                              const std::vector<float>& b, const std::vector<double>& c, int64_t n,
                              int64_t in, int64_t out, int64_t r, double s) {
  std::vector<double> y(static_cast<size_t>(n * out));
  for (int64_t row = 0; row < n; ++row) {
    std::vector<double> ax(static_cast<size_t>(r), 0.0);
    for (int64_t k = 0; k < r; ++k)
      for (int64_t i = 0; i < in; ++i) ax[k] += static_cast<double>(a[k * in + i]) * x[row * in + i];
    for (int64_t o = 0; o < out; ++o) {
      double base = 0, lora = 0;
      for (int64_t i = 0; i < in; ++i) base += static_cast<double>(w[o * in + i]) * x[row * in + i];
      for (int64_t k = 0; k < r; ++k) lora += static_cast<double>(b[o * r + k]) * ax[k];
      y[row * out + o] = c[o] * (base + s * lora) + bias[o];
    }
  }
  return y;
}

struct LayerCase {
  bool dora;
  bool rslora;
};

class AdaptedLayer : public ::testing::TestWithParam<LayerCase> {};

TEST_P(AdaptedLayer, GradientsMatchCentralDifferencesOfTheDocumentedForward) {
  const LayerCase lc = GetParam();
  const int64_t n = 5, in = 7, out = 6, r = 3;
  Rng rng(11);
  auto base = std::make_unique<Linear>(random_host({out, in}, rng, 0.5f), random_host({out}, rng, 0.5f));
  LoraConfig cfg;
  cfg.r = r;
  cfg.alpha = 6.f;
  cfg.use_dora = lc.dora;
  cfg.use_rslora = lc.rslora;
  auto runtime = std::make_shared<AdapterRuntime>();
  LoraLinear layer(std::move(base), cfg, 0, runtime, rng);
  // Non-zero B and m away from the norm, so every term matters.
  layer.lora_B.copy_from(random_host({out, r}, rng, 0.5f));
  if (lc.dora) layer.magnitude.copy_from(random_host({out}, rng, 1.f));
  const Tensor x = random_host({n, in}, rng, 1.f);
  const Tensor seed = random_host({n, out}, rng, 1.f);  // L = sum(y * seed)

  Tensor y = layer.forward(x);
  accumulate_grad(y, seed.clone());
  tape().backward(Tensor::zeros({1}));

  const std::vector<float> w = host(layer.base().weight), bias = host(layer.base().bias);
  std::vector<float> a = host(layer.lora_A), b = host(layer.lora_B);
  std::vector<float> m = lc.dora ? host(layer.magnitude) : std::vector<float>();
  const std::vector<float> xv = host(x), rv = host(seed);
  const std::vector<float> inv0 = lc.dora ? host(layer.weight_inv_norm()) : std::vector<float>();
  const double s = cfg.scaling();
  EXPECT_FLOAT_EQ(static_cast<float>(s), lc.rslora ? 6.f / std::sqrt(3.f) : 2.f);
  auto loss = [&]() {
    std::vector<double> c(static_cast<size_t>(out), 1.0);
    for (int64_t o = 0; o < out && lc.dora; ++o) c[o] = m[o] * static_cast<double>(inv0[o]);
    const std::vector<double> yr = reference(xv, w, bias, a, b, c, n, in, out, r, s);
    double l = 0;
    for (size_t i = 0; i < yr.size(); ++i) l += yr[i] * rv[i];
    return l;
  };
  // The forward itself.
  {
    std::vector<double> c(static_cast<size_t>(out), 1.0);
    for (int64_t o = 0; o < out && lc.dora; ++o) c[o] = m[o] * static_cast<double>(inv0[o]);
    const std::vector<double> yr = reference(xv, w, bias, a, b, c, n, in, out, r, s);
    const std::vector<float> yv = host(y);
    for (size_t i = 0; i < yr.size(); ++i) ASSERT_NEAR(yv[i], yr[i], 1e-4 + 1e-4 * std::abs(yr[i]));
  }
  auto check = [&](std::vector<float>& p, const Tensor& grad, const char* what) {
    ASSERT_TRUE(grad.defined()) << what;
    const std::vector<float> g = host(grad);
    for (size_t i = 0; i < p.size(); ++i) {
      const float keep = p[i];
      const double eps = 1e-3;
      p[i] = static_cast<float>(keep + eps);
      const double up = loss();
      p[i] = static_cast<float>(keep - eps);
      const double down = loss();
      p[i] = keep;
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(g[i], fd, 2e-3 + 2e-3 * std::abs(fd)) << what << "[" << i << "]";
    }
  };
  check(a, layer.lora_A.grad(), "lora_A");
  check(b, layer.lora_B.grad(), "lora_B");
  if (lc.dora) check(m, layer.magnitude.grad(), "magnitude");
  EXPECT_FALSE(layer.base().weight.has_grad());  // frozen
}

INSTANTIATE_TEST_SUITE_P(Variants, AdaptedLayer,
                         ::testing::Values(LayerCase{false, false}, LayerCase{false, true},
                                           LayerCase{true, false}),
                         [](const ::testing::TestParamInfo<LayerCase>& i) {
                           return std::string(i.param.dora ? "dora" : "lora") +
                                  (i.param.rslora ? "_rslora" : "");
                         });

TEST(Lora, AdaptedModelStartsEqualToTheBaseAndTrainsOnlyAdapters) {
  for (bool dora : {false, true}) {
    auto m = DecoderLM::create(test_card(), Device::cpu(), 3).value();
    const Tensor ids = random_ids(2, 12, 61, 1), targets = random_ids(2, 12, 61, 2);
    const std::vector<float> before = m->forward(ids).to_floats();
    const int64_t base_params = m->num_parameters();
    LoraConfig cfg;
    cfg.r = 4;
    cfg.alpha = 8.f;
    cfg.use_dora = dora;
    const LoraSummary s = apply_lora(*m, cfg).value();
    EXPECT_EQ(s.adapted_modules, 2 * 7);
    // r (in + out) per module (+ out for DoRA's magnitude).
    const int64_t c = 32, kv = 16, ff = 48;
    const int64_t per_layer = 4 * ((c + c) + (c + kv) + (c + kv) + (c + c) + (c + ff) + (c + ff) + (ff + c)) +
                              (dora ? c + kv + kv + c + ff + ff + c : 0);
    EXPECT_EQ(s.trainable_parameters, 2 * per_layer);
    EXPECT_EQ(s.total_parameters, base_params + s.trainable_parameters);
    const std::vector<float> after = m->forward(ids).to_floats();
    for (size_t i = 0; i < before.size(); ++i) ASSERT_NEAR(after[i], before[i], 1e-5) << i;

    const ParameterList trainable = trainable_parameters(*m);
    for (const auto& p : trainable) {
      EXPECT_NE(p.name.find("lora_"), std::string::npos) << p.name;
    }
    AdamW opt(trainable, AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      Tensor loss = m->loss(ids, targets);
      (step == 0 ? first : last) = loss.item();
      tape().backward(loss);
      opt.step(1e-2f);
      opt.zero_grad();
    }
    EXPECT_LT(last, 0.9 * first) << (dora ? "dora" : "lora");
    for (const auto& p : m->parameters()) {
      if (p.name.find("lora_") == std::string::npos) {
        EXPECT_FALSE(p.tensor.has_grad()) << p.name;
      }
    }

    // Merging keeps the function and removes the adapters.
    const std::vector<float> adapted = m->forward(ids).to_floats();
    merge_lora(*m);
    EXPECT_EQ(m->num_parameters(), base_params);
    const std::vector<float> merged = m->forward(ids).to_floats();
    for (size_t i = 0; i < adapted.size(); ++i) {
      ASSERT_NEAR(merged[i], adapted[i], 1e-4 + 1e-4 * std::abs(adapted[i])) << i;
    }
  }
}

// LoRA+: the optimizer moves every B at lambda times the learning rate. On
// AdamW's first step an update is lr * g / (|g| + eps), so B's change is
// exactly lambda times the plain LoRA run's, A's the same.
TEST(Lora, LoraPlusScalesTheLearningRateOfB) {
  std::vector<std::vector<float>> delta_b;
  for (float lambda : {1.f, 16.f}) {
    auto m = DecoderLM::create(test_card(), Device::cpu(), 3).value();
    LoraConfig cfg;
    cfg.r = 4;
    ASSERT_TRUE(apply_lora(*m, cfg).ok());
    const ParameterList trainable = trainable_parameters(*m);
    AdamW opt(trainable, AdamWConfig{1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f});
    EXPECT_EQ(opt.scale_lr(".lora_B.weight", lambda), 2 * 7);
    // B = 0 at the start, so A has no gradient on the first step; B moves.
    const Tensor ids = random_ids(2, 12, 61, 1), targets = random_ids(2, 12, 61, 2);
    std::vector<float> b0;
    for (const auto& p : trainable) {
      if (p.name == "model.layers.1.mlp.up_proj.lora_B.weight") b0 = p.tensor.to_floats();
    }
    tape().backward(m->loss(ids, targets));
    opt.step(1e-3f);
    opt.zero_grad();
    for (const auto& p : trainable) {
      if (p.name != "model.layers.1.mlp.up_proj.lora_B.weight") continue;
      std::vector<float> b1 = p.tensor.to_floats();
      for (size_t i = 0; i < b1.size(); ++i) b1[i] -= b0[i];
      delta_b.push_back(b1);
    }
  }
  ASSERT_EQ(delta_b.size(), 2u);
  double moved = 0;
  for (size_t i = 0; i < delta_b[0].size(); ++i) {
    EXPECT_NEAR(delta_b[1][i], 16.f * delta_b[0][i], 1e-6 + 1e-3 * std::abs(16.f * delta_b[0][i])) << i;
    moved += std::abs(delta_b[0][i]);
  }
  EXPECT_GT(moved, 0.0);
}

TEST(Lora, DropoutOnlyWhileTraining) {
  auto m = DecoderLM::create(test_card(), Device::cpu(), 3).value();
  LoraConfig cfg;
  cfg.r = 4;
  cfg.dropout = 0.5f;
  const LoraSummary s = apply_lora(*m, cfg).value();
  // Non-zero B so the adapter path contributes.
  for (const auto& p : m->parameters()) {
    if (p.name.find("lora_B") != std::string::npos) Tensor(p.tensor).copy_from(Tensor::full(p.tensor.shape(), 0.1f));
  }
  const Tensor ids = random_ids(1, 8, 61, 5);
  const std::vector<float> a = m->forward(ids).to_floats();
  s.runtime->step++;
  const std::vector<float> b = m->forward(ids).to_floats();
  EXPECT_NE(a, b);  // another mask
  s.runtime->training = false;
  const std::vector<float> c = m->forward(ids).to_floats();
  const std::vector<float> d = m->forward(ids).to_floats();
  EXPECT_EQ(c, d);
}

TEST(Lora, BadConfigsAndTargetsAreReported) {
  auto m = DecoderLM::create(test_card(), Device::cpu(), 3).value();
  LoraConfig cfg;
  cfg.r = 0;
  auto r = apply_lora(*m, cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("rank r = 0 must be positive"), std::string::npos);
  cfg = LoraConfig{};
  cfg.target_modules = {"qproj"};
  r = apply_lora(*m, cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("unknown target module 'qproj'"), std::string::npos);
  cfg = LoraConfig{};
  cfg.r = 2;
  cfg.target_modules = {"q_proj"};
  ASSERT_TRUE(apply_lora(*m, cfg).ok());
  r = apply_lora(*m, cfg);  // twice on the same slots
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("does not hold a dense linear layer"), std::string::npos)
      << r.error().message();
}

}  // namespace
}  // namespace el::finetune
