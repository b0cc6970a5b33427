// infer_bench.h — the inference axis' speed, memory and energy measurement.
//
// For each batch size: `warmup` untimed generations, then `repetitions`
// timed ones of `prompt_len` random prompt tokens (seeded, the same for
// every repetition) and exactly `gen_len` new tokens each (greedy, stop
// tokens ignored: the yardstick's min_new_tokens = max_new_tokens), with
// the Sampler recording memory, utilisation and energy around the timed
// repetitions. Reported, as the paper does and more (docs/METRICS.md):
//   it_tokens_per_second   B * gen_len / wall time of a generate call (the
//                          transformers yardstick's tok/s: prefill included)
//   decode_tokens_per_second  B / decode step time (steady state)
//   ttft_s, tpot_s, latency_s (AL per request): raw values per repetition
//                          and p50/p90/p99 summaries
//   memory_energy          AMU, peak, AEC (average power), energy
//   j_per_token            energy / generated tokens (null without a counter)
//   decode_bytes_per_step  weights read once per step (+ KV cache read and
//                          written at the mean context; a recurrent state
//                          read and written once), and the bandwidth
//                          this gives at the median step time, with its
//                          fraction of the datasheet peak when known. A
//                          mixture of experts reads k experts per layer at
//                          batch 1; at larger batches null with the reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/generator.h"
#include "metrics/sampler.h"
#include "models/decoder_lm.h"

namespace el::infer {

struct InferBenchConfig {
  std::vector<int64_t> batch_sizes = {1, 8, 32};
  int64_t prompt_len = 128;
  int64_t gen_len = 256;
  int64_t repetitions = 3;
  int64_t warmup = 1;
  uint64_t seed = 1234;
  int sample_interval_ms = 100;
  std::optional<DType> cache_dtype;  // default: the model's parameter dtype
  bool look_ahead = true;            // GenerationConfig::look_ahead
  bool use_graph = true;             // replay decode steps as a graph where the backend can
};

struct InferBatchResult {
  int64_t batch = 0;
  std::vector<double> total_s;    // one per repetition
  std::vector<double> ttft_s;     // per request, all repetitions
  std::vector<double> tpot_s;     // per request
  std::vector<double> latency_s;  // per request (AL per request)
  std::vector<double> step_s;     // every decode step of every repetition
  double it_tokens_per_second = 0;
  double decode_tokens_per_second = 0;
  int64_t generated_tokens = 0;   // over the timed repetitions
  int64_t cache_bytes = 0;
  double decode_bytes_per_step = 0;
  double decode_gbps = 0;                    // bytes per step / median step time
  std::optional<double> hbm_fraction;        // of the datasheet bandwidth
  metrics::MemoryEnergySummary memory_energy;
  metrics::SampleSet samples;
  std::optional<double> j_per_token;
  std::string graph_note;  // the last repetition's: "graph: N steps replayed" or "eager: why"
};

struct InferBenchReport {
  std::vector<InferBatchResult> batches;
  // What kv_cache_bytes holds: "kv" (keys and values), "mla_latent" (MLA's
  // one row per token), "mamba_state" / "rwkv_state" (the fixed-size
  // recurrent state of block: mamba / rwkv / rwkv6, nn/kv_cache.h).
  std::string cache_kind = "kv";
  int64_t weight_bytes = 0;  // bytes one decode step reads for the weights (a mixture of experts: all E)
  std::optional<double> datasheet_memory_gbps;
  std::string device_name;
};

// Bytes of the weights a decode step reads: every parameter except an
// untied input embedding (only B rows of it are gathered).
int64_t decode_weight_bytes(const DecoderLM& model);

Result<InferBenchReport> run_infer_bench(const DecoderLM& model, const InferBenchConfig& config);

nlohmann::json to_json(const InferBenchConfig& config);
// Summaries and raw samples; unmeasurable values null with a reason.
nlohmann::json to_json(const InferBenchReport& report);

}  // namespace el::infer
