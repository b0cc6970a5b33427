// The RWKV-6 model (block: rwkv6, nn/rwkv6.h) built from cards. No
// transformers reference exists (RWKV-6 is remote code on the Hub), so these
// check the model against itself and the equations (the ops are checked
// against f64 loops in tests/ops/rwkv6_ops_test.cpp):
//  * parameter names and count_parameters against the built model;
//  * generation: prefill + token-by-token decode logits equal the full
//    forward, also for right-padded rows of different lengths;
//  * a gradient through the whole model against central differences;
//  * a few SGD steps on a fixed batch lower the loss;
//  * card validation errors name their field; the shipped cards build;
//    HF export is refused with a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "autograd/tape.h"
#include "common/cached_forward.h"
#include "common/model_test_util.h"
#include "common/ops_harness.h"
#include "io/hf_config.h"
#include "models/decoder_lm.h"
#include "models/hf_model.h"
#include "nn/kv_cache.h"

namespace el {
namespace {

using test::build_cpu_model;
using test::logit_rows;
using test::random_ids;

const char* kBase =
    "name: r6\nblock: rwkv6\nn_layer: 2\nd_model: 16\nvocab_size: 37\nmax_seq_len: 32\n"
    "init_std: 0.2\nrwkv6_head_size: 4\nrwkv6_time_mix_extra_dim: 3\n"
    "rwkv6_time_decay_extra_dim: 5\n";

ModelCard rwkv6_card(const std::string& extra = "") {
  auto r = parse_model_card(kBase + extra, "r6.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.value();
}

// The LoRA down-projections start at zero (the reference's init), which
// hides their path from a gradient or decode check: give every time_* matrix
// small values.
void perturb_loras(DecoderLM& m, uint64_t seed) {
  Rng rng(seed);
  NoGrad no_grad;
  for (const auto& p : m.parameters()) {
    if (p.name.find("_w1") == std::string::npos) continue;
    Tensor t = p.tensor;
    t.copy_from(test::random_tensor(t.shape(), rng, 0.3f));
  }
}

TEST(Rwkv6Model, NamesAndCountsMatchTheBuiltModel) {
  for (const std::string extra : {"", "d_ff: 40\n", "tied_embeddings: true\n"}) {
    const ModelCard c = rwkv6_card(extra);
    auto m = build_cpu_model(c);
    EXPECT_EQ(m->num_parameters(), count_parameters(c).total) << extra;
    EXPECT_EQ(m->num_embedding_parameters(), count_parameters(c).embedding) << extra;
    // The tensor list the engine's own files are checked against.
    const auto specs = decoder_lm_tensor_specs(c);
    const auto actual = io::hf_tensor_specs(m->parameters());
    ASSERT_EQ(specs.size(), actual.size()) << extra;
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(specs[i].name, actual[i].name) << extra;
      EXPECT_EQ(specs[i].shape, actual[i].shape) << specs[i].name;
    }
  }
  const ModelCard c = rwkv6_card();
  EXPECT_EQ(c.d_ff, 32);  // int(3.5 * 16) = 56, rounded down to a multiple of 32
  auto m = build_cpu_model(c);
  bool saw_maa = false, saw_ln_x = false, saw_pre_ln = false;
  for (const auto& p : m->parameters()) {
    saw_maa |= p.name == "model.layers.1.attention.time_maa_w2_g";
    saw_ln_x |= p.name == "model.layers.0.attention.ln_x.weight";
    saw_pre_ln |= p.name == "model.layers.0.pre_ln.weight";
    if (p.name == "model.layers.0.attention.ln_x.weight") {
      EXPECT_EQ(p.tensor.to_floats(), std::vector<float>(16, 1.f));  // not drawn by the init
    }
  }
  EXPECT_TRUE(saw_maa && saw_ln_x && saw_pre_ln);
}

TEST(Rwkv6Model, PrefillThenDecodeEqualsFullForward) {
  NoGrad no_grad;
  const ModelCard c = rwkv6_card();
  auto m = build_cpu_model(c);
  perturb_loras(*m, 3);
  const int64_t B = 2, T = 9, V = c.vocab_size;
  const Tensor ids = random_ids(B, T, V, 1);
  const std::vector<float> full = m->forward(ids).to_floats();
  std::vector<double> want(full.begin(), full.end());
  for (const int64_t prefill : {1, 4, 9}) {  // 1: every token decoded one at a time
    EXPECT_TRUE(test::cached_matches_full(*m, ids, want, prefill, {2e-5, 2e-5},
                                          "prefill " + std::to_string(prefill)));
  }
}

TEST(Rwkv6Model, RightPaddedPrefillKeepsEachRowsState) {
  NoGrad no_grad;
  const ModelCard c = rwkv6_card();
  auto m = build_cpu_model(c);
  perturb_loras(*m, 4);
  const int64_t T = 6;
  KvCache cache = KvCache::create(c, 2, T + 2, DType::f32, Device::cpu()).value();
  EXPECT_EQ(cache.rwkv_wkv[0].shape(), (Shape{2, 4, 4, 4}));
  EXPECT_EQ(cache.bytes(), 2 * KvCache::bytes_per_sequence(c, T + 2, DType::f32));
  test::expect_right_padded_prefill_keeps_rows(*m, cache);
  cache.reset();
  EXPECT_EQ(cache.rwkv_wkv[1].to_floats(), std::vector<float>(2 * 64, 0.f));
}

// Named tolerance of the whole-model check (f32 loss, central differences
// with step kEps): as RWKV-4's model test.
constexpr float kEps = 1e-2f;
constexpr double kAbsTol = 2e-3, kRelTol = 2e-2;

TEST(Rwkv6Model, GradientMatchesFiniteDifferences) {
  const ModelCard c = rwkv6_card("d_ff: 24\n");
  auto m = build_cpu_model(c, 9);
  perturb_loras(*m, 5);
  const Tensor ids = random_ids(2, 7, c.vocab_size, 5);
  const Tensor targets = random_ids(2, 7, c.vocab_size, 6);
  Tensor loss = m->loss(ids, targets);
  tape().backward(loss);
  int checked_params = 0;
  for (const auto& p : m->parameters()) {
    const bool checked = p.name.find("layers.1.") != std::string::npos ||
                         p.name.find("pre_ln") != std::string::npos;
    if (!checked) continue;
    ++checked_params;
    ASSERT_TRUE(p.tensor.has_grad()) << p.name;
    const std::vector<float> g = p.tensor.grad().to_floats();
    Tensor t = p.tensor;
    std::vector<float> v = t.to_floats();
    for (size_t i : {size_t{0}, v.size() / 2, v.size() - 1}) {
      const float keep = v[i];
      NoGrad no_grad;
      v[i] = keep + kEps;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double up = m->loss(ids, targets).item();
      v[i] = keep - kEps;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double down = m->loss(ids, targets).item();
      v[i] = keep;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double fd = (up - down) / (2 * kEps);
      EXPECT_NEAR(g[i], fd, kAbsTol + kRelTol * std::abs(fd)) << p.name << "[" << i << "]";
    }
  }
  EXPECT_GT(checked_params, 25);  // every kind of RWKV-6 parameter of layer 1
}

TEST(Rwkv6Model, TrainingStepsLowerTheLoss) {
  const ModelCard c = rwkv6_card();
  auto m = build_cpu_model(c, 13);
  const Tensor ids = random_ids(2, 12, c.vocab_size, 7);
  const Tensor targets = random_ids(2, 12, c.vocab_size, 8);
  double first = 0, last = 0;
  for (int step = 0; step < 12; ++step) {
    for (const auto& p : m->parameters()) Tensor(p.tensor).zero_grad();
    Tensor loss = m->loss(ids, targets);
    (step == 0 ? first : last) = loss.item();
    tape().backward(loss);
    NoGrad no_grad;
    for (const auto& p : m->parameters()) {
      if (!p.tensor.has_grad()) continue;
      Tensor t = p.tensor;
      std::vector<float> v = t.to_floats();
      const std::vector<float> g = t.grad().to_floats();
      for (size_t i = 0; i < v.size(); ++i) v[i] -= 0.5f * g[i];
      t.copy_from(Tensor::from_floats(v, t.shape()));
    }
  }
  EXPECT_LT(last, first - 0.3) << "first " << first << ", last " << last;
}

TEST(Rwkv6Card, ValidationErrorsNameTheField) {
  const std::pair<std::string, std::string> bad[] = {
      {"rwkv6_head_size: 5\n", "rwkv6_head_size"},       // 16 % 5 != 0
      {"rwkv6_head_size: 0\n", "rwkv6_head_size"},
      {"rwkv6_time_mix_extra_dim: 0\n", "rwkv6_time_mix_extra_dim"},
      {"rwkv6_time_decay_extra_dim: -1\n", "rwkv6_time_decay_extra_dim"},
      {"n_head: 4\n", "n_head"},
      {"norm: rmsnorm\n", "norm"},
      {"pos_encoding: rope\n", "pos_encoding"},
      {"rwkv_rescale_every: 2\n", "rwkv_rescale_every"},
      {"d_ff: 0\n", "d_ff"}};
  for (const auto& [extra, field] : bad) {
    auto r = parse_model_card(kBase + extra, "r6.yaml");
    ASSERT_FALSE(r.ok()) << extra;
    EXPECT_NE(r.error().message().find(field), std::string::npos)
        << extra << ": " << r.error().message();
  }
  auto other = parse_model_card(
      "name: t\nn_layer: 1\nd_model: 16\nn_head: 2\nd_ff: 32\nvocab_size: 8\nmax_seq_len: 8\n"
      "rwkv6_head_size: 4\n",
      "t.yaml");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message().find("rwkv6_head_size"), std::string::npos)
      << other.error().message();
  // The card round-trips through YAML with its rwkv6_* keys.
  const ModelCard c = rwkv6_card();
  auto again = parse_model_card(model_card_to_yaml(c), "again.yaml");
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->rwkv6_head_size, 4);
  EXPECT_EQ(again->rwkv6_time_mix_extra_dim, 3);
  EXPECT_EQ(again->rwkv6_time_decay_extra_dim, 5);
  EXPECT_EQ(again->d_ff, c.d_ff);
  // No HF export (transformers has no RWKV-6 class).
  auto json = io::hf_config_json(c, io::HfConfigExport{});
  ASSERT_FALSE(json.ok());
  EXPECT_NE(json.error().message().find("RWKV-6"), std::string::npos) << json.error().message();
}

TEST(Rwkv6Model, ShippedCardsValidateAndBuild) {
  const std::pair<const char*, int64_t> cards[] = {{"tiny-rwkv6", 1536512},
                                                   {"rwkv6-1.6b", 1599873024}};
  for (const auto& [name, params] : cards) {
    auto c = find_model_card(name);
    ASSERT_TRUE(c.ok()) << c.error().message();
    EXPECT_EQ(c->block, ModelCard::Block::rwkv6) << name;
    EXPECT_EQ(count_parameters(*c).total, params) << name;
    if (std::string(name) == "tiny-rwkv6") {
      auto m = build_cpu_model(*c);
      EXPECT_EQ(m->num_parameters(), params);
    }
  }
}

}  // namespace
}  // namespace el
