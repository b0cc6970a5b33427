#include "infer/infer_bench.h"

#include <algorithm>
#include <cmath>

#include "metrics/stats.h"
#include "nn/kv_cache.h"
#include "ops/backend.h"

namespace el::infer {

int64_t decode_weight_bytes(const DecoderLM& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) {
    if (p.name == "model.embed_tokens.weight" && !model.card().tied_embeddings) continue;
    n += static_cast<int64_t>(p.tensor.nbytes());
  }
  return n;
}

namespace {
// Bytes of a mixture of experts' routed expert tensors (nn/moe.h:
// experts.gate_up_proj and experts.down_proj, [E, ...], dense or quantized);
// 0 for a dense card. A decode step reads only the experts its tokens are
// routed to: exactly k per layer at batch 1, between k and min(E, k B) at
// batch B, which depends on the routing.
int64_t routed_expert_bytes(const DecoderLM& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) {
    const auto ends = [&](const std::string& s) {
      return p.name.size() >= s.size() && p.name.compare(p.name.size() - s.size(), s.size(), s) == 0;
    };
    const bool quantized = ends(".qweight") || ends(".scales") || ends(".zeros");  // quant/quant_grouped.h
    const std::string base = quantized ? p.name.substr(0, p.name.rfind('.')) : p.name;
    const auto base_ends = [&](const std::string& x) {
      return base.size() >= x.size() && base.compare(base.size() - x.size(), x.size(), x) == 0;
    };
    if (base_ends(".experts.gate_up_proj") || base_ends(".experts.down_proj")) n += static_cast<int64_t>(p.tensor.nbytes());
  }
  return n;
}
}  // namespace

Result<InferBenchReport> run_infer_bench(const DecoderLM& model, const InferBenchConfig& config) {
  if (config.batch_sizes.empty() || config.prompt_len < 1 || config.gen_len < 1 ||
      config.repetitions < 1 || config.warmup < 0) {
    return make_error("batch_sizes must be non-empty, prompt_len, gen_len and repetitions >= 1",
                      "infer bench config");
  }
  InferBenchReport report;
  report.weight_bytes = decode_weight_bytes(model);
  const Device dev = model.device();
  if (!dev.is_cpu()) {
    if (metrics::DeviceMonitor* mon = metrics::device_monitor(dev.kind)) {
      report.device_name = mon->device_name(dev.index);
      report.datasheet_memory_gbps = mon->datasheet_memory_gbps(dev.index);
    }
  }
  const DType cache_dtype = config.cache_dtype.value_or(model.param_dtype());
  const int64_t kv_per_token = KvCache::bytes_per_sequence(model.card(), 1, cache_dtype);
  const ModelCard& card = model.card();
  const bool rwkv = card.block == ModelCard::Block::rwkv || card.block == ModelCard::Block::rwkv6;
  const bool recurrent = card.block == ModelCard::Block::mamba || rwkv;
  const int64_t expert_bytes = routed_expert_bytes(model);
  report.cache_kind = card.block == ModelCard::Block::mamba          ? "mamba_state"
                      : rwkv                                         ? "rwkv_state"
                      : card.attention == ModelCard::Attention::mla ? "mla_latent"
                                                                     : "kv";
  Rng rng(config.seed);
  for (int64_t B : config.batch_sizes) {
    if (B < 1) return make_error("batch sizes must be >= 1", "infer bench config: batch_sizes");
    // Before B prompts are drawn: a batch that cannot fit fails at once.
    EL_TRY(KvCache::check_fits(model.card(), B, config.prompt_len + config.gen_len, cache_dtype, dev));
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B));
    for (auto& p : prompts) {
      p.resize(static_cast<size_t>(config.prompt_len));
      for (auto& id : p) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(model.card().vocab_size)));
    }
    GenerationConfig g;
    g.max_new_tokens = config.gen_len;
    g.ignore_stop = true;
    g.cache_dtype = cache_dtype;
    g.use_graph = config.use_graph;
    g.look_ahead = config.look_ahead;
    EL_TRY(validate_generation(model.card(), prompts, g));
    for (int64_t w = 0; w < config.warmup; ++w) {
      Result<GenerationResult> warm = generate(model, prompts, g);
      if (!warm.ok()) return warm.error();
    }
    InferBatchResult r;
    r.batch = B;
    metrics::SamplerOptions so;
    so.device = dev;
    so.interval_ms = config.sample_interval_ms;
    metrics::Sampler sampler(so);
    EL_TRY(sampler.start());
    for (int64_t rep = 0; rep < config.repetitions; ++rep) {
      Result<GenerationResult> out = generate(model, prompts, g);
      if (!out.ok()) {
        sampler.stop();
        return out.error();
      }
      r.total_s.push_back(out->total_s);
      r.cache_bytes = out->cache_bytes;
      r.graph_note = out->graph_note;
      r.generated_tokens += out->generated_tokens();
      r.step_s.insert(r.step_s.end(), out->step_s.begin(), out->step_s.end());
      for (const auto& q : out->requests) {
        r.ttft_s.push_back(q.ttft_s);
        r.tpot_s.push_back(q.tpot_s());
        r.latency_s.push_back(q.latency_s);
      }
    }
    sampler.stop();
    r.samples = sampler.recording();
    r.memory_energy = metrics::summarize_samples(r.samples);
    double total = 0;
    for (double t : r.total_s) total += t;
    r.it_tokens_per_second = static_cast<double>(r.generated_tokens) / total;
    const metrics::Summary steps = metrics::summarize(r.step_s);
    if (steps.n > 0) {
      r.decode_tokens_per_second = static_cast<double>(B) / steps.mean;
      // Mean context over the decode steps: prompt + (gen_len) / 2 cached per row.
      const double mean_ctx = static_cast<double>(config.prompt_len) + static_cast<double>(config.gen_len) / 2.0;
      // block: mamba and rwkv keep a fixed-size state per row (kv_per_token
      // is the whole state): read and written once per step whatever the context.
      const double cached = recurrent ? 2.0 : mean_ctx + 1.0;
      // A mixture of experts reads k of its E experts per layer at batch 1;
      // at a larger batch the count depends on the routing, so no figure.
      double weights = static_cast<double>(report.weight_bytes);
      if (expert_bytes > 0) {
        weights = B == 1 ? weights - static_cast<double>(expert_bytes) * (card.moe_experts - card.moe_top_k) /
                                         card.moe_experts
                         : NAN;
      }
      r.decode_bytes_per_step = weights + static_cast<double>(B) * cached * static_cast<double>(kv_per_token);
      r.decode_gbps = r.decode_bytes_per_step / steps.median / 1e9;
      if (report.datasheet_memory_gbps && std::isfinite(r.decode_gbps)) {
        r.hbm_fraction = r.decode_gbps / *report.datasheet_memory_gbps;
      }
    }
    if (r.memory_energy.energy_j && r.generated_tokens > 0) {
      r.j_per_token = *r.memory_energy.energy_j / static_cast<double>(r.generated_tokens);
    }
    report.batches.push_back(std::move(r));
  }
  return report;
}

