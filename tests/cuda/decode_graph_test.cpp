// decode_graph_test.cpp — decode steps replayed as a CUDA graph
// (infer/decode_graph.h, the CUDA backend's graph calls, the caching
// allocator's private pools).
//
// The graph runs the very kernels of an eager step on the same shapes, so
// greedy tokens and sampled tokens (fixed seed) must be identical with and
// without it: f32 and bf16, batch 1 and a ragged batch of 3. The pool tests
// check that no block the graph writes on replay is ever handed to anyone
// else: at the allocator (pointer identity, counters) and end to end (after
// capture, tensors allocated and filled with NaN all around the graph's
// blocks must not change a single replayed token).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "cuda_test_util.h"
#include "infer/decode_graph.h"
#include "infer/generator.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el::test {
namespace {

using infer::DecodeGraph;
using infer::GenerationConfig;
using infer::GenerationResult;

// Two model shapes: head dim 8 with q/k/v biases (SIMT attention, the bias
// path's broadcast GEMM inside the graph) and head dim 64 (bf16: the
// tensor-core attention), both with GQA.
std::string card_yaml(bool wide) {
  return fmt::format(R"(name: {}
n_layer: 2
d_model: {}
n_head: 4
n_kv_head: 2
d_ff: {}
vocab_size: {}
max_seq_len: 64
norm: rmsnorm
norm_eps: 1.0e-5
pos_encoding: rope
rope_theta: 10000
mlp: swiglu
tied_embeddings: {}
qkv_bias: {}
init_std: 0.02
)",
                     wide ? "graph_wide" : "graph_small", wide ? 256 : 32, wide ? 512 : 48,
                     wide ? 1000 : 61, wide ? "false" : "true", wide ? "false" : "true");
}

// Random weights with a spread that keeps logits far from uniform, so greedy
// choices are not decided by rounding.
std::unique_ptr<DecoderLM> make_model(DType dtype, bool wide) {
  const ModelCard card = parse_model_card(card_yaml(wide), "graph.yaml").value();
  auto model = DecoderLM::create(card, gpu(), 7, dtype).value();
  Rng rng(11);
  const float std = wide ? 0.08f : 0.3f;
  for (auto& p : model->parameters()) {
    Tensor t = p.tensor;
    if (p.name.find("norm") == std::string::npos) init_normal(t, rng, std);
  }
  return model;
}

const std::vector<std::vector<int32_t>>& prompts_of(int batch) {
  static const std::vector<std::vector<int32_t>> one = {{5, 8, 13, 21}};
  static const std::vector<std::vector<int32_t>> ragged = {{1, 2, 3, 4, 5, 6}, {9}, {40, 41, 42}};
  return batch == 1 ? one : ragged;
}

GenerationResult run(const DecoderLM& m, const std::vector<std::vector<int32_t>>& prompts,
                     GenerationConfig g, bool use_graph) {
  g.use_graph = use_graph;
  Result<GenerationResult> r = infer::generate(m, prompts, g);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : GenerationResult{};
}

void expect_same_tokens(const GenerationResult& graph, const GenerationResult& eager,
                        const std::string& what) {
  ASSERT_EQ(graph.requests.size(), eager.requests.size()) << what;
  for (size_t i = 0; i < eager.requests.size(); ++i) {
    EXPECT_EQ(graph.requests[i].tokens, eager.requests[i].tokens) << what << ", request " << i;
    EXPECT_EQ(graph.requests[i].finish_reason, eager.requests[i].finish_reason) << what;
  }
  EXPECT_EQ(graph.step_s.size(), eager.step_s.size()) << what;
}

