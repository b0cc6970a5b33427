// The RWKV-4 model (block: rwkv, nn/rwkv.h) built from cards:
//  * parameter names (transformers' under model.layers.{i}), count_parameters
//    and the FLOPs' projection term against the tensors a built model holds;
//  * generation: prefill + decode logits equal the full forward, also for
//    right-padded rows of different lengths (the states stop at each row's
//    last token) and for a cache in another dtype;
//  * a gradient through the whole model against central differences;
//  * the configs/models cards (tiny, lite, the 1.5B-scale one) validate and
//    build (the big one counted only).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "autograd/tape.h"
#include "common/cached_forward.h"
#include "common/model_test_util.h"
#include "common/ops_harness.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"

namespace el {
namespace {

using test::build_cpu_model;
using test::logit_rows;
using test::random_ids;

ModelCard rwkv_card(const std::string& extra = "") {
  auto r = parse_model_card("name: r\nblock: rwkv\nn_layer: 3\nd_model: 16\nvocab_size: 37\n"
                            "max_seq_len: 32\ninit_std: 0.2\n" + extra,
                            "r.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.value();
}

TEST(RwkvModel, NamesAndCountsMatchTheBuiltModel) {
  for (const std::string extra : {"", "d_ff: 40\nrwkv_attention_hidden_size: 8\n",
                                   "tied_embeddings: true\nrwkv_rescale_every: 1\n"}) {
    const ModelCard c = rwkv_card(extra);
    auto m = build_cpu_model(c);
    EXPECT_EQ(m->num_parameters(), count_parameters(c).total) << extra;
    EXPECT_EQ(m->num_embedding_parameters(), count_parameters(c).embedding) << extra;
    // The projections' FLOPs: 2 per weight element of every matrix but the
    // embedding (the head included; tied: the embedding is the head).
    double macs = 0;
    for (const auto& p : m->parameters()) {
      if (p.tensor.ndim() == 2 && p.name != "model.embed_tokens.weight") macs += p.tensor.numel();
    }
    if (c.tied_embeddings) macs += static_cast<double>(c.vocab_size) * c.d_model;
    const FlopsPerToken f = flops_per_token(c, 16);
    EXPECT_DOUBLE_EQ(f.matmul_forward, 2.0 * macs) << extra;
    EXPECT_DOUBLE_EQ(f.attention_forward, c.n_layer * 12.0 * (c.rwkv_attention_hidden_size > 0
                                                                 ? c.rwkv_attention_hidden_size
                                                                 : c.d_model));
    EXPECT_DOUBLE_EQ(f.formula_train, 6.0 * static_cast<double>(count_parameters(c).total));
  }
  auto m = build_cpu_model(rwkv_card());
  const ParameterList& p = m->parameters();
  EXPECT_EQ(p[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(p[1].name, "model.layers.0.pre_ln.weight");
  EXPECT_EQ(p[3].name, "model.layers.0.ln1.weight");
  EXPECT_EQ(p[7].name, "model.layers.0.attention.time_decay");
  EXPECT_EQ(p[9].name, "model.layers.0.attention.time_mix_key");
  EXPECT_EQ(p[9].tensor.shape(), (Shape{1, 1, 16}));
  EXPECT_EQ(p.back().name, "lm_head.weight");
  int linears = 0;
  m->for_each_linear([&](const std::string&, std::unique_ptr<LinearLayer>&) { ++linears; });
  EXPECT_EQ(linears, 3 * 7 + 1);  // 4 + 3 per layer, and the head
}

// The init is transformers' schedule: decays from -5 up, time_mix in [0, 1].
TEST(RwkvModel, InitFollowsTheSchedule) {
  auto m = build_cpu_model(rwkv_card());
  for (const auto& p : m->parameters()) {
    const std::vector<float> v = p.tensor.to_floats();
    if (p.name.find("time_mix") != std::string::npos) {
      for (float x : v) EXPECT_TRUE(x >= 0.f && x <= 1.3f) << p.name;
    }
    if (p.name == "model.layers.0.attention.time_decay") {
      EXPECT_FLOAT_EQ(v.front(), -5.f);
      EXPECT_FLOAT_EQ(v.back(), 3.f);
    }
    if (p.name.find(".ln1.weight") != std::string::npos) {
      EXPECT_EQ(v[0], 1.f) << p.name;
    }
  }
}

TEST(RwkvModel, PrefillThenDecodeEqualsFullForward) {
  NoGrad no_grad;
  const ModelCard c = rwkv_card("rwkv_attention_hidden_size: 12\nrwkv_rescale_every: 2\n");
  auto m = build_cpu_model(c);
  const int64_t B = 2, T = 9, V = c.vocab_size;
  const Tensor ids = random_ids(B, T, V, 1);
  const std::vector<float> full = m->forward(ids).to_floats();
  std::vector<double> want(full.begin(), full.end());
  for (const int64_t prefill : {1, 4, 9}) {
    EXPECT_TRUE(test::cached_matches_full(*m, ids, want, prefill, {2e-5, 2e-5},
                                          "prefill " + std::to_string(prefill)));
  }
}

// Rows of 6 and 3 real tokens in one right-padded prefill: each row's last
// logits and its continuation equal the row run alone.
TEST(RwkvModel, RightPaddedPrefillKeepsEachRowsState) {
  const ModelCard c = rwkv_card();
  auto m = build_cpu_model(c);
  KvCache cache = KvCache::create(c, 2, 8, DType::f32, Device::cpu()).value();
  test::expect_right_padded_prefill_keeps_rows(*m, cache);
}

// A bf16 model with an f32 cache (the shift rows convert both ways).
TEST(RwkvModel, CacheInAnotherDtype) {
  NoGrad no_grad;
  const ModelCard c = rwkv_card();
  auto m = DecoderLM::create(c, Device::cpu(), 5, DType::bf16).value();
  const Tensor ids = random_ids(1, 4, c.vocab_size, 4);
  KvCache same = KvCache::create(c, 1, 4, DType::bf16, Device::cpu()).value();
  KvCache wide = KvCache::create(c, 1, 4, DType::f32, Device::cpu()).value();
  EXPECT_EQ(m->forward_cached(ids, same).to_floats(), m->forward_cached(ids, wide).to_floats());
  EXPECT_EQ(wide.bytes(), KvCache::bytes_per_sequence(c, 4, DType::f32));
  EXPECT_EQ(KvCache::bytes_per_sequence(c, 4, DType::f32), KvCache::bytes_per_sequence(c, 4000, DType::f32));
  wide.reset();
  EXPECT_EQ(wide.rwkv_att_shift[0].to_floats(), std::vector<float>(16, 0.f));
  EXPECT_EQ(wide.rwkv_wkv[1].to_floats()[2 * 16], -1e38f);
}

// d loss / d (a few entries of each kind of parameter) against central
// differences of the loss through the whole model.
TEST(RwkvModel, GradientMatchesFiniteDifferences) {
  const ModelCard c = rwkv_card("rwkv_attention_hidden_size: 8\nd_ff: 24\n");
  auto m = build_cpu_model(c, 9);
  const Tensor ids = random_ids(2, 7, c.vocab_size, 5);
  const Tensor targets = random_ids(2, 7, c.vocab_size, 6);
  Tensor loss = m->loss(ids, targets);
  tape().backward(loss);
  for (const auto& p : m->parameters()) {
    const bool checked = p.name.find("layers.1.") != std::string::npos ||
                         p.name.find("pre_ln") != std::string::npos;
    if (!checked) continue;
    ASSERT_TRUE(p.tensor.has_grad()) << p.name;
    const std::vector<float> g = p.tensor.grad().to_floats();
    Tensor t = p.tensor;
    std::vector<float> v = t.to_floats();
    for (size_t i : {size_t{0}, v.size() / 2, v.size() - 1}) {
      const float keep = v[i], eps = 1e-2f;
      NoGrad no_grad;
      v[i] = keep + eps;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double up = m->loss(ids, targets).item();
      v[i] = keep - eps;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double down = m->loss(ids, targets).item();
      v[i] = keep;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(g[i], fd, 2e-3 + 2e-2 * std::abs(fd)) << p.name << "[" << i << "]";
    }
  }
}

TEST(RwkvModel, ShippedCardsValidateAndBuild) {
  // The counts the cards' comments state.
  const std::pair<const char*, int64_t> cards[] = {
      {"tiny-rwkv", 1477888}, {"lite-rwkv", 344207360}, {"rwkv-1.5b", 1540824576}};
  for (const auto& [name, params] : cards) {
    auto c = find_model_card(name);
    ASSERT_TRUE(c.ok()) << c.error().message();
    EXPECT_EQ(c->block, ModelCard::Block::rwkv) << name;
    EXPECT_EQ(count_parameters(*c).total, params) << name;
    if (std::string(name) == "rwkv-1.5b") {
      // Within 5% of the Transformer it is compared with (qwen2.5-1.5b).
      const ModelCard q = find_model_card("qwen2.5-1.5b").value();
      const double ratio = static_cast<double>(count_parameters(*c).total) /
                           static_cast<double>(count_parameters(q).total);
      EXPECT_NEAR(ratio, 1.0, 0.05) << count_parameters(*c).total;
      continue;
    }
    auto m = build_cpu_model(*c);
    EXPECT_EQ(m->num_parameters(), count_parameters(*c).total) << name;
  }
}

}  // namespace
}  // namespace el
