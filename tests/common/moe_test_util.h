// moe_test_util.h — inputs of the mixture-of-experts tests (tests/ops,
// tests/quant, tests/cuda): router logits that no rounding or
// finite-difference step can reorder, random top-k routes, and the offsets of
// a grouping with given rows per expert.
#pragma once

#include <numeric>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace el::test {

// Logits [N, E]: each row a random permutation of step * (i - E / 2), plus
// uniform noise in [0, noise): any two experts of a row differ by more than
// step - noise. With noise 0 and step 0.25 the values are exact in bf16/f16
// for E <= 256.
inline Tensor separated_logits(int64_t n, int64_t e, Rng& rng, float step, float noise) {
  std::vector<float> v(static_cast<size_t>(n * e));
  std::vector<int64_t> perm(static_cast<size_t>(e));
  for (int64_t r = 0; r < n; ++r) {
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = e - 1; i > 0; --i) {
      std::swap(perm[i], perm[rng.below(static_cast<uint64_t>(i + 1))]);
    }
    for (int64_t i = 0; i < e; ++i) {
      v[r * e + i] = step * (static_cast<float>(perm[i]) - static_cast<float>(e / 2)) +
                     (noise > 0.f ? noise * rng.uniform() : 0.f);
    }
  }
  return Tensor::from_floats(v, {n, e});
}

// Routes [N, k] (row-major): k distinct experts per token, expert `skip`
// (if >= 0) never chosen, so it receives no token.
inline std::vector<int32_t> random_routes(int64_t n, int64_t e, int64_t k, Rng& rng,
                                          int64_t skip = -1) {
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(n * k));
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int32_t> pool;
    for (int64_t i = 0; i < e; ++i)
      if (i != skip) pool.push_back(static_cast<int32_t>(i));
    for (int64_t j = 0; j < k; ++j) {
      const size_t at = static_cast<size_t>(rng.below(pool.size()));
      ids.push_back(pool[at]);
      pool.erase(pool.begin() + static_cast<long>(at));
    }
  }
  return ids;
}

// Offsets i32 [E + 1] of a grouping with counts[e] rows for expert e.
inline Tensor offsets_of(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off{0};
  for (int32_t c : counts) off.push_back(off.back() + c);
  return Tensor::from_ints(off, {static_cast<int64_t>(off.size())});
}

}  // namespace el::test