TEST(DecodeGraphTest, GreedyTokensEqualEagerForF32AndBf16AtBatch1And3) {
  EL_REQUIRE_GPU();
  Allocator& alloc = *allocator_for(gpu()).value();
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const bool wide : {false, true}) {
      auto m = make_model(dt, wide);
      for (const int batch : {1, 3}) {
        const std::string what = fmt::format("{} {} batch {}", dtype_name(dt),
                                             wide ? "head dim 64" : "head dim 8", batch);
        GenerationConfig g;
        g.max_new_tokens = 12;
        g.ignore_stop = true;
        const GenerationResult eager = run(*m, prompts_of(batch), g, false);
        EXPECT_EQ(eager.graph_note, "eager: use_graph is off") << what;
        const int64_t live0 = alloc.stats().live_bytes;
        const GenerationResult graph = run(*m, prompts_of(batch), g, true);
        // 12 tokens: 1 from the prefill, 1 eager decode step, 10 replays.
        EXPECT_EQ(graph.graph_note, "graph: 10 steps replayed, queued one ahead") << what;
        EXPECT_GT(graph.graph_capture_s, 0.0) << what;
        expect_same_tokens(graph, eager, what);
        g.look_ahead = false;  // each step's tokens read before the next is queued
        const GenerationResult in_turn = run(*m, prompts_of(batch), g, true);
        EXPECT_EQ(in_turn.graph_note, "graph: 10 steps replayed") << what;
        expect_same_tokens(in_turn, eager, what + ", no look-ahead");
        // The graph, its pool and its outputs are all gone with the call.
        EXPECT_EQ(alloc.stats().live_bytes, live0) << what;
      }
    }
  }
}

TEST(DecodeGraphTest, StopTokensEndRowsTheSameWayWithAGraph) {
  EL_REQUIRE_GPU();
  auto m = make_model(DType::bf16, true);
  GenerationConfig g;
  g.max_new_tokens = 10;
  g.ignore_stop = true;
  const GenerationResult free_run = run(*m, prompts_of(3), g, false);
  g.ignore_stop = false;
  g.stop_tokens = {free_run.requests[1].tokens[4]};  // row 1 stops at its 5th token (or earlier)
  const GenerationResult eager = run(*m, prompts_of(3), g, false);
  const GenerationResult graph = run(*m, prompts_of(3), g, true);
  expect_same_tokens(graph, eager, "stop tokens");
  EXPECT_EQ(graph.requests[1].finish_reason, "stop");
  // Every row stops at once: the step queued ahead is read and dropped.
  g.stop_tokens = {free_run.requests[0].tokens[3], free_run.requests[1].tokens[3],
                   free_run.requests[2].tokens[3]};
  const GenerationResult eager_all = run(*m, prompts_of(3), g, false);
  const GenerationResult graph_all = run(*m, prompts_of(3), g, true);
  expect_same_tokens(graph_all, eager_all, "stop tokens in every row");
  for (const auto& r : graph_all.requests) EXPECT_EQ(r.finish_reason, "stop");
}

TEST(DecodeGraphTest, SampledTokensWithAFixedSeedEqualEager) {
  EL_REQUIRE_GPU();
  for (const DType dt : {DType::f32, DType::bf16}) {
    auto m = make_model(dt, true);
    for (const int batch : {1, 3}) {
      const std::string what = fmt::format("{} batch {}", dtype_name(dt), batch);
      GenerationConfig g;
      g.max_new_tokens = 10;
      g.ignore_stop = true;
      g.sampling.temperature = 0.8f;
      g.sampling.top_k = 50;
      g.sampling.top_p = 0.95f;
      g.sampling.seed = 99;
      const GenerationResult eager = run(*m, prompts_of(batch), g, false);
      const GenerationResult graph = run(*m, prompts_of(batch), g, true);
      EXPECT_EQ(graph.graph_note, "graph: 8 steps replayed") << what;
      expect_same_tokens(graph, eager, what);
    }
  }
}

