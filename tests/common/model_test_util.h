// model_test_util.h — small helpers the model tests (tests/models/) share:
// random token ids, a model built on the CPU, rows of a logits tensor.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "models/decoder_lm.h"

namespace el::test {

// ids i32 [B, T] uniform below `vocab` (Rng `seed`, one draw per id in row order).
inline Tensor random_ids(int64_t B, int64_t T, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  for (auto& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return Tensor::from_ints(ids, {B, T});
}

// `c` built on the CPU in f32 with `seed` (a test failure when it does not build).
inline std::unique_ptr<DecoderLM> build_cpu_model(const ModelCard& c, uint64_t seed = 5) {
  auto m = DecoderLM::create(c, Device::cpu(), seed);
  EXPECT_TRUE(m.ok()) << m.error().message();
  return std::move(m).value();
}

// Positions [t0, t1) of every row of logits `all` [B, T, V] (row-major), as f64.
inline std::vector<double> logit_rows(const std::vector<float>& all, int64_t B, int64_t T, int64_t V,
                                      int64_t t0, int64_t t1) {
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    out.insert(out.end(), all.begin() + (b * T + t0) * V, all.begin() + (b * T + t1) * V);
  return out;
}

}  // namespace el::test
