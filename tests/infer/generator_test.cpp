// The generation engine (nn/kv_cache.h, DecoderLM::forward_cached,
// infer/generator.h, infer/sampler.h) against the plain forward.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "autograd/tape.h"
#include "common/test_cards.h"
#include "infer/generator.h"
#include "infer/sampler.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "ops/ops.h"

namespace el::infer {
namespace {

// Weights with a larger spread than the card's init so logits are far from
// uniform and greedy choices are not decided by rounding.
std::unique_ptr<DecoderLM> make_model(DType dtype = DType::f32, const std::string& extra = "qkv_bias: true\n",
                                      int max_seq_len = 32) {
  const ModelCard card =
      parse_model_card(test::small_card_yaml("gen", 48, 61, max_seq_len, extra), "gen.yaml").value();
  auto model = DecoderLM::create(card, Device::cpu(), 7, dtype).value();
  Rng rng(11);
  for (auto& p : model->parameters()) {
    Tensor t = p.tensor;  // a handle: init_normal writes the model's storage
    if (p.name.find("norm") == std::string::npos) init_normal(t, rng, 0.3f);
  }
  return model;
}

std::vector<float> last_logits_full(const DecoderLM& m, const std::vector<int32_t>& seq) {
  NoGrad ng;
  const int64_t T = static_cast<int64_t>(seq.size());
  const std::vector<float> all = m.forward(Tensor::from_ints(seq, {1, T})).to_floats();
  const int64_t V = m.card().vocab_size;
  return std::vector<float>(all.end() - V, all.end());
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(KvCacheTest, PrefillThenDecodeMatchesTheFullForward) {
  auto m = make_model();
  const std::vector<int32_t> seq = {3, 17, 42, 5, 9, 60, 1, 33, 12, 7};
  NoGrad ng;
  auto cache = KvCache::create(m->card(), 1, 16, DType::f32, Device::cpu()).value();
  const int64_t P = 4;
  Tensor logits = m->forward_cached(Tensor::from_ints({seq.begin(), seq.begin() + P}, {1, P}), cache);
  cache.advance(P);
  const int64_t V = m->card().vocab_size;
  // Prefill: every position equals the uncached forward.
  const std::vector<float> full = m->forward(Tensor::from_ints({seq.begin(), seq.begin() + P}, {1, P})).to_floats();
  const std::vector<float> got = logits.to_floats();
  ASSERT_EQ(got.size(), full.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], full[i], 1e-5f) << i;
  // Decode one token at a time (the cached-attention path).
  for (size_t t = P; t < seq.size(); ++t) {
    Tensor step = m->forward_cached(Tensor::from_ints({seq[t]}, {1, 1}), cache);
    cache.advance(1);
    const std::vector<float> want = last_logits_full(*m, {seq.begin(), seq.begin() + t + 1});
    const std::vector<float> have = step.to_floats();
    ASSERT_EQ(have.size(), static_cast<size_t>(V));
    for (int64_t i = 0; i < V; ++i) EXPECT_NEAR(have[i], want[i], 2e-5f) << "t " << t << " i " << i;
  }
}

TEST(KvCacheTest, ChunkedContinuationMatchesTheFullForward) {
  // A second multi-token chunk starting at position 5 (T > 1, not from zero).
  auto m = make_model();
  const std::vector<int32_t> seq = {3, 17, 42, 5, 9, 60, 1, 33};
  NoGrad ng;
  auto cache = KvCache::create(m->card(), 1, 8, DType::f32, Device::cpu()).value();
  m->forward_cached(Tensor::from_ints({seq.begin(), seq.begin() + 5}, {1, 5}), cache);
  cache.advance(5);
  const std::vector<float> got = m->forward_cached(Tensor::from_ints({seq.begin() + 5, seq.end()}, {1, 3}), cache).to_floats();
  const std::vector<float> full = m->forward(Tensor::from_ints(seq, {1, 8})).to_floats();
  const size_t V = static_cast<size_t>(m->card().vocab_size);
  for (size_t i = 0; i < 3 * V; ++i) EXPECT_NEAR(got[i], full[5 * V + i], 2e-5f) << i;
}

// Wraps a slot so that forward_stacked is unavailable: the per-slot path.
struct PassThrough final : LinearLayer {
  explicit PassThrough(std::unique_ptr<LinearLayer> in) : inner(std::move(in)) {}
  Tensor forward(const Tensor& x) const override { return inner->forward(x); }
  void collect_parameters(const std::string& p, ParameterList& out) const override { inner->collect_parameters(p, out); }
  int64_t in_features() const override { return inner->in_features(); }
  int64_t out_features() const override { return inner->out_features(); }
  std::unique_ptr<LinearLayer> inner;
};

TEST(GeneratorTest, GreedyEqualsArgmaxOfTheFullForwardOnBothProjectionPaths) {
  for (bool wrap : {false, true}) {
    auto m = make_model();
    if (wrap) {
      m->for_each_linear([](const std::string&, std::unique_ptr<LinearLayer>& slot) {
        slot = std::make_unique<PassThrough>(std::move(slot));
      });
      m->refresh_parameters();
    }
    const std::vector<int32_t> prompt = {5, 8, 13, 21};
    GenerationConfig g;
    g.max_new_tokens = 8;
    g.ignore_stop = true;
    auto out = generate(*m, {prompt}, g).value();
    ASSERT_EQ(out.requests.size(), 1u);
    std::vector<int32_t> seq = prompt, want;
    for (int i = 0; i < 8; ++i) {
      want.push_back(argmax(last_logits_full(*m, seq)));
      seq.push_back(want.back());
    }
    EXPECT_EQ(out.requests[0].tokens, want) << (wrap ? "per-slot path" : "stacked path");
    EXPECT_EQ(out.requests[0].finish_reason, "length");
    EXPECT_EQ(out.step_s.size(), 7u);
    EXPECT_GT(out.requests[0].latency_s, 0);
  }
}

TEST(GeneratorTest, RaggedBatchEqualsEachPromptAlone) {
  auto m = make_model();
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5, 6}, {9}, {40, 41, 42}};
  GenerationConfig g;
  g.max_new_tokens = 6;
  g.ignore_stop = true;
  auto batched = generate(*m, prompts, g).value();
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = generate(*m, {prompts[i]}, g).value();
    EXPECT_EQ(batched.requests[i].tokens, alone.requests[0].tokens) << "prompt " << i;
    EXPECT_EQ(batched.requests[i].prompt_tokens, static_cast<int64_t>(prompts[i].size()));
  }
}

