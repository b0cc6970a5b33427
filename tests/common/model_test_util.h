// model_test_util.h — small helpers the model tests (tests/models/) share:
// random token ids, a model built on the CPU, rows of a logits tensor, the
// right-padded prefill check of the recurrent families.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "core/rng.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"

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

// Rows of 6 and 3 real tokens in one right-padded prefill through `cache`
// (2 rows, at least 8 positions, empty): each row's last logits and one
// decode step after it equal the row run alone (model.forward), within
// 2e-5. Ids: Rng seeds 2 and 3 below the card's vocabulary.
inline void expect_right_padded_prefill_keeps_rows(const DecoderLM& m, KvCache& cache) {
  NoGrad no_grad;
  const ModelCard& c = m.card();
  const int64_t T = 6;
  const Tensor a = random_ids(1, T, c.vocab_size, 2), b = random_ids(1, 3, c.vocab_size, 3);
  std::vector<int32_t> padded(a.data<int32_t>(), a.data<int32_t>() + T);
  padded.insert(padded.end(), b.data<int32_t>(), b.data<int32_t>() + 3);
  padded.insert(padded.end(), {7, 7, 7});  // padding
  const std::vector<float> last =
      m.forward_cached(Tensor::from_ints(padded, {2, T}), cache, {5, 2}).to_floats();
  cache.set_positions({6, 3});
  const std::vector<int32_t> next = {11, 19};
  const std::vector<float> step = m.forward_cached(Tensor::from_ints(next, {2, 1}), cache).to_floats();
  const int64_t V = c.vocab_size;
  for (int r = 0; r < 2; ++r) {
    const Tensor alone = r == 0 ? a : b;
    const int64_t n = alone.dim(1);
    std::vector<int32_t> seq(alone.data<int32_t>(), alone.data<int32_t>() + n);
    seq.push_back(next[r]);
    const std::vector<float> ref = m.forward(Tensor::from_ints(seq, {1, n + 1})).to_floats();
    const std::vector<float> got_last(last.begin() + r * V, last.begin() + (r + 1) * V);
    const std::vector<float> got_step(step.begin() + r * V, step.begin() + (r + 1) * V);
    EXPECT_TRUE(all_close(got_last, logit_rows(ref, 1, n + 1, V, n - 1, n), {2e-5, 2e-5},
                          "row " + std::to_string(r) + " prefill"));
    EXPECT_TRUE(all_close(got_step, logit_rows(ref, 1, n + 1, V, n, n + 1), {2e-5, 2e-5},
                          "row " + std::to_string(r) + " decode"));
  }
}

}  // namespace el::test
