#include "infer/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "infer/decode_graph.h"
#include "nn/kv_cache.h"
#include "ops/backend.h"

namespace el::infer {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double RequestResult::tpot_s() const {
  if (tokens.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  return (latency_s - ttft_s) / static_cast<double>(tokens.size() - 1);
}

int64_t GenerationResult::generated_tokens() const {
  int64_t n = 0;
  for (const auto& r : requests) n += static_cast<int64_t>(r.tokens.size());
  return n;
}

Status validate_generation(const ModelCard& card, const std::vector<std::vector<int32_t>>& prompts,
                           const GenerationConfig& config) {
  if (prompts.empty()) return make_error("no prompts to generate from", "generate");
  if (config.max_new_tokens < 1) {
    return make_error(fmt::format("max_new_tokens {} must be >= 1", config.max_new_tokens),
                      "generate: max_new_tokens");
  }
  EL_TRY(validate_sampling(config.sampling));
  int64_t window = card.max_seq_len;
  std::string window_what = "max_seq_len";
  if (card.sliding_window > 0 && card.sliding_window < window) {
    window = card.sliding_window;
    window_what = "sliding_window (no windowed attention in this engine)";
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    const std::string where = fmt::format("generate: prompt {}", i);
    if (p.empty()) return make_error("the prompt is empty (at least one token is needed)", where);
    for (size_t j = 0; j < p.size(); ++j) {
      if (p[j] < 0 || p[j] >= card.vocab_size) {
        return make_error(fmt::format("token {} at position {} is outside the vocabulary [0, {})", p[j],
                                      j, card.vocab_size),
                          where);
      }
    }
    const int64_t need = static_cast<int64_t>(p.size()) + config.max_new_tokens;
    if (need > window) {
      return make_error(
          fmt::format("the prompt has {} tokens; with {} new tokens it needs {} positions, more than "
                      "the model's context window of {} ({})",
                      p.size(), config.max_new_tokens, need, window, window_what),
          where,
          config.max_new_tokens < window
              ? fmt::format("shorten the prompt to at most {} tokens or lower --max-new-tokens to at most {}",
                            window - config.max_new_tokens,
                            std::max<int64_t>(window - static_cast<int64_t>(p.size()), 0))
              : fmt::format("lower --max-new-tokens to at most {}",
                            std::max<int64_t>(window - static_cast<int64_t>(p.size()), 0)));
    }
  }
  return Status();
}

Result<GenerationResult> generate(const DecoderLM& model,
                                  const std::vector<std::vector<int32_t>>& prompts,
                                  const GenerationConfig& config) {
  EL_TRY(validate_generation(model.card(), prompts, config));
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  const Device dev = model.device();
  const DType cache_dtype = config.cache_dtype.value_or(model.param_dtype());
  GenerationResult out;
  out.cache_len = longest + config.max_new_tokens;
  EL_TRY_ASSIGN(KvCache cache, KvCache::create(model.card(), B, out.cache_len, cache_dtype, dev));
  out.cache_bytes = cache.bytes();

  // Right-padded prompts [B, longest]; row b's last real token is lens[b] - 1.
  std::vector<int32_t> ids(static_cast<size_t>(B * longest), config.pad_id);
  std::vector<int32_t> lens(static_cast<size_t>(B)), last(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    std::copy(prompts[b].begin(), prompts[b].end(), ids.begin() + b * longest);
    lens[b] = static_cast<int32_t>(prompts[b].size());
    last[b] = lens[b] - 1;
  }
  out.requests.resize(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) out.requests[b].prompt_tokens = lens[b];

  NoGrad no_grad;
  TokenSampler sampler(config.sampling);
  std::vector<bool> done(static_cast<size_t>(B), false);
  int64_t remaining = B;
  auto take = [&](const std::vector<int32_t>& next, double t) {
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      RequestResult& r = out.requests[b];
      r.tokens.push_back(next[b]);
      if (r.tokens.size() == 1) r.ttft_s = t;
      r.latency_s = t;
      const bool stop = !config.ignore_stop && std::find(config.stop_tokens.begin(), config.stop_tokens.end(),
                                                         next[b]) != config.stop_tokens.end();
      if (stop || static_cast<int64_t>(r.tokens.size()) >= config.max_new_tokens) {
        r.finish_reason = stop ? "stop" : "length";
        done[b] = true;
        --remaining;
      }
    }
  };

