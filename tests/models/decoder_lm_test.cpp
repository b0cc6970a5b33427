// Tests of the decoder LM: parameter count against allocated tensors, FLOPs,
// shapes, naming, determinism, and that a few optimizer steps reduce the loss.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "common/model_test_util.h"
#include "common/test_cards.h"
#include "models/decoder_lm.h"
#include "ops/ops.h"
#include "train/optimizer.h"

namespace el {
namespace {

using test::random_ids;

ModelCard test_card(const std::string& extra = "") { return test::small_card("qkv_bias: false\n" + extra); }

TEST(DecoderLM, ParameterCountMatchesAllocatedTensors) {
  for (const std::string variant : {"", "untied"}) {
    ModelCard card = test_card();
    if (variant == "untied") {
      card.tied_embeddings = false;
      card.qkv_bias = true;
      card.norm = ModelCard::Norm::layernorm;
      card.mlp = ModelCard::Mlp::gelu;
    }
    auto model = DecoderLM::create(card, Device::cpu(), 1).value();
    int64_t allocated = 0;
    for (const auto& p : model->parameters()) allocated += p.tensor.numel();
    EXPECT_EQ(allocated, count_parameters(card).total) << variant;
    EXPECT_EQ(model->num_parameters(), allocated);
    EXPECT_EQ(model->num_embedding_parameters(), count_parameters(card).embedding);
  }
}

TEST(DecoderLM, BuiltinCardCountsAreAnalytic) {
  // The paper's Qwen2.5-0.5B shape: transformers reports 494,032,768 parameters.
  auto card = find_model_card("qwen2.5-0.5b");
  ASSERT_TRUE(card.ok()) << card.error().message();
  EXPECT_EQ(count_parameters(card.value()).total, 494032768);
}

TEST(DecoderLM, UsesTransformersNames) {
  auto model = DecoderLM::create(test_card(), Device::cpu(), 1).value();
  const auto& p = model->parameters();
  EXPECT_EQ(p.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(p[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(p[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(p.back().name, "model.norm.weight");
}

TEST(DecoderLM, ForwardShapeAndDeterminism) {
  auto a = DecoderLM::create(test_card(), Device::cpu(), 7).value();
  auto b = DecoderLM::create(test_card(), Device::cpu(), 7).value();
  Tensor ids = random_ids(2, 9, 61, 3);
  NoGrad ng;
  Tensor la = a->forward(ids), lb = b->forward(ids);
  EXPECT_EQ(la.shape(), (Shape{2, 9, 61}));
  EXPECT_EQ(la.to_floats(), lb.to_floats());
  // An untrained model predicts close to uniform: loss near log(V).
  Tensor loss = a->loss(ids, random_ids(2, 9, 61, 4));
  EXPECT_NEAR(loss.item(), std::log(61.0), 0.3);
}

TEST(DecoderLM, CausalPrefixLogitsDoNotSeeTheFuture) {
  auto m = DecoderLM::create(test_card(), Device::cpu(), 5).value();
  NoGrad ng;
  Tensor ids = random_ids(1, 8, 61, 9);
  std::vector<int32_t> prefix(ids.data<int32_t>(), ids.data<int32_t>() + 5);
  auto full = m->forward(ids).to_floats();
  auto part = m->forward(Tensor::from_ints(prefix, {1, 5})).to_floats();
  for (size_t i = 0; i < part.size(); ++i) EXPECT_NEAR(full[i], part[i], 1e-5f);
}

TEST(DecoderLM, FlopsCountTheShapes) {
  ModelCard card = test_card();
  const FlopsPerToken f = flops_per_token(card, 16);
  const double C = 32, D = 8, H = 4, Hkv = 2, F = 48, V = 61, L = 2;
  EXPECT_DOUBLE_EQ(f.matmul_forward, L * 2 * (C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * F) + 2 * C * V);
  EXPECT_DOUBLE_EQ(f.attention_forward, L * 4 * H * D * 8.5);
  EXPECT_DOUBLE_EQ(f.train(), 3 * f.forward());
  EXPECT_DOUBLE_EQ(f.formula_train, 6.0 * count_parameters(card).total + 12 * L * C * 16);
}

TEST(DecoderLM, OverfitsOneBatch) {
  auto m = DecoderLM::create(test_card(), Device::cpu(), 11).value();
  AdamW opt(m->parameters(), AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
  Tensor ids = random_ids(2, 12, 61, 1), targets = random_ids(2, 12, 61, 2);
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    Tensor loss = m->loss(ids, targets);
    (step == 0 ? first : last) = loss.item();
    tape().backward(loss);
    opt.step(1e-2f);
    opt.zero_grad();
  }
  EXPECT_LT(last, 0.3 * first);
}

TEST(DecoderLM, LinearSlotsCanBeSwapped) {
  auto m = DecoderLM::create(test_card(), Device::cpu(), 1).value();
  int visited = 0;
  m->for_each_linear([&](const std::string& name, std::unique_ptr<LinearLayer>& slot) {
    ++visited;
    EXPECT_NE(slot, nullptr) << name;
  });
  EXPECT_EQ(visited, 2 * 7);  // q k v o gate up down per layer; lm_head tied
}

// q/k/v and gate/up run as one GEMM each while their weights are stacked in
// one buffer (make_stacked_linears); a transform that swaps a slot gets the
// per-slot path. Both paths give one loss and the same gradients.
TEST(DecoderLM, StackedProjectionsMatchThePerSlotPath) {
  auto m = DecoderLM::create(test_card(), Device::cpu(), 5).value();
  const Tensor ids = random_ids(2, 12, 61, 3), targets = random_ids(2, 12, 61, 4);
  auto loss_and_grads = [&]() {
    Tensor loss = m->loss(ids, targets);
    tape().backward(loss);
    std::vector<std::vector<float>> grads;
    for (const auto& p : m->parameters()) {
      grads.push_back(p.tensor.grad().to_floats());
      Tensor(p.tensor).zero_grad();
    }
    return std::make_pair(loss.item(), grads);
  };
  std::vector<const LinearLayer*> slots;  // q k v o gate up down per layer
  m->for_each_linear([&](const std::string&, std::unique_ptr<LinearLayer>& slot) {
    slots.push_back(slot.get());
  });
  ASSERT_EQ(slots.size(), 2u * 7);
  EXPECT_TRUE(stacked_weights({slots[0], slots[1], slots[2]}).has_value());
  EXPECT_TRUE(stacked_weights({slots[4], slots[5]}).has_value());
  EXPECT_FALSE(stacked_weights({slots[2], slots[3]}).has_value());  // v and o: two buffers
  const auto [loss_stacked, grads_stacked] = loss_and_grads();

  // Swap every slot for a dense copy in its own buffer: nothing is stacked.
  m->for_each_linear([&](const std::string&, std::unique_ptr<LinearLayer>& slot) {
    const auto* dense = dynamic_cast<const Linear*>(slot.get());
    ASSERT_NE(dense, nullptr);
    slot = std::make_unique<Linear>(dense->weight.clone(),
                                    dense->bias.defined() ? dense->bias.clone() : Tensor());
  });
  m->refresh_parameters();
  const auto [loss_split, grads_split] = loss_and_grads();
  EXPECT_NEAR(loss_split, loss_stacked, 1e-5);
  ASSERT_EQ(grads_split.size(), grads_stacked.size());
  for (size_t i = 0; i < grads_split.size(); ++i) {
    ASSERT_EQ(grads_split[i].size(), grads_stacked[i].size());
    for (size_t j = 0; j < grads_split[i].size(); ++j) {
      ASSERT_NEAR(grads_split[i][j], grads_stacked[i][j], 1e-5 + 1e-4 * std::abs(grads_stacked[i][j]))
          << m->parameters()[i].name << " [" << j << "]";
    }
  }
}

}  // namespace
}  // namespace el
