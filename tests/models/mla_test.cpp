// Multi-head latent attention (nn/mla.h) in the decoder LM: parameter names
// and counts, FLOPs, the gradient through MlaAttention against finite
// differences, the KV cache's size, and the absorbed cached forward (prefill,
// chunks, decode steps) against the full forward.
#include "nn/mla.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "autograd/tape.h"
#include "common/model_test_util.h"
#include "common/ops_harness.h"
#include "models/decoder_lm.h"
#include "models/hf_model.h"
#include "nn/kv_cache.h"
#include "ops/ops.h"
#include "train/optimizer.h"

namespace el {
namespace {

using test::random_ids;

// MLA dims: q_lora_rank, kv_lora_rank, nope, rope, v.
struct Dims {
  int q_lora, kv_lora, nope, rope, v;
};

// A small MLA card: 2 layers, d_model 32, 4 heads.
ModelCard mla_card(Dims d, const std::string& extra = "") {
  const std::string yaml = fmt::format(
      "name: mla\nn_layer: 2\nd_model: 32\nn_head: 4\nd_ff: 48\nvocab_size: 61\nmax_seq_len: 16\n"
      "attention: mla\nq_lora_rank: {}\nkv_lora_rank: {}\nqk_nope_head_dim: {}\n"
      "qk_rope_head_dim: {}\nv_head_dim: {}\ntied_embeddings: false\n{}",
      d.q_lora, d.kv_lora, d.nope, d.rope, d.v, extra);
  auto r = parse_model_card(yaml, "mla.yaml");
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

// Shapes that exercise each layout case: q/k wider than v, v wider than q/k
// (q/k padded), odd nope and latent widths (padded D and cache rows).
const Dims kDims[] = {{16, 12, 8, 4, 6}, {0, 12, 8, 4, 14}, {8, 11, 7, 4, 6}, {0, 16, 16, 8, 16}};

// Columns [t0, t1) of ids[B, T].
Tensor ids_slice(const Tensor& ids, int64_t t0, int64_t t1) {
  const std::vector<float> all = ids.to_floats();
  const int64_t B = ids.dim(0), T = ids.dim(1);
  std::vector<int32_t> v;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t) v.push_back(static_cast<int32_t>(all[b * T + t]));
  return Tensor::from_ints(v, {B, t1 - t0});
}

// Logits rows [t0, t1) of logits[B, T, V] as f64.
std::vector<double> logits_slice(const Tensor& logits, int64_t t0, int64_t t1) {
  const std::vector<float> all = logits.to_floats();
  const int64_t B = logits.dim(0), T = logits.dim(1), V = logits.dim(2);
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t v = 0; v < V; ++v) out.push_back(all[(b * T + t) * V + v]);
  return out;
}

// The cached (absorbed) forward reorders f32 sums (W_UK folded into the
// query projection, W_UV into o_proj): a few 1e-6 relative on logits of ~1.
constexpr test::Tolerance kCachedTol{2e-5, 2e-4};

TEST(Mla, ParameterNamesFollowTransformers) {
  auto model =
      DecoderLM::create(mla_card(kDims[0], "qkv_bias: true\no_bias: true\n"), Device::cpu(), 1)
          .value();
  std::vector<std::string> names;
  for (const auto& p : model->parameters())
    if (p.name.rfind("model.layers.0.self_attn.", 0) == 0) names.push_back(p.name.substr(25));
  const std::vector<std::string> want = {"q_a_proj.weight",
                                         "q_a_proj.bias",
                                         "q_a_layernorm.weight",
                                         "q_b_proj.weight",
                                         "kv_a_proj_with_mqa.weight",
                                         "kv_a_proj_with_mqa.bias",
                                         "kv_a_layernorm.weight",
                                         "kv_b_proj.weight",
                                         "o_proj.weight",
                                         "o_proj.bias"};
  EXPECT_EQ(names, want);
  auto plain = DecoderLM::create(mla_card(kDims[1]), Device::cpu(), 1).value();
  std::vector<std::string> slots;
  plain->for_each_linear([&](const std::string& n, std::unique_ptr<LinearLayer>&) {
    if (n.rfind("model.layers.1.self_attn.", 0) == 0) slots.push_back(n.substr(25));
  });
  EXPECT_EQ(slots,
            (std::vector<std::string>{"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}));
  // Shapes as DeepseekV3Attention's: [out, in].
  for (const auto& p : plain->parameters()) {
    const std::string& n = p.name;
    if (n == "model.layers.0.self_attn.q_proj.weight") {
      EXPECT_EQ(p.tensor.shape(), (Shape{4 * 12, 32}));
    } else if (n == "model.layers.0.self_attn.kv_a_proj_with_mqa.weight") {
      EXPECT_EQ(p.tensor.shape(), (Shape{16, 32}));
    } else if (n == "model.layers.0.self_attn.kv_b_proj.weight") {
      EXPECT_EQ(p.tensor.shape(), (Shape{4 * 22, 12}));
    } else if (n == "model.layers.0.self_attn.o_proj.weight") {
      EXPECT_EQ(p.tensor.shape(), (Shape{32, 4 * 14}));
    }
  }
}

TEST(Mla, TensorSpecsMatchTheModel) {
  for (const Dims& d : kDims) {
    const ModelCard card = mla_card(d, d.q_lora > 0 ? "qkv_bias: true\n" : "");
    auto model = DecoderLM::create(card, Device::cpu(), 1).value();
    const std::vector<io::HfTensorSpec> specs = decoder_lm_tensor_specs(card);
    ASSERT_EQ(specs.size(), model->parameters().size());
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(specs[i].name, model->parameters()[i].name);
      EXPECT_EQ(specs[i].shape, model->parameters()[i].tensor.shape()) << specs[i].name;
    }
  }
}

TEST(Mla, HfExportIsRefusedByName) {
  auto model = DecoderLM::create(mla_card(kDims[0]), Device::cpu(), 1).value();
  const std::string dir = ::testing::TempDir() + "/el_mla_export";
  const Status s = save_hf_model(*model, dir);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("attention mla cannot be exported"), std::string::npos)
      << s.error().message();
  EXPECT_NE(s.error().message().find("attention"), std::string::npos);
}

TEST(Mla, CountsMatchAllocatedTensors) {
  for (const Dims& d : kDims) {
    for (const std::string extra :
         {"", "qkv_bias: true\no_bias: true\n", "tied_embeddings: true\n"}) {
      const std::string e = extra == "tied_embeddings: true\n" ? "" : extra;
      ModelCard card = mla_card(d, e);
      if (extra == "tied_embeddings: true\n") card.tied_embeddings = true;
      auto model = DecoderLM::create(card, Device::cpu(), 1).value();
      int64_t allocated = 0, matmul = 0;
      for (const auto& p : model->parameters()) {
        allocated += p.tensor.numel();
        if (p.tensor.ndim() == 2 && p.name != "model.embed_tokens.weight")
          matmul += p.tensor.numel();
      }
      const std::string what =
          fmt::format("q_lora {} kv {} extra '{}'", d.q_lora, d.kv_lora, extra);
      EXPECT_EQ(count_parameters(card).total, allocated) << what;
      // Every 2-D weight is one multiply-add per token; a tied lm_head too.
      if (card.tied_embeddings) matmul += int64_t{card.vocab_size} * card.d_model;
      const FlopsPerToken f = flops_per_token(card, 7);
      EXPECT_DOUBLE_EQ(f.matmul_forward, 2.0 * static_cast<double>(matmul)) << what;
      EXPECT_DOUBLE_EQ(f.attention_forward,
                       2.0 * 2.0 * 4 * (d.nope + d.rope + d.v) * 4.0)
          << what;  // L H (Dqk+Dv) (T+1)/2
    }
  }
}

TEST(Mla, KvCacheHoldsOnlyTheLatentAndRopeKey) {
  const ModelCard card = mla_card(kDims[2]);  // kv_lora 11 + rope 4 = 15 -> rows of 16
  EXPECT_EQ(mla_cache_dim(card), 16);
  EXPECT_EQ(KvCache::bytes_per_sequence(card, 10, DType::bf16), 2 * 10 * 16 * 2);
  KvCache cache = KvCache::create(card, 3, 10, DType::f32, Device::cpu()).value();
  ASSERT_EQ(cache.k.size(), 2u);
  EXPECT_EQ(cache.k[0].shape(), (Shape{3, 10, 1, 16}));
  EXPECT_TRUE(cache.v[0].same(cache.k[0]));
  EXPECT_EQ(cache.bytes(), 3 * KvCache::bytes_per_sequence(card, 10, DType::f32));
}

// The layer as an "op" of its input and weights, for the generic
// finite-difference check (tests/common/ops_harness.h).
TEST(Mla, GradientMatchesFiniteDifferences) {
  for (const Dims& d : {Dims{4, 5, 3, 2, 4}, Dims{0, 3, 2, 4, 7}}) {
    ModelCard card = mla_card(d);
    card.d_model = 8;
    card.n_head = card.n_kv_head = 2;
    ASSERT_TRUE(validate_model_card(card).ok());
    auto layer = std::make_shared<MlaAttention>(card, Device::cpu());
    std::vector<Tensor*> weights;
    auto add_linear = [&](std::unique_ptr<LinearLayer>& slot) {
      if (slot) weights.push_back(&dynamic_cast<Linear&>(*slot).weight);
    };
    add_linear(layer->q_proj);
    add_linear(layer->q_a_proj);
    if (d.q_lora > 0) weights.push_back(&layer->q_a_layernorm);
    add_linear(layer->q_b_proj);
    add_linear(layer->kv_a_proj_with_mqa);
    weights.push_back(&layer->kv_a_layernorm);
    add_linear(layer->kv_b_proj);
    add_linear(layer->o_proj);
    Rng rng(42 + d.q_lora);
    test::OpInstance inst;
    inst.inputs.push_back(test::random_tensor({2, 3, 8}, rng));
    for (Tensor* w : weights) {
      Tensor t = test::random_tensor(w->shape(), rng, 0.5f);
      if (w->ndim() == 1) t = ops::add(t, Tensor::full(w->shape(), 1.0f));  // norm weights ~1
      inst.inputs.push_back(t);
    }
    inst.differentiable.assign(inst.inputs.size(), true);
    inst.max_fd_elements = 24;
    inst.run = [layer, weights](const std::vector<Tensor>& in) {
      for (size_t i = 0; i < weights.size(); ++i) *weights[i] = in[i + 1];
      return layer->forward(in[0], Tensor());
    };
    EXPECT_TRUE(test::gradients_match(inst, 7)) << "q_lora " << d.q_lora;
  }
}

TEST(Mla, OverfitsOneBatch) {
  for (const Dims& d : {kDims[0], kDims[1]}) {
    auto m = DecoderLM::create(mla_card(d), Device::cpu(), 11).value();
    AdamW opt(m->parameters(), AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
    const Tensor ids = random_ids(2, 12, 61, 1), targets = random_ids(2, 12, 61, 2);
    double first = 0, last = 0;
    for (int step = 0; step < 40; ++step) {
      Tensor loss = m->loss(ids, targets);
      (step == 0 ? first : last) = loss.item();
      tape().backward(loss);
      opt.step(1e-2f);
      opt.zero_grad();
    }
    EXPECT_LT(last, 0.3 * first) << "q_lora " << d.q_lora;
  }
}

// Prefill of the first `prefill` tokens, then chunks of `chunk` tokens
// (1 = decode steps), each compared with the full forward's logits.
void expect_cached_matches_full(const DecoderLM& model, int64_t T, int64_t prefill, int64_t chunk,
                                const std::string& what) {
  NoGrad no_grad;
  const Tensor ids = random_ids(2, T, model.card().vocab_size, 5);
  const Tensor full = model.forward(ids);
  KvCache cache = KvCache::create(model.card(), 2, T, DType::f32, Device::cpu()).value();
  for (int64_t t0 = 0; t0 < T;) {
    const int64_t t1 = std::min(T, t0 == 0 ? prefill : t0 + chunk);
    const Tensor logits = model.forward_cached(ids_slice(ids, t0, t1), cache);
    cache.advance(static_cast<int32_t>(t1 - t0));
    EXPECT_TRUE(test::all_close(logits.to_floats(), logits_slice(full, t0, t1), kCachedTol,
                                fmt::format("{}: tokens [{}, {})", what, t0, t1)));
    t0 = t1;
  }
}

TEST(Mla, CachedForwardMatchesFullForward) {
  for (const Dims& d : kDims) {
    for (const std::string pe : {"rope", "none", "alibi"}) {
      auto model =
          DecoderLM::create(mla_card(d, "pos_encoding: " + pe + "\n"), Device::cpu(), 3).value();
      const std::string what = fmt::format("q_lora {} kv {} v {} {}", d.q_lora, d.kv_lora, d.v, pe);
      expect_cached_matches_full(*model, 12, 5, 1, what + " decode");
      expect_cached_matches_full(*model, 12, 3, 4, what + " chunks");
    }
  }
}

// Weights changed between generations (a training step): the next prefill
// from position 0 absorbs them again.
TEST(Mla, CachedForwardFollowsWeightUpdates) {
  auto model = DecoderLM::create(mla_card(kDims[0]), Device::cpu(), 6).value();
  expect_cached_matches_full(*model, 8, 3, 1, "before the update");
  for (auto& p : model->parameters()) {
    if (p.name.find("kv_b_proj") == std::string::npos &&
        p.name.find("q_b_proj") == std::string::npos)
      continue;
    std::vector<float> v = p.tensor.to_floats();
    for (float& x : v) x *= 1.5f;
    Tensor t = p.tensor;
    t.copy_from(Tensor::from_floats(v, t.shape()));
  }
  expect_cached_matches_full(*model, 8, 3, 1, "after the update");
}

// A slot that is not a dense Linear (as LoRA or a quantized layer would be):
// the absorbed weights come from what the slot computes.
class ScaledLinear final : public LinearLayer {
 public:
  explicit ScaledLinear(std::unique_ptr<LinearLayer> inner) : inner_(std::move(inner)) {}
  Tensor forward(const Tensor& x) const override {
    const auto& l = dynamic_cast<const Linear&>(*inner_);
    return ops::linear(x, l.weight, l.bias, 1.5f);
  }
  void collect_parameters(const std::string& prefix, ParameterList& out) const override {
    inner_->collect_parameters(prefix, out);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }

 private:
  std::unique_ptr<LinearLayer> inner_;
};

TEST(Mla, CachedForwardAbsorbsTransformedSlots) {
  auto model = DecoderLM::create(mla_card(kDims[0], "o_bias: true\n"), Device::cpu(), 4).value();
  for (auto& p : model->parameters()) {  // a non-zero o_proj bias
    if (p.name.find("o_proj.bias") != std::string::npos) {
      Tensor t = p.tensor;
      t.copy_from(Tensor::full(t.shape(), 0.3f));
    }
  }
  model->for_each_linear([](const std::string& name, std::unique_ptr<LinearLayer>& slot) {
    if (name.find("self_attn") != std::string::npos)
      slot = std::make_unique<ScaledLinear>(std::move(slot));
  });
  model->refresh_parameters();
  expect_cached_matches_full(*model, 10, 4, 1, "scaled slots");
}

}  // namespace
}  // namespace el