  const double t0 = now_s();
  const Tensor prompt = Tensor::from_ints(ids, {B, longest}).to(dev);
  Tensor logits = model.forward_cached(prompt, cache, last);  // [B, 1, V]
  cache.set_positions(lens);
  std::vector<int32_t> next = sampler.sample(logits);
  double t = now_s() - t0;
  out.prefill_s = t;
  take(next, t);
  // Decode steps: the first eagerly; then, where the backend has graphs, the
  // step is captured once and replayed (same kernels, same tokens).
  const bool greedy = config.sampling.greedy();
  const bool look_ahead = greedy && config.look_ahead && config.profile_step == 0;
  bool try_graph = config.use_graph && backend_for(dev).supports_graphs();
  out.graph_note = !config.use_graph ? "eager: use_graph is off"
                   : try_graph       ? "eager: fewer than 2 decode steps (the graph is captured at the second)"
                                     : "eager: backend has no graphs";
  std::unique_ptr<DecodeGraph> graph;  // declared after the cache: destroyed before it
  int64_t steps = 0;
  // Tokens some unfinished row still needs after the current step's.
  const auto needed_after_this = [&] {
    int64_t most = 0;
    for (int64_t b = 0; b < B; ++b) {
      if (!done[b]) {
        most = std::max<int64_t>(most, config.max_new_tokens -
                                           static_cast<int64_t>(out.requests[b].tokens.size()) - 1);
      }
    }
    return most;
  };
  while (remaining > 0) {
    const bool profiled = config.profile_step == steps + 1;
    if (profiled) backend_for(dev).profiler_range(true);
    const double ts = now_s();
    if (try_graph && steps >= 1) {
      try_graph = false;
      Result<std::unique_ptr<DecodeGraph>> g = DecodeGraph::capture(model, cache, greedy);
      out.graph_capture_s = now_s() - ts;
      if (g.ok()) {
        graph = std::move(*g);
        graph->set_tokens(next);  // greedy replays feed their own tokens back after this
      } else {
        out.graph_note = "eager: " + g.error().message();
      }
    }
    if (graph && greedy) {
      if (graph->unread() == 0) EL_TRY(graph->replay());  // (else queued by the last step)
      if (look_ahead && needed_after_this() > 0) {
        EL_TRY(graph->replay());  // the next step, queued before this one's tokens are read
      }
      EL_TRY_ASSIGN(next, graph->tokens());
    } else if (graph) {
      if (graph->replays() > 0) graph->set_tokens(next);
      EL_TRY(graph->replay());
      next = sampler.sample(graph->logits());
    } else {
      const Tensor step_ids = Tensor::from_ints(next, {B, 1}).to(dev);
      logits = model.forward_cached(step_ids, cache);
      cache.advance(1);
      next = sampler.sample(logits);
    }
    if (profiled) backend_for(dev).profiler_range(false);
    ++steps;
    t = now_s() - t0;
    out.step_s.push_back(now_s() - ts);
    take(next, t);
  }
  if (graph) {
    // A stop token can leave a queued step unread: the call ends when it does.
    while (graph->unread() > 0) {
      const Result<std::vector<int32_t>> unused = graph->tokens();
      if (!unused.ok()) return unused.error();
    }
    out.graph_note = fmt::format("graph: {} steps replayed{}", graph->replays(),
                                 look_ahead ? ", queued one ahead" : "");
  }
  out.total_s = now_s() - t0;
  return out;
}

}  // namespace el::infer
