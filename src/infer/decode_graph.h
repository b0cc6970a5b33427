// decode_graph.h — one decode step of generation captured as a device graph
// and replayed with one launch per token.
//
// Why: at batch 1 a decode step of a 1B model is ~200 small kernels. Queued
// one by one from the op layer the host (~5 us per op) is slower than the GPU
// (~1 ms of weight reads per token), so the step is recorded once and then
// replayed (as gpt-fast and transformers' compiled static cache do). This
// works because a decode step has fixed shapes and addresses: the KV cache is
// allocated for the whole generation, positions live on the device
// (cache.positions, read by the kernels), and the step's input ids sit in a
// tensor of the graph (step_ids i32 [B, 1]).
//
// The captured step: logits = model.forward_cached(step_ids, cache) (T = 1),
// then for greedy decoding next = argmax_rows(logits) and next -> step_ids, and
// finally cache.positions += 1. So k greedy replays decode k tokens with no
// host work but reading `next` ([B] i32) for the stop checks; each replay
// queues that read behind it (Backend::read_later), so the host may queue the
// next replay before it reads this one's tokens and the GPU never waits for
// the host between steps (infer/generator.cpp looks one step ahead). Sampling
// (temperature / top-k / top-p) ends the graph at the logits: the host draws
// the tokens and set_tokens() them before the next replay.
//
// Capture runs nothing (the cache and positions are untouched by it), so on a
// failure the caller simply goes on eagerly. Requirements: a backend with
// graphs (Backend::supports_graphs) and, for greedy decoding, queued reads
// (Backend::supports_read_later), a cache that holds the prompt already
// (a decode step, not a prefill), and one eager decode step of the same
// shapes before capture (cuBLASLt plans autotune on their first call by
// timing on the GPU, which a capture forbids). The model and the cache must
// outlive the graph; everything the step reads that was allocated before
// capture (weights, cache, step_ids) is held by them or by the graph.
//
//   auto g = DecodeGraph::capture(model, cache, /*greedy=*/true);
//   g->set_tokens(next);                      // the last sampled tokens
//   while (...) { EL_TRY(g->replay()); EL_TRY_ASSIGN(next, g->tokens()); }
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "ops/backend.h"

namespace el::infer {

class DecodeGraph {
 public:
  // Records one decode step of `model` over `cache` (batch B = cache.batch).
  // Errors: a backend without graphs, an empty or full cache, a cache on
  // another device, or a capture that failed (the Error names the call).
  static Result<std::unique_ptr<DecodeGraph>> capture(const DecoderLM& model, KvCache& cache,
                                                      bool greedy);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // The next replay's input token of each row (B ids, host). Greedy replays
  // feed their own argmax back, so greedy decoding calls this once.
  void set_tokens(const std::vector<int32_t>& ids);
  // Queues one step: every row's cache grows by one token (the device
  // positions inside the graph, cache.host_positions here). Error when a
  // row's cache is full or the launch fails.
  Status replay();
  // Greedy: the tokens (B ids) of the oldest replay whose tokens are unread;
  // waits for that replay only and reports a device error recorded by then.
  // Error when every replay's tokens have been read. Replays may run ahead of
  // the reads by up to Backend::kReadLaterSlots.
  Result<std::vector<int32_t>> tokens();
  int64_t unread() const { return static_cast<int64_t>(unread_.size()); }
  // The last replay's logits [B, 1, V], valid until the next replay (the
  // graph writes the same buffer every time).
  const Tensor& logits() const { return logits_; }

  int64_t batch() const { return batch_; }
  bool greedy() const { return greedy_; }
  int64_t replays() const { return replays_; }

 private:
  DecodeGraph(Backend& backend, KvCache& cache, bool greedy);

  Backend& backend_;
  KvCache& cache_;
  bool greedy_;
  int64_t batch_;
  GraphHandle handle_ = 0;
  bool captured_ = false;
  int64_t replays_ = 0;
  Tensor step_ids_;  // i32 [B, 1]: the step's input, a fixed address
  Tensor logits_;    // [B, 1, V]: written by each replay (a block of the graph's pool)
  Tensor next_;      // i32 [B]: greedy only, the argmax of logits_
  std::deque<int64_t> unread_;  // greedy: the read_later tickets of next_, oldest first
};

}  // namespace el::infer
