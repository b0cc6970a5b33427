// The decode-graph path on a backend without graphs (the CPU): generate()
// falls back to eager steps and says so, DecodeGraph::capture and the
// Backend/Allocator defaults refuse with a message naming the backend. The
// graph itself is tested on the GPU (tests/cuda/decode_graph_test.cpp).
#include <gtest/gtest.h>

#include "autograd/tape.h"
#include "common/test_cards.h"
#include "core/allocator.h"
#include "infer/decode_graph.h"
#include "infer/generator.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "ops/backend.h"

namespace el::infer {
namespace {

std::unique_ptr<DecoderLM> make_model() {
  const ModelCard card =
      parse_model_card(test::small_card_yaml("graph", 48, 61, 32, "qkv_bias: true\n"), "graph.yaml")
          .value();
  auto model = DecoderLM::create(card, Device::cpu(), 7, DType::f32).value();
  Rng rng(11);
  for (auto& p : model->parameters()) {
    Tensor t = p.tensor;
    if (p.name.find("norm") == std::string::npos) init_normal(t, rng, 0.3f);
  }
  return model;
}

TEST(DecodeGraphCpuTest, GenerateFallsBackToEagerAndSaysWhy) {
  auto m = make_model();
  const std::vector<std::vector<int32_t>> prompts = {{5, 8, 13, 21}, {9}, {40, 41, 42}};
  GenerationConfig g;
  g.max_new_tokens = 6;
  g.ignore_stop = true;
  ASSERT_TRUE(g.use_graph);  // on by default
  auto with = generate(*m, prompts, g).value();
  EXPECT_EQ(with.graph_note, "eager: backend has no graphs");
  EXPECT_EQ(with.graph_capture_s, 0.0);
  g.use_graph = false;
  auto without = generate(*m, prompts, g).value();
  EXPECT_EQ(without.graph_note, "eager: use_graph is off");
  ASSERT_EQ(with.requests.size(), without.requests.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(with.requests[i].tokens, without.requests[i].tokens) << "prompt " << i;
  }
  EXPECT_EQ(with.step_s.size(), 5u);
}

TEST(DecodeGraphCpuTest, CaptureOnTheCpuIsAnErrorNamingTheBackend) {
  auto m = make_model();
  auto cache = KvCache::create(m->card(), 1, 8, DType::f32, Device::cpu()).value();
  auto g = DecodeGraph::capture(*m, cache, /*greedy=*/true);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().what.find("backend cpu has no graphs"), std::string::npos) << g.error().message();
  EXPECT_EQ(g.error().where, "decode graph");
  EXPECT_EQ(cache.host_positions, std::vector<int32_t>{0});  // untouched
}

TEST(DecodeGraphCpuTest, BackendAndAllocatorDefaultsRefuseGraphs) {
  Backend& be = backend_for(Device::cpu());
  EXPECT_FALSE(be.supports_graphs());
  const Status begin = be.graph_begin_capture();
  ASSERT_FALSE(begin.ok());
  EXPECT_EQ(begin.error().what, "backend cpu has no graphs (graph_begin_capture is not supported)");
  EXPECT_EQ(begin.error().where, "cpu backend");
  EXPECT_NE(begin.error().hint.find("supports_graphs"), std::string::npos);
  const Result<GraphHandle> end = be.graph_end_capture();
  ASSERT_FALSE(end.ok());
  EXPECT_NE(end.error().what.find("graph_end_capture"), std::string::npos);
  const Status replay = be.graph_replay(3);
  ASSERT_FALSE(replay.ok());
  EXPECT_NE(replay.error().what.find("graph_replay"), std::string::npos);
  be.graph_destroy(3);  // ignored

  Allocator& a = cpu_allocator();
  EXPECT_EQ(a.begin_private_pool(), -1);
  a.end_private_pool();
  a.release_private_pool(-1);
  // Allocation is unaffected by the no-op pool calls.
  const Tensor t = Tensor::zeros({16}, DType::f32);
  EXPECT_EQ(t.to_floats()[3], 0.0f);
}

}  // namespace
}  // namespace el::infer