TEST(DecodeGraphTest, ThePoolKeepsItsBlocksOutOfTheGeneralCache) {
  EL_REQUIRE_GPU();
  Allocator& a = *allocator_for(gpu()).value();
  const size_t small = 4096, large = size_t{3} << 20;  // blocks of 4 KiB and 4 MiB
  a.release_cache();
  const int id = a.begin_private_pool();
  ASSERT_GT(id, 0);
  EXPECT_THROW(a.begin_private_pool(), Exception);  // one pool at a time
  void* p1 = a.allocate(small).value();
  void* p2 = a.allocate(large).value();
  a.deallocate(p1, small);
  void* p3 = a.allocate(small).value();
  EXPECT_EQ(p3, p1);  // served from the pool's own free list
  a.deallocate(p3, small);
  a.end_private_pool();

  // Outside the pool: never one of its blocks, also after a member is freed
  // once the pool has ended.
  a.deallocate(p2, large);
  std::vector<std::pair<void*, size_t>> held;
  for (int i = 0; i < 8; ++i) {
    for (const size_t n : {small, large}) {
      void* q = a.allocate(n).value();
      EXPECT_NE(q, p1);
      EXPECT_NE(q, p2);
      held.emplace_back(q, n);
    }
  }
  for (const auto& [q, n] : held) a.deallocate(q, n);

  // The pool's free blocks stay reserved for it: release_cache() keeps them.
  a.release_cache();
  MemoryStats s = a.stats();
  EXPECT_EQ(s.reserved_bytes - s.live_bytes, static_cast<int64_t>(small + (size_t{4} << 20)));
  // Released (the graph is gone): they join the general cache and go with it.
  a.release_private_pool(id);
  a.release_cache();
  s = a.stats();
  EXPECT_EQ(s.reserved_bytes, s.live_bytes);
}

TEST(DecodeGraphTest, ReplaysAreUntouchedByTensorsAllocatedAfterCapture) {
  EL_REQUIRE_GPU();
  auto m = make_model(DType::bf16, true);
  const std::vector<int32_t> prompt = {5, 8, 13, 21};
  GenerationConfig g;
  g.max_new_tokens = 9;
  g.ignore_stop = true;
  const GenerationResult eager = run(*m, {prompt}, g, false);

  NoGrad ng;
  // The length generate() gives its cache (prompt + new tokens): the cached
  // attention splits keys by the cache length, so the sums match exactly.
  auto cache = KvCache::create(m->card(), 1, 4 + 9, DType::bf16, gpu()).value();
  Tensor logits = m->forward_cached(Tensor::from_ints(prompt, {1, 4}).to(gpu()), cache, {3});
  cache.set_positions({4});
  std::vector<int32_t> tokens = {eager.requests[0].tokens[0]};
  // One eager step (warms the GEMM plans), then the capture.
  logits = m->forward_cached(Tensor::from_ints(tokens, {1, 1}).to(gpu()), cache);
  cache.advance(1);
  const Tensor first = ops::argmax_rows(logits).to(Device::cpu());
  tokens = {first.data<int32_t>()[0]};
  auto graph = DecodeGraph::capture(*m, cache, /*greedy=*/true);
  ASSERT_TRUE(graph.ok()) << graph.error().message();
  // Blocks of every size the step uses, and more, all poisoned: if the
  // allocator handed out one the graph reads or writes, the tokens change.
  std::vector<Tensor> poison;
  for (int64_t n = 1; n <= (int64_t{1} << 22); n *= 2) {
    for (int rep = 0; rep < 3; ++rep) poison.push_back(poisoned({n + rep * 7}, DType::bf16));
  }
  (*graph)->set_tokens(tokens);
  std::vector<int32_t> got = {eager.requests[0].tokens[0], tokens[0]};
  for (int step = 0; step < 7; ++step) {
    ASSERT_TRUE((*graph)->replay().ok());
    got.push_back((*graph)->tokens().value()[0]);
    poison.push_back(poisoned({1000 + step}, DType::f32));  // allocations between replays too
  }
  EXPECT_EQ(got, eager.requests[0].tokens);
  EXPECT_EQ((*graph)->replays(), 7);
  EXPECT_EQ(cache.host_positions, std::vector<int32_t>{12});
  const Tensor pos = cache.positions.to(Device::cpu());
  EXPECT_EQ(pos.data<int32_t>()[0], 12);  // the graph advanced the device positions too
}

