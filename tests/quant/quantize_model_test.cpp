// quantize_model on tiny models: RTN equals the model with dequantized
// weights, GPTQ runs and beats RTN, the report, checks before any change.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "quant/quantize_model.h"
#include "quant_test_util.h"

namespace el::quant {
namespace {

using test::make_model;
using test::random_ids;
using test::slots_of;

// Model B := model A's card and seed with every quantized slot of A replaced
// by a dense Linear holding A's dequantized weight.
void copy_dequantized(DecoderLM& quantized, DecoderLM& dense) {
  auto q = slots_of(quantized), d = slots_of(dense);
  ASSERT_EQ(q.size(), d.size());
  for (size_t i = 0; i < q.size(); ++i) {
    ASSERT_EQ(q[i].first, d[i].first);
    if (auto* ql = dynamic_cast<QuantLinear*>(q[i].second)) {
      auto* lin = dynamic_cast<Linear*>(d[i].second);
      ASSERT_NE(lin, nullptr);
      lin->weight.copy_from(dequantize(ql->weight()));
      if (ql->bias().defined()) {
        EXPECT_EQ(ql->bias().to_floats(), lin->bias.to_floats()) << q[i].first;
      }
    }
  }
}

// Non-zero biases (a fresh model's are 0), the same in both models.
void randomize_biases(DecoderLM& m) {
  uint64_t seed = 50;
  for (auto& [path, slot] : slots_of(m)) {
    auto* lin = dynamic_cast<Linear*>(slot);
    if (lin && lin->bias.defined()) lin->bias.copy_from(test::random_tensor(lin->bias.shape(), ++seed, 0.1f));
  }
}

TEST(QuantizeModel, RtnModelEqualsDenseModelWithDequantizedWeights) {
  for (bool qkv_bias : {false, true}) {
    const ModelCard card = test::untied_card(qkv_bias);
    auto a = make_model(card), b = make_model(card);
    randomize_biases(*a);
    randomize_biases(*b);
    QuantizeOptions o;
    o.spec = QuantSpec{4, 16, false};
    o.include_lm_head = true;
    auto r = quantize_model(*a, o);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_TRUE(r.value().lm_head_quantized);
    EXPECT_EQ(r.value().slots.size(), 15u);  // 7 per layer + lm_head
    copy_dequantized(*a, *b);
    const Tensor ids = random_ids(2, 12, static_cast<int>(card.vocab_size), 3);
    NoGrad no_grad;
    const std::vector<float> la = a->forward(ids).to_floats(), lb = b->forward(ids).to_floats();
    EXPECT_LT(test::max_abs_diff(la, lb), 2e-5f) << "qkv_bias " << qkv_bias;
  }
}

TEST(QuantizeModel, StackedGroupsShareOneBufferAndParametersAreListed) {
  auto m = make_model(test::small_card());
  QuantizeOptions o;
  o.spec = QuantSpec{8, 16, true};
  ASSERT_TRUE(quantize_model(*m, o).ok());
  auto s = slots_of(*m);
  auto* q = dynamic_cast<QuantLinear*>(s[0].second);
  auto* k = dynamic_cast<QuantLinear*>(s[1].second);
  auto* v = dynamic_cast<QuantLinear*>(s[2].second);
  ASSERT_TRUE(q && k && v);
  EXPECT_TRUE(q->forward_stacked(test::random_tensor({1, 2, 32}, 1), {k, v}).defined());
  EXPECT_EQ(q->weight().qweight.impl()->storage, v->weight().qweight.impl()->storage);
  int qweights = 0;
  for (const auto& p : m->parameters()) {
    EXPECT_FALSE(p.tensor.requires_grad()) << p.name;
    EXPECT_EQ(p.name.find(".weight") != std::string::npos && p.name.find("proj") != std::string::npos, false)
        << p.name << " is still dense";
    qweights += p.name.find(".qweight") != std::string::npos;
  }
  EXPECT_EQ(qweights, 14);
  // The model runs without a NoGrad scope too (nothing requires grad).
  const Tensor logits = m->forward(random_ids(1, 8, 61, 2));
  for (float v2 : logits.to_floats()) ASSERT_TRUE(std::isfinite(v2));
}

TEST(QuantizeModel, ReportSizesAndBits) {
  auto m = make_model(test::small_card());
  const int64_t before = parameter_bytes(*m);
  QuantizeOptions o;
  o.spec = QuantSpec{4, 16, true};
  o.include_lm_head = true;  // tied: a note, not an error
  auto r = quantize_model(*m, o);
  ASSERT_TRUE(r.ok());
  const QuantizeReport& rep = r.value();
  EXPECT_FALSE(rep.lm_head_quantized);
  ASSERT_EQ(rep.notes.size(), 1u);
  EXPECT_NE(rep.notes[0].find("tied"), std::string::npos);
  EXPECT_EQ(rep.model_bytes_before, before);
  EXPECT_EQ(rep.model_bytes_after, parameter_bytes(*m));
  // Per layer: q 32x32, k/v 16x32, o 32x32, gate/up 48x32, down 32x48.
  EXPECT_EQ(rep.quantized_weights, 2 * (32 * 32 * 2 + 16 * 32 * 2 + 48 * 32 * 3));
  EXPECT_EQ(rep.quantized_bytes_before, rep.quantized_weights * 4);
  EXPECT_DOUBLE_EQ(rep.bits_per_weight, 4.0 + 16.0 / 16.0);  // codes + one f16 scale per 16
  EXPECT_EQ(rep.model_bytes_before - rep.model_bytes_after,
            rep.quantized_bytes_before - rep.quantized_bytes_after);
  const auto j = report_to_json(rep);
  EXPECT_EQ(j["method"], "rtn");
  EXPECT_EQ(j["slots"].size(), 14u);
  EXPECT_FALSE(j["slots"][0].contains("output_error"));
}

TEST(QuantizeModel, GptqRunsLayerByLayerAndBeatsRtn) {
  const ModelCard card = test::untied_card(true);
  auto m = make_model(card, 11);
  QuantizeOptions o;
  o.spec = QuantSpec{4, 16, true};
  o.method = QuantMethod::gptq;
  o.include_lm_head = true;
  o.calibration = random_ids(12, 16, static_cast<int>(card.vocab_size), 5);
  o.calibration_batch = 5;  // batches of 5, 5, 2
  int progress = 0;
  o.on_progress = [&](const std::string&, int64_t done, int64_t total) {
    ++progress;
    EXPECT_EQ(total, 3);
    EXPECT_EQ(done, progress);
  };
  auto r = quantize_model(*m, o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(progress, 3);
  const QuantizeReport& rep = r.value();
  EXPECT_EQ(rep.calibration_tokens, 12 * 16);
  ASSERT_EQ(rep.slots.size(), 15u);
  double g = 0, n = 0;
  for (const SlotReport& s : rep.slots) {
    ASSERT_TRUE(std::isfinite(s.output_error)) << s.name;
    ASSERT_TRUE(std::isfinite(s.rtn_output_error)) << s.name;
    EXPECT_GE(s.output_error, 0.0);
    g += s.output_error;
    n += s.rtn_output_error;
  }
  EXPECT_LT(g, n) << "GPTQ " << g << " vs RTN " << n;
  NoGrad no_grad;
  for (float v : m->forward(random_ids(2, 16, static_cast<int>(card.vocab_size), 6)).to_floats()) {
    ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(QuantizeModel, GroupSizeNotDividingKFailsBeforeAnyChange) {
  auto m = make_model(test::small_card());
  QuantizeOptions o;
  o.spec = QuantSpec{4, 32, true};  // d_ff 48: down_proj's K is not a multiple of 32
  auto r = quantize_model(*m, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().where, "model.layers.0.mlp.down_proj.weight");
  EXPECT_NE(r.error().what.find("K = 48"), std::string::npos) << r.error().what;
  EXPECT_NE(r.error().what.find("group size 32"), std::string::npos);
  EXPECT_NE(r.error().hint.find("0 for per-channel"), std::string::npos);
  for (auto& [path, slot] : slots_of(*m)) EXPECT_NE(dynamic_cast<Linear*>(slot), nullptr) << path;
  // Per-channel works for every K.
  o.spec.group_size = 0;
  EXPECT_TRUE(quantize_model(*m, o).ok());
  // A second quantization finds no dense slot.
  auto again = quantize_model(*m, o);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().what.find("does not hold a dense linear layer"), std::string::npos);
}

TEST(QuantizeModel, CalibrationErrors) {
  auto m = make_model(test::small_card());  // max_seq_len 16, vocab 61
  QuantizeOptions o;
  o.method = QuantMethod::gptq;
  o.spec = QuantSpec{4, 16, true};
  auto none = quantize_model(*m, o);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().what.find("needs calibration token ids"), std::string::npos);
  o.calibration = random_ids(2, 17, 61, 1);
  auto longer = quantize_model(*m, o);
  ASSERT_FALSE(longer.ok());
  EXPECT_NE(longer.error().what.find("calibration length 17 exceeds the model's context (16 tokens)"),
            std::string::npos)
      << longer.error().what;
  EXPECT_NE(longer.error().hint.find("--calib-seq-len"), std::string::npos);
  o.calibration = Tensor::from_ints({1, 2, 61, 3}, {2, 2});
  auto vocab = quantize_model(*m, o);
  ASSERT_FALSE(vocab.ok());
  EXPECT_NE(vocab.error().what.find("token 61 at sample 1, position 0"), std::string::npos) << vocab.error().what;
  EXPECT_NE(dynamic_cast<Linear*>(slots_of(*m)[0].second), nullptr);  // unchanged
  EXPECT_FALSE(parse_quant_method("awq").ok());
  EXPECT_NE(parse_quant_method("awq").error().hint.find("rtn or gptq"), std::string::npos);
}

}  // namespace
}  // namespace el::quant
