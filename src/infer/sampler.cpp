#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "ops/ops.h"

namespace el::infer {

Status validate_sampling(const SamplingConfig& c) {
  if (!std::isfinite(c.temperature) || c.temperature < 0) {
    return make_error(fmt::format("temperature {} must be finite and >= 0 (0 = greedy)", c.temperature),
                      "sampling: temperature");
  }
  if (c.top_k < 0) return make_error(fmt::format("top_k {} must be >= 0 (0 = off)", c.top_k), "sampling: top_k");
  if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) {
    return make_error(fmt::format("top_p {} must be in (0, 1] (1 = off)", c.top_p), "sampling: top_p");
  }
  return Status();
}

TokenSampler::TokenSampler(const SamplingConfig& config) : config_(config), rng_(config.seed) {}

std::vector<int32_t> TokenSampler::sample(const Tensor& logits) {
  const int64_t vocab = logits.dim(-1), rows = logits.numel() / vocab;
  if (config_.greedy()) {
    const Tensor ids = ops::argmax_rows(logits.view({rows, vocab}));
    const Tensor host = ids.to(Device::cpu());
    return std::vector<int32_t>(host.data<int32_t>(), host.data<int32_t>() + rows);
  }
  const std::vector<float> values = logits.to_floats();
  std::vector<int32_t> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) out[r] = sample_row(values.data() + r * vocab, vocab);
  return out;
}

int32_t TokenSampler::sample_row(const float* logits, int64_t vocab) {
  if (config_.greedy()) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
    }
    return static_cast<int32_t>(best);
  }
  // (scaled logit, id) sorted by logit, largest first; NaN logits never drawn.
  scratch_.clear();
  const float inv_t = 1.0f / config_.temperature;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isnan(logits[i])) scratch_.emplace_back(logits[i] * inv_t, static_cast<int32_t>(i));
  }
  if (scratch_.empty()) return 0;
  const size_t keep_k = config_.top_k > 0 ? std::min<size_t>(config_.top_k, scratch_.size())
                                          : scratch_.size();
  auto by_value = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::partial_sort(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(keep_k), scratch_.end(), by_value);
  scratch_.resize(keep_k);
  // Softmax over what top-k kept (f64 sums: a 150k vocabulary in f32 loses the tail).
  const double mx = scratch_.front().first;
  std::vector<double> p(scratch_.size());
  double total = 0;
  for (size_t i = 0; i < scratch_.size(); ++i) total += (p[i] = std::exp(static_cast<double>(scratch_[i].first) - mx));
  size_t keep = scratch_.size();
  if (config_.top_p < 1.0f) {
    // The smallest prefix whose mass reaches top_p (the token that crosses it included).
    double mass = 0;
    for (size_t i = 0; i < scratch_.size(); ++i) {
      mass += p[i] / total;
      if (mass >= config_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_total = 0;
  for (size_t i = 0; i < keep; ++i) kept_total += p[i];
  const double u = static_cast<double>(rng_.uniform()) * kept_total;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

}  // namespace el::infer
