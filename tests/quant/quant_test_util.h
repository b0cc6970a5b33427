// quant_test_util.h — helpers of the quantization tests: random matrices,
// tiny models (tests/common/test_cards.h), slot access.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/test_cards.h"
#include "core/rng.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "quant/quant_linear.h"

namespace el::test {

inline std::vector<float> random_values(int64_t n, uint64_t seed, float scale = 1.f) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal() * scale;
  return v;
}

inline Tensor random_tensor(const Shape& shape, uint64_t seed, float scale = 1.f) {
  return Tensor::from_floats(random_values(shape_numel(shape), seed, scale), shape);
}

// The small test card with the lm_head untied (and optional q/k/v biases).
inline ModelCard untied_card(bool qkv_bias = false) {
  std::string yaml = small_card_yaml("untied");
  const std::string tied = "tied_embeddings: true";
  yaml.replace(yaml.find(tied), tied.size(), "tied_embeddings: false");
  if (qkv_bias) yaml += "qkv_bias: true\n";
  return parse_model_card(yaml, "untied.yaml").value();
}

inline std::unique_ptr<DecoderLM> make_model(const ModelCard& card, uint64_t seed = 7) {
  auto m = DecoderLM::create(card, Device::cpu(), seed, DType::f32);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message());
  return std::move(m.value());
}

// Random ids i32 [n, t] below vocab.
inline Tensor random_ids(int64_t n, int64_t t, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n * t));
  for (auto& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return Tensor::from_ints(ids, {n, t});
}

// Every slot's layer, by path, in for_each_linear order.
inline std::vector<std::pair<std::string, LinearLayer*>> slots_of(DecoderLM& model) {
  std::vector<std::pair<std::string, LinearLayer*>> out;
  model.for_each_linear([&](const std::string& path, std::unique_ptr<LinearLayer>& slot) {
    out.emplace_back(path, slot.get());
  });
  return out;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace el::test
