// cached_forward.h — the generation check of the model tests (and of the
// CUDA model tests, tests/cuda/cuda_model_util.h): a prefill of the first
// `prefill` tokens of each row, then one-token decode steps, all through
// DecoderLM::forward_cached with a KV cache, each step's logits against the
// full forward's at the same positions.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"

namespace el::test {

// The steps themselves: ids[B, T] (i32, host); full: the logits [B, T, V] of
// model.forward(ids); a cache of `cache_dtype` on the model's device.
// check(got, want, t0, t1) judges one step, positions [t0, t1) of every row:
// got the step's logits [B, t1 - t0, V] on the model's device, want the full
// forward's at the same positions, flattened. The first failure is returned.
template <class Check>
::testing::AssertionResult check_cached_steps(const DecoderLM& model, const Tensor& ids,
                                              const std::vector<double>& full, int64_t prefill,
                                              DType cache_dtype, Check check) {
  NoGrad no_grad;
  const int64_t B = ids.dim(0), T = ids.dim(1), V = model.card().vocab_size;
  KvCache cache = KvCache::create(model.card(), B, T, cache_dtype, model.device()).value();
  const std::vector<float> all = ids.to_floats();
  for (int64_t t0 = 0; t0 < T;) {
    const int64_t t1 = t0 == 0 ? prefill : t0 + 1;
    std::vector<int32_t> chunk;
    std::vector<double> want;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = t0; t < t1; ++t) {
        chunk.push_back(static_cast<int32_t>(all[b * T + t]));
        want.insert(want.end(), full.begin() + (b * T + t) * V, full.begin() + (b * T + t + 1) * V);
      }
    }
    const Tensor step = Tensor::from_ints(chunk, {B, t1 - t0}).to(model.device());
    const Tensor got = model.forward_cached(step, cache);
    cache.advance(static_cast<int32_t>(t1 - t0));
    ::testing::AssertionResult r = check(got, want, t0, t1);
    if (!r) return r;
    t0 = t1;
  }
  return ::testing::AssertionSuccess();
}

// ids[B, T] (i32, host); full: the logits [B, T, V] of model.forward(ids).
// Every logit within `tol` of the full forward's (f32 cache).
inline ::testing::AssertionResult cached_matches_full(const DecoderLM& model, const Tensor& ids,
                                                      const std::vector<double>& full,
                                                      int64_t prefill, Tolerance tol,
                                                      const std::string& what) {
  return check_cached_steps(
      model, ids, full, prefill, DType::f32,
      [&](const Tensor& got, const std::vector<double>& want, int64_t t0, int64_t t1) {
        return all_close(got.to_floats(), want, tol,
                         what + ", tokens [" + std::to_string(t0) + ", " + std::to_string(t1) +
                             ")");
      });
}

}  // namespace el::test
