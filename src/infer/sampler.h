// sampler.h — choosing the next token from logits: greedy, temperature,
// top-k and top-p (nucleus), seeded.
//
// Greedy runs on the logits' device (ops::argmax_rows: no [B, V] copy to the
// host, so a GPU decode step moves B integers, not B x V floats). The other
// modes copy each row to the host in f32 and draw from the filtered
// distribution with the Sampler's own Rng, so a seed reproduces a run on any
// backend up to the logits' rounding. Order of filters as in transformers:
// temperature, then top-k, then top-p over what top-k kept.
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace el::infer {

struct SamplingConfig {
  float temperature = 0.0f;  // 0: greedy (top_k and top_p ignored)
  int64_t top_k = 0;         // 0: no top-k filter
  float top_p = 1.0f;        // 1: no nucleus filter; (0, 1]
  uint64_t seed = 1234;
  bool greedy() const { return temperature <= 0.0f; }
};

// Temperature >= 0 and finite, top_k >= 0, top_p in (0, 1]; errors name the field.
Status validate_sampling(const SamplingConfig& c);

class TokenSampler {
 public:
  explicit TokenSampler(const SamplingConfig& config);
  // One token per row of logits[B, V] (or [B, 1, V]), on the host.
  std::vector<int32_t> sample(const Tensor& logits);
  // The same for one row on the host (exposed for tests).
  int32_t sample_row(const float* logits, int64_t vocab);

 private:
  SamplingConfig config_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace el::infer