TEST(GeneratorTest, Bf16CacheFollowsTheBf16Forward) {
  auto m = make_model(DType::bf16);
  const std::vector<int32_t> prompt = {5, 8, 13, 21, 34};
  GenerationConfig g;
  g.max_new_tokens = 4;
  g.ignore_stop = true;
  auto out = generate(*m, {prompt}, g).value();
  // The first token comes from the prefill (the training attention path), so
  // it must equal the full bf16 forward's argmax exactly.
  EXPECT_EQ(out.requests[0].tokens[0], argmax(last_logits_full(*m, prompt)));
  EXPECT_EQ(out.requests[0].tokens.size(), 4u);
}

TEST(GeneratorTest, StopTokensEndARowAndAreKept) {
  auto m = make_model();
  GenerationConfig g;
  g.max_new_tokens = 10;
  g.ignore_stop = true;
  auto free_run = generate(*m, {{5, 8, 13}}, g).value();
  const int32_t stop = free_run.requests[0].tokens[2];
  g.ignore_stop = false;
  g.stop_tokens = {stop};
  auto out = generate(*m, {{5, 8, 13}}, g).value();
  const auto& toks = out.requests[0].tokens;
  ASSERT_FALSE(toks.empty());
  EXPECT_EQ(toks.back(), stop);
  EXPECT_LE(toks.size(), 3u);
  EXPECT_EQ(out.requests[0].finish_reason, "stop");
}

TEST(GeneratorTest, PromptPastTheContextWindowIsAnErrorNamingTheLengths) {
  auto m = make_model(DType::f32, "qkv_bias: true\n", 16);
  GenerationConfig g;
  g.max_new_tokens = 8;
  auto r = generate(*m, {{1, 2, 3}, std::vector<int32_t>(12, 4)}, g);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("12 tokens"), std::string::npos) << r.error().what;
  EXPECT_NE(r.error().what.find("context window of 16"), std::string::npos) << r.error().what;
  EXPECT_NE(r.error().where.find("prompt 1"), std::string::npos);
  EXPECT_NE(r.error().hint.find("at most 8 tokens"), std::string::npos) << r.error().hint;
  EXPECT_FALSE(generate(*m, {{}}, g).ok());
  auto bad = generate(*m, {{1, 99}}, g);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().what.find("outside the vocabulary"), std::string::npos);
}

TEST(KvCacheTest, ACacheThatCannotFitSaysWhatWould) {
  auto m = make_model();
  auto r = KvCache::create(m->card(), int64_t{1} << 40, 16, DType::f32, Device::cpu());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("would fit"), std::string::npos) << r.error().what;
  EXPECT_NE(r.error().what.find("at most batch"), std::string::npos) << r.error().what;
  EXPECT_EQ(KvCache::bytes_per_sequence(m->card(), 16, DType::bf16), 2 * 2 * 16 * 2 * 8 * 2);
}

TEST(SamplerTest, FiltersAndSeeds) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f, NAN};
  SamplingConfig greedy;
  EXPECT_EQ(TokenSampler(greedy).sample_row(logits.data(), 5), 1);
  SamplingConfig k1{.temperature = 1.0f, .top_k = 1};
  EXPECT_EQ(TokenSampler(k1).sample_row(logits.data(), 5), 1);
  SamplingConfig p_small{.temperature = 1.0f, .top_p = 0.01f};
  EXPECT_EQ(TokenSampler(p_small).sample_row(logits.data(), 5), 1);
  // Frequencies follow softmax(logits / T) over top-k = 3 (ids 1, 2, 0).
  SamplingConfig c{.temperature = 0.7f, .top_k = 3, .seed = 5};
  TokenSampler s(c);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample_row(logits.data(), 5)];
  const double e1 = std::exp(3 / 0.7), e2 = std::exp(2 / 0.7), e0 = std::exp(1 / 0.7);
  EXPECT_NEAR(counts[1] / double(n), e1 / (e0 + e1 + e2), 0.02);
  EXPECT_NEAR(counts[0] / double(n), e0 / (e0 + e1 + e2), 0.02);
  EXPECT_EQ(counts.count(3), 0u);
  EXPECT_EQ(counts.count(4), 0u);  // NaN never drawn
  // Same seed, same draws.
  TokenSampler a(c), b(c);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample_row(logits.data(), 5), b.sample_row(logits.data(), 5));
  EXPECT_FALSE(validate_sampling({.temperature = -1}).ok());
  EXPECT_FALSE(validate_sampling({.top_p = 0}).ok());
  EXPECT_FALSE(validate_sampling({.top_k = -2}).ok());
}

}  // namespace
}  // namespace el::infer
