// generator.h — batched generation with a KV cache: prefill, then one decode
// step per new token, with per-request timing.
//
// The requests of one call form one batch (row b = request b). Prompts of
// different lengths are right-padded into one prefill; each row's logits are
// taken at its own last prompt token and its cache position is set to its
// length, so the padding is overwritten by its own generated tokens and never
// attended to. Rows then decode in lockstep; a row that hit a stop token
// keeps its slot (its further tokens are discarded) until every row is done
// or max_new_tokens is reached.
//
// Timing is taken on the host after the tokens of a step are on the host (the
// step's work is finished), so TTFT and each step's time are real latencies a
// caller would see, including the sampling and the token transfer.
//
//   GenerationConfig g; g.max_new_tokens = 64; g.stop_tokens = {eos};
//   auto out = generate(model, {tok.encode("Hello")}, g);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "infer/sampler.h"
#include "models/decoder_lm.h"

namespace el::infer {

struct GenerationConfig {
  int64_t max_new_tokens = 128;
  SamplingConfig sampling;
  std::vector<int32_t> stop_tokens;  // generation of a row ends after one of these
  // Always generate max_new_tokens (stop tokens ignored): the benchmark's
  // min_new_tokens = max_new_tokens, as the transformers yardstick runs.
  bool ignore_stop = false;
  // The cache's dtype; default the model's parameter dtype (its activations).
  std::optional<DType> cache_dtype;
  int32_t pad_id = 0;  // fills the prefill's padding (never attended to)
  // On a backend with graphs (a GPU), decode steps after the first are
  // replayed as one captured graph each (infer/decode_graph.h): the first
  // step runs eagerly (it warms GEMM plans and the allocator), then the step
  // is captured. Tokens are the same as eager; a failed capture falls back
  // to eager steps (GenerationResult::graph_note says why).
  bool use_graph = true;
  // Greedy graph replays: queue step s + 1 before reading step s's tokens, so
  // the GPU does not idle while the host reads them and queues the next step
  // (a stop token then costs one wasted step). Off: each step's tokens are
  // read before the next is queued. Off while a step is profiled.
  bool look_ahead = true;
  // 1-based decode step bracketed by Backend::profiler_range, for an
  // external profiler started with capture off (ncu --profile-from-start
  // off); 0 = none. Step 1 is the eager one, later steps are replays.
  int64_t profile_step = 0;
};

struct RequestResult {
  std::vector<int32_t> tokens;  // generated tokens (a stop token that ended it included)
  std::string finish_reason;    // "stop" or "length"
  int64_t prompt_tokens = 0;
  double ttft_s = 0;     // call start -> first generated token on the host
  double latency_s = 0;  // call start -> last generated token on the host
  // Time per output token after the first: (latency - ttft) / (tokens - 1);
  // NaN for a single token.
  double tpot_s() const;
};

struct GenerationResult {
  std::vector<RequestResult> requests;
  double prefill_s = 0;             // the prefill forward + first sample
  // Each decode step (forward + sample), in order: from the host's read of
  // the previous token to its read of this one (with look_ahead the next step
  // is queued in between, so this is the GPU's time a step once it runs ahead).
  std::vector<double> step_s;
  double total_s = 0;
  int64_t cache_bytes = 0;
  int64_t cache_len = 0;            // positions per row the cache holds
  // How the decode steps ran: "graph: N steps replayed" or "eager: <reason>".
  std::string graph_note;
  // Seconds spent capturing the graph (also a capture that failed), inside
  // the step_s entry of the second decode step: a real cost of the call, so
  // a mean step time includes it once; 0 when no capture was tried.
  double graph_capture_s = 0;
  // Generated tokens of all rows, stop-truncated.
  int64_t generated_tokens() const;
};

// Checks before anything is allocated: non-empty prompts of ids inside the
// vocabulary, prompt + max_new_tokens within the model's context window
// (max_seq_len, and sliding_window when the card has one); errors name the
// request and the lengths.
Status validate_generation(const ModelCard& card, const std::vector<std::vector<int32_t>>& prompts,
                           const GenerationConfig& config);

Result<GenerationResult> generate(const DecoderLM& model,
                                  const std::vector<std::vector<int32_t>>& prompts,
                                  const GenerationConfig& config);

}  // namespace el::infer