nlohmann::json to_json(const InferBenchConfig& c) {
  return {{"batch_sizes", c.batch_sizes}, {"prompt_len", c.prompt_len}, {"gen_len", c.gen_len},
          {"repetitions", c.repetitions}, {"warmup", c.warmup},         {"seed", c.seed},
          {"use_graph", c.use_graph},     {"look_ahead", c.look_ahead},
          {"sampling", "greedy"},         {"stop_tokens", "ignored (exactly gen_len new tokens)"}};
}

nlohmann::json to_json(const InferBenchReport& report) {
  nlohmann::json batches = nlohmann::json::array();
  for (const InferBatchResult& r : report.batches) {
    const char* no_bytes = r.step_s.empty() ? "no decode steps"
                                            : "a mixture of experts at batch > 1 reads only the experts its tokens "
                                              "are routed to (k to min(E, k x batch) per layer); not counted";
    nlohmann::json j = {
        {"batch", r.batch},
        {"it_tokens_per_second", r.it_tokens_per_second},
        {"decode_tokens_per_second", r.decode_tokens_per_second},
        {"generated_tokens", r.generated_tokens},
        {"ttft_s", metrics::to_json(metrics::summarize(r.ttft_s))},
        {"tpot_s", metrics::to_json(metrics::summarize(r.tpot_s))},
        {"latency_s", metrics::to_json(metrics::summarize(r.latency_s))},
        {"step_s", metrics::to_json(metrics::summarize(r.step_s))},
        // block: mamba / rwkv: the recurrent state (fixed size), not keys and values.
        {"kv_cache_bytes", r.cache_bytes},
        {"cache_kind", report.cache_kind},
        {"graph_note", r.graph_note},
        {"decode_bytes_per_step", metrics::json_number_or_null(r.decode_bytes_per_step)},
        {"decode_gbps", metrics::json_number_or_null(r.decode_gbps)},
        {"memory_energy", metrics::to_json(r.memory_energy)},
        {"raw", {{"total_s", r.total_s}, {"ttft_s", r.ttft_s}, {"tpot_s", r.tpot_s},
                 {"latency_s", r.latency_s}, {"step_s", r.step_s}, {"samples", metrics::to_json(r.samples)}}},
    };
    if (r.hbm_fraction) {
      j["hbm_fraction"] = *r.hbm_fraction;
    } else {
      j["hbm_fraction"] = nullptr;
      j["hbm_fraction_unavailable_reason"] =
          !report.datasheet_memory_gbps ? "no datasheet bandwidth for this device" : no_bytes;
    }
    if (!std::isfinite(r.decode_gbps)) j["decode_gbps_unavailable_reason"] = no_bytes;
    if (r.j_per_token) {
      j["j_per_token"] = *r.j_per_token;
    } else {
      j["j_per_token"] = nullptr;
      const auto it = r.memory_energy.unavailable_reasons.find("energy_j");
      j["j_per_token_unavailable_reason"] =
          it != r.memory_energy.unavailable_reasons.end() ? it->second : "no energy counter";
    }
    batches.push_back(std::move(j));
  }
  nlohmann::json out = {{"weight_bytes_per_step", report.weight_bytes}, {"batches", batches}};
  if (!report.device_name.empty()) out["device_name"] = report.device_name;
  if (report.datasheet_memory_gbps) {
    out["datasheet_memory_gbps"] = *report.datasheet_memory_gbps;
  } else {
    out["datasheet_memory_gbps"] = nullptr;
  }
  return out;
}

}  // namespace el::infer
