// freeze_test.cpp — the two readings of freeze fine-tuning select the right
// parameters, and only those receive gradients.
#include <gtest/gtest.h>

#include "autograd/tape.h"
#include "finetune/freeze.h"

namespace el::finetune {
namespace {

ModelCard card() {
  const std::string yaml = "name: t\nn_layer: 4\nd_model: 16\nn_head: 2\nd_ff: 24\nvocab_size: 31\nmax_seq_len: 8\n";
  return parse_model_card(yaml, "t.yaml").value();
}

TEST(Freeze, LastKTrainableAndFirstKFrozen) {
  auto m = DecoderLM::create(card(), Device::cpu(), 1).value();
  auto s = apply_freeze(*m, {FreezeConfig::Mode::last_k_trainable, 2});
  ASSERT_TRUE(s.ok());
  for (const auto& p : m->parameters()) {
    const bool want = p.name.rfind("model.layers.2.", 0) == 0 || p.name.rfind("model.layers.3.", 0) == 0;
    EXPECT_EQ(p.tensor.requires_grad(), want) << p.name;
  }
  const Tensor ids = Tensor::from_ints({1, 2, 3, 4}, {1, 4});
  tape().backward(m->loss(ids, ids));
  for (const auto& p : m->parameters()) EXPECT_EQ(p.tensor.has_grad(), p.tensor.requires_grad()) << p.name;

  s = apply_freeze(*m, {FreezeConfig::Mode::first_k_frozen, 1});
  ASSERT_TRUE(s.ok());
  for (const auto& p : m->parameters()) {
    const bool want = p.name.rfind("model.layers.0.", 0) != 0 && p.name != "model.embed_tokens.weight";
    EXPECT_EQ(p.tensor.requires_grad(), want) << p.name;
  }
  EXPECT_LT(s->trainable_parameters, s->total_parameters);
}

TEST(Freeze, KOutsideTheLayerCountIsReported) {
  auto m = DecoderLM::create(card(), Device::cpu(), 1).value();
  const auto s = apply_freeze(*m, {FreezeConfig::Mode::first_k_frozen, 8});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("freeze k = 8 must be in [1, 4]"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace el::finetune
