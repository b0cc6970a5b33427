// The inference bench's byte accounting per model family (infer/infer_bench.h):
// what kv_cache_bytes holds (cache_kind) and the bytes a decode step moves —
// keys and values at the mean context for attention, the fixed-size state
// read and written once for Mamba and RWKV, k of E experts at batch 1 for a
// mixture of experts and no figure (null with the reason) at larger batches.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/test_cards.h"
#include "infer/infer_bench.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"

namespace el::infer {
namespace {

ModelCard card_of(const std::string& yaml) {
  auto r = parse_model_card(yaml, "c.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.value();
}

InferBenchConfig small_bench() {
  InferBenchConfig c;
  c.batch_sizes = {1, 2};
  c.prompt_len = 4;
  c.gen_len = 3;
  c.repetitions = 1;
  c.warmup = 0;
  c.sample_interval_ms = 5;
  return c;
}

struct Case {
  const char* name;
  std::string yaml;
  const char* kind;
};

TEST(InferBench, DecodeBytesPerFamily) {
  const Case cases[] = {
      {"dense", test::small_card_yaml("d", 48, 61, 16), "kv"},
      {"moe", test::small_card_yaml("e", 48, 61, 16, "moe_experts: 4\nmoe_top_k: 2\n"), "kv"},
      {"mamba", "name: m\nblock: mamba\nn_layer: 2\nd_model: 12\nvocab_size: 29\nmax_seq_len: 16\n", "mamba_state"},
      {"rwkv", "name: r\nblock: rwkv\nn_layer: 2\nd_model: 16\nvocab_size: 37\nmax_seq_len: 16\n", "rwkv_state"}};
  const InferBenchConfig cfg = small_bench();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const ModelCard card = card_of(c.yaml);
    auto model = DecoderLM::create(card, Device::cpu(), 3).value();
    auto r = run_infer_bench(*model, cfg);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->cache_kind, c.kind);
    const double per_seq1 = static_cast<double>(KvCache::bytes_per_sequence(card, 1, DType::f32));
    const bool recurrent = card.block != ModelCard::Block::transformer;
    const double mean_ctx = cfg.prompt_len + cfg.gen_len / 2.0;
    ASSERT_EQ(r->batches.size(), 2u);
    for (const InferBatchResult& b : r->batches) {
      SCOPED_TRACE(b.batch);
      // A recurrent model's cache is its state: the same at any length.
      if (recurrent) {
        EXPECT_EQ(b.cache_bytes, b.batch * static_cast<int64_t>(per_seq1));
      }
      const double cached = recurrent ? 2.0 : mean_ctx + 1.0;
      double weights = static_cast<double>(r->weight_bytes);
      if (card.moe_experts > 0) {
        if (b.batch > 1) {  // the experts read depend on the routing: no figure
          EXPECT_TRUE(std::isnan(b.decode_bytes_per_step));
          EXPECT_TRUE(std::isnan(b.decode_gbps));
          continue;
        }
        // Batch 1: 2 of the 4 experts of each layer ([E, 2F, C] + [E, C, F] floats).
        const double experts = card.n_layer * 4.0 * 3.0 * card.d_ff * card.d_model * 4.0;
        weights -= experts / 2.0;
      }
      EXPECT_DOUBLE_EQ(b.decode_bytes_per_step, weights + b.batch * cached * per_seq1);
      EXPECT_GT(b.decode_gbps, 0);
    }
    const nlohmann::json j = to_json(r.value());
    EXPECT_EQ(j["batches"][0]["cache_kind"], c.kind);
    if (card.moe_experts > 0) {
      EXPECT_TRUE(j["batches"][1]["decode_gbps"].is_null());
      EXPECT_NE(j["batches"][1]["decode_gbps_unavailable_reason"].get<std::string>().find("routed"),
                std::string::npos);
    }
  }
}

}  // namespace
}  // namespace el::infer