TEST(DecodeGraphTest, CaptureAndReplayErrorsSayWhat) {
  EL_REQUIRE_GPU();
  auto m = make_model(DType::f32, false);
  NoGrad ng;
  auto cache = KvCache::create(m->card(), 1, 6, DType::f32, gpu()).value();
  // A decode step follows a prefill.
  auto empty = DecodeGraph::capture(*m, cache, true);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().what.find("the KV cache is empty"), std::string::npos);
  const std::vector<int32_t> prompt = {5, 8, 13, 21};
  Tensor logits = m->forward_cached(Tensor::from_ints(prompt, {1, 4}).to(gpu()), cache, {3});
  cache.set_positions({4});
  logits = m->forward_cached(Tensor::from_ints({7}, {1, 1}).to(gpu()), cache);
  cache.advance(1);
  // Position 5 of 6: one replay fits, the second does not.
  auto graph = DecodeGraph::capture(*m, cache, true);
  ASSERT_TRUE(graph.ok()) << graph.error().message();
  (*graph)->set_tokens({7});
  ASSERT_TRUE((*graph)->replay().ok());
  ASSERT_TRUE((*graph)->tokens().ok());
  const Result<std::vector<int32_t>> none_left = (*graph)->tokens();
  ASSERT_FALSE(none_left.ok());
  EXPECT_NE(none_left.error().what.find("every replay's tokens have been read"), std::string::npos);
  const Status full = (*graph)->replay();
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.error().what.find("row 0 is at position 6 of a cache of 6"), std::string::npos)
      << full.error().message();
  auto no_room = DecodeGraph::capture(*m, cache, true);
  ASSERT_FALSE(no_room.ok());
  EXPECT_NE(no_room.error().what.find("no room"), std::string::npos);

  Backend& be = gpu_backend();
  EXPECT_TRUE(be.supports_graphs());
  const Result<GraphHandle> none = be.graph_end_capture();
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().what.find("without a capture"), std::string::npos);
  const Status unknown = be.graph_replay(987654);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().what.find("no graph 987654"), std::string::npos);
  be.graph_destroy(987654);  // ignored
}

TEST(DecodeGraphTest, AWaitInsideACaptureFailsItAndTheStreamStaysUsable) {
  EL_REQUIRE_GPU();
  Backend& be = gpu_backend();
  Tensor x = Tensor::zeros({256}, DType::f32, gpu());
  ASSERT_TRUE(be.graph_begin_capture().ok());
  const Status twice = be.graph_begin_capture();
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().what.find("already under way"), std::string::npos);
  be.fill(x, 2.0f);                                    // recorded, not run
  EXPECT_THROW(be.synchronize(), Exception);            // a wait: not allowed in a capture
  const Result<GraphHandle> h = be.graph_end_capture();
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().what.find("the graph capture failed"), std::string::npos)
      << h.error().message();
  EXPECT_NE(h.error().hint.find("eagerly first"), std::string::npos);
  // Nothing of the capture ran, and eager work goes on.
  EXPECT_EQ(x.to_floats()[0], 0.0f);
  be.fill(x, 3.0f);
  be.synchronize();
  EXPECT_EQ(x.to_floats()[255], 3.0f);

  // A clean capture of the same fill replays it.
  ASSERT_TRUE(be.graph_begin_capture().ok());
  be.fill(x, 5.0f);
  Result<GraphHandle> ok = be.graph_end_capture();
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(x.to_floats()[0], 3.0f);  // captured, not run
  ASSERT_TRUE(be.graph_replay(*ok).ok());
  EXPECT_EQ(x.to_floats()[0], 5.0f);
  be.graph_destroy(*ok);
  EXPECT_FALSE(be.graph_replay(*ok).ok());
}

}  // namespace
}  // namespace el::test
