// moe_test.cpp — moe_experts (nn/moe.h) in the model:
//  * MoeMlp::forward against a per-token dense f64 reference (router, top-k,
//    renormalised weights, SwiGLU experts, gated shared expert);
//  * E = 1, k = 1 is the dense MLP: same logits and gradients as the dense
//    model with the same weights;
//  * parameter names, count_parameters (total and active) against the built
//    model, FLOPs per token active vs all experts;
//  * the router losses reach DecoderLM::loss (weights coef / n_layer), and
//    not under NoGrad;
//  * a tiny MoE model trains (loss falls, every expert that saw tokens and
//    the router learn), with a capacity factor too;
//  * forward_cached (prefill + decode) matches the full forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "common/cached_forward.h"
#include "common/ops_harness.h"
#include "common/test_cards.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/moe.h"
#include "train/optimizer.h"

namespace el {
namespace {

// A small MoE card: d_model 16, 4 heads over 2 kv heads, 4 experts of
// width 12, top-2.
ModelCard moe_card(const std::string& extra = "", int n_layer = 2) {
  const std::string yaml = fmt::format(
      "name: moe\nn_layer: {}\nd_model: 16\nn_head: 4\nn_kv_head: 2\nd_ff: 24\nvocab_size: 37\n"
      "max_seq_len: 32\nmoe_experts: 4\nmoe_d_ff: 12\n{}",
      n_layer, extra);
  auto r = parse_model_card(yaml, "moe.yaml");
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

Tensor random_ids(int64_t B, int64_t T, int vocab, uint64_t seed) {
  Rng rng(seed);
  return test::random_ints({B, T}, rng, 0, vocab);
}

using Vec = std::vector<double>;

std::map<std::string, Tensor> by_name(const ParameterList& params) {
  std::map<std::string, Tensor> m;
  for (const auto& p : params) m.emplace(p.name, p.tensor);
  return m;
}

// The layer in f64, token by token, from transformers' Qwen2MoeSparseMoeBlock.
Vec moe_reference(const MoeMlp& m, const Tensor& x) {
  ParameterList params;
  m.collect_parameters("mlp", params);
  const auto p = by_name(params);
  const Vec xv = test::to_doubles(x), g = test::to_doubles(p.at("mlp.gate.weight")),
            gu = test::to_doubles(p.at("mlp.experts.gate_up_proj")),
            dn = test::to_doubles(p.at("mlp.experts.down_proj"));
  const int64_t C = x.dim(-1), N = x.numel() / C, E = m.n_experts, F = m.expert_d_ff;
  Vec out(static_cast<size_t>(N * C), 0.0);
  auto swiglu_mlp = [&](const Vec& wg, const Vec& wu, const Vec& wd, int64_t width,
                        const double* xt, Vec& y) {
    Vec h(static_cast<size_t>(width));
    for (int64_t f = 0; f < width; ++f) {
      double a = 0, b = 0;
      for (int64_t c = 0; c < C; ++c) {
        a += wg[f * C + c] * xt[c];
        b += wu[f * C + c] * xt[c];
      }
      h[f] = a / (1.0 + std::exp(-a)) * b;
    }
    for (int64_t c = 0; c < C; ++c) {
      y[c] = 0;
      for (int64_t f = 0; f < width; ++f) y[c] += wd[c * width + f] * h[f];
    }
  };
  for (int64_t t = 0; t < N; ++t) {
    const double* xt = xv.data() + t * C;
    Vec l(static_cast<size_t>(E)), s(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t c = 0; c < C; ++c) l[e] += g[e * C + c] * xt[c];
    }
    if (m.score == MoeScore::sigmoid) {
      for (int64_t e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-l[e]));
    } else {
      const double mx = *std::max_element(l.begin(), l.end());
      double sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += (s[e] = std::exp(l[e] - mx));
      for (double& v : s) v /= sum;
    }
    std::vector<int64_t> idx(static_cast<size_t>(E));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
    double wsum = 0;
    for (int64_t j = 0; j < m.top_k; ++j) wsum += s[idx[j]];
    Vec y(static_cast<size_t>(C));
    for (int64_t j = 0; j < m.top_k; ++j) {
      const int64_t e = idx[j];
      const Vec wg(gu.begin() + e * 2 * F * C, gu.begin() + (e * 2 + 1) * F * C);
      const Vec wu(gu.begin() + (e * 2 + 1) * F * C, gu.begin() + (e + 1) * 2 * F * C);
      const Vec wd(dn.begin() + e * C * F, dn.begin() + (e + 1) * C * F);
      swiglu_mlp(wg, wu, wd, F, xt, y);
      const double w = m.normalize ? s[e] / wsum : s[e];
      for (int64_t c = 0; c < C; ++c) out[t * C + c] += w * y[c];
    }
    if (m.shared_expert) {
      const Vec sg = test::to_doubles(p.at("mlp.shared_expert.gate_proj.weight")),
                su = test::to_doubles(p.at("mlp.shared_expert.up_proj.weight")),
                sd = test::to_doubles(p.at("mlp.shared_expert.down_proj.weight")),
                gate = test::to_doubles(p.at("mlp.shared_expert_gate.weight"));
      swiglu_mlp(sg, su, sd, static_cast<int64_t>(sg.size()) / C, xt, y);
      double gl = 0;
      for (int64_t c = 0; c < C; ++c) gl += gate[c] * xt[c];
      const double sig = 1.0 / (1.0 + std::exp(-gl));
      for (int64_t c = 0; c < C; ++c) out[t * C + c] += sig * y[c];
    }
  }
  return out;
}

void randomize(const ParameterList& params, uint64_t seed, float std) {
  Rng rng(seed);
  for (const auto& p : params) {
    Tensor t = p.tensor;
    init_normal(t, rng, std);
  }
}

TEST(Moe, LayerMatchesDenseReference) {
  NoGrad no_grad;
  const std::string variants[] = {
      "",                                              // Mixtral: softmax, renormalised
      "moe_norm_topk_prob: false\nmoe_shared_experts: 1\nmoe_shared_d_ff: 10\n",  // Qwen2-MoE
      "moe_router: sigmoid\nmoe_top_k: 3\n",           // sigmoid scores
      "moe_top_k: 1\nmoe_shared_experts: 2\n",         // k = 1, two shared experts
  };
  for (const std::string& v : variants) {
    const ModelCard card = moe_card(v);
    MoeMlp m(card, Device::cpu());
    ParameterList params;
    m.collect_parameters("mlp", params);
    randomize(params, 7, 0.4f);
    Rng rng(3);
    const Tensor x = test::random_tensor({2, 9, 16}, rng);
    const Tensor y = m.forward(x);
    EXPECT_EQ(y.shape(), x.shape());
    EXPECT_TRUE(test::all_close(y.to_floats(), moe_reference(m, x), {1e-5, 1e-4}, "moe " + v));
  }
}

TEST(Moe, OneExpertIsTheDenseMlp) {
  // E = 1, k = 1: the weight is 1 and every token runs the one expert, so the
  // model is the dense model whose MLP holds the expert's weights.
  auto parse = [](const std::string& extra) {
    return parse_model_card(
               "name: d\nn_layer: 2\nd_model: 16\nn_head: 4\nn_kv_head: 2\nd_ff: 12\n"
               "vocab_size: 37\nmax_seq_len: 32\ntied_embeddings: false\n" + extra,
               "d.yaml")
        .value();
  };
  const ModelCard dcard = parse("");
  const ModelCard mcard = parse("moe_experts: 1\nmoe_top_k: 1\nmoe_aux_loss_coef: 0\nmoe_z_loss_coef: 0\n");
  auto d = DecoderLM::create(dcard, Device::cpu(), 5).value();
  auto m = DecoderLM::create(mcard, Device::cpu(), 9).value();
  auto dp = by_name(d->parameters()), mp = by_name(m->parameters());
  for (auto& [name, t] : mp) {
    if (dp.count(name)) {
      t.copy_from(dp.at(name));
      continue;
    }
    const std::string layer = name.substr(0, name.find(".mlp."));
    if (name.ends_with("gate.weight")) continue;  // the router: any value routes to expert 0
    if (name.ends_with("gate_up_proj")) {
      const std::vector<float> g = dp.at(layer + ".mlp.gate_proj.weight").to_floats(),
                               u = dp.at(layer + ".mlp.up_proj.weight").to_floats();
      std::vector<float> gu(g);
      gu.insert(gu.end(), u.begin(), u.end());
      t.copy_from(Tensor::from_floats(gu, t.shape()));
    } else {
      ASSERT_TRUE(name.ends_with("down_proj")) << name;
      t.copy_from(dp.at(layer + ".mlp.down_proj.weight").view(t.shape()));
    }
  }
  const Tensor ids = random_ids(2, 11, 37, 4), targets = random_ids(2, 11, 37, 8);
  {
    NoGrad no_grad;
    const std::vector<float> a = d->forward(ids).to_floats(), b = m->forward(ids).to_floats();
    EXPECT_TRUE(test::all_close(b, std::vector<double>(a.begin(), a.end()), {1e-6, 1e-5}, "logits"));
  }
  auto grads = [&](DecoderLM& model) {
    Tensor loss = model.loss(ids, targets);
    tape().backward(loss);
    std::map<std::string, std::vector<float>> g;
    for (const auto& p : model.parameters()) {
      Tensor t = p.tensor;
      if (t.has_grad()) g[p.name] = t.grad().to_floats();
      t.zero_grad();
    }
    return g;
  };
  const auto gd = grads(*d), gm = grads(*m);
  for (const auto& [name, g] : gd) {
    std::vector<float> got;
    if (gm.count(name)) {
      got = gm.at(name);
    } else if (name.ends_with("mlp.gate_proj.weight") || name.ends_with("mlp.up_proj.weight")) {
      const std::string layer = name.substr(0, name.find(".mlp."));
      const std::vector<float>& gu = gm.at(layer + ".mlp.experts.gate_up_proj");
      const size_t half = gu.size() / 2;
      got = name.ends_with("gate_proj.weight") ? std::vector<float>(gu.begin(), gu.begin() + half)
                                               : std::vector<float>(gu.begin() + half, gu.end());
    } else {
      got = gm.at(name.substr(0, name.find(".mlp.")) + ".mlp.experts.down_proj");
    }
    EXPECT_TRUE(test::all_close(got, std::vector<double>(g.begin(), g.end()), {1e-6, 1e-4}, name));
  }
}

TEST(Moe, ParameterNamesAndCounts) {
  const ModelCard card = moe_card("moe_shared_experts: 1\nmoe_shared_d_ff: 8\n");
  auto model = DecoderLM::create(card, Device::cpu(), 1).value();
  std::vector<std::string> names;
  for (const auto& p : model->parameters())
    if (p.name.rfind("model.layers.0.mlp.", 0) == 0) names.push_back(p.name.substr(19));
  const std::vector<std::string> want = {"gate.weight",
                                         "experts.gate_up_proj",
                                         "experts.down_proj",
                                         "shared_expert.gate_proj.weight",
                                         "shared_expert.up_proj.weight",
                                         "shared_expert.down_proj.weight",
                                         "shared_expert_gate.weight"};
  EXPECT_EQ(names, want);
  const auto p = by_name(model->parameters());
  EXPECT_EQ(p.at("model.layers.1.mlp.experts.gate_up_proj").shape(), (Shape{4, 24, 16}));
  EXPECT_EQ(p.at("model.layers.1.mlp.experts.down_proj").shape(), (Shape{4, 16, 12}));
  EXPECT_EQ(p.at("model.layers.1.mlp.shared_expert_gate.weight").shape(), (Shape{1, 16}));
  for (const ModelCard& c : {card, moe_card(), moe_card("moe_top_k: 4\n")}) {
    const ParameterCounts counts = count_parameters(c);
    EXPECT_EQ(DecoderLM::create(c, Device::cpu(), 1).value()->num_parameters(), counts.total);
    // Active: the E - k experts (3 C F_e each) a token skips, per layer.
    EXPECT_EQ(counts.active,
              counts.total - c.n_layer * (c.moe_experts - c.moe_top_k) * 3 * 16 * 12);
  }
  const ParameterCounts dense = count_parameters(test::small_card());
  EXPECT_EQ(dense.active, dense.total);
  // FLOPs: the active projections, and all experts in matmul_forward_total.
  const FlopsPerToken f = flops_per_token(card, 16);
  const double expert = 2.0 * 3 * 16 * 12;
  EXPECT_DOUBLE_EQ(f.matmul_forward_total - f.matmul_forward, 2 * (4 - 2) * expert);
  EXPECT_DOUBLE_EQ(f.formula_train,
                   6.0 * static_cast<double>(count_parameters(card).active) + 12.0 * 2 * 16 * 16);
}

TEST(Moe, RouterLossesReachTheLoss) {
  const ModelCard card = moe_card("moe_aux_loss_coef: 0.5\nmoe_z_loss_coef: 0.25\n");
  auto m = DecoderLM::create(card, Device::cpu(), 2).value();
  const Tensor ids = random_ids(2, 8, 37, 1), targets = random_ids(2, 8, 37, 2);
  AuxLosses aux;
  const float total = m->loss(ids, targets, &aux).item();
  tape().clear();
  ASSERT_EQ(aux.size(), 4u);  // balance and z per layer
  double sum = 0;
  for (const AuxLoss& a : aux) {
    EXPECT_FLOAT_EQ(a.weight, std::string(a.name) == "moe_balance" ? 0.25f : 0.125f);
    sum += a.weight * a.value.item();
    EXPECT_GT(a.value.item(), 0.0f) << a.name;
  }
  float ce = 0;
  {
    NoGrad no_grad;
    AuxLosses none;
    ce = m->loss(ids, targets, &none).item();
    EXPECT_TRUE(none.empty());
  }
  EXPECT_NEAR(total, ce + sum, 1e-5);
  EXPECT_GT(sum, 0.0);
}

TEST(Moe, TrainingReducesLoss) {
  for (const std::string extra :
       {"", "moe_router: sigmoid\nmoe_shared_experts: 1\n", "moe_capacity_factor: 1.0\n"}) {
    auto m = DecoderLM::create(moe_card("tied_embeddings: false\n" + extra), Device::cpu(), 11)
                 .value();
    AdamW opt(m->parameters(), AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
    const Tensor ids = random_ids(2, 16, 37, 1), targets = random_ids(2, 16, 37, 2);
    const auto before = by_name(m->parameters());
    std::map<std::string, std::vector<float>> start;
    for (const auto& [n, t] : before) start[n] = t.to_floats();
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      Tensor loss = m->loss(ids, targets);
      (step == 0 ? first : last) = loss.item();
      tape().backward(loss);
      opt.step(1e-2f);
      opt.zero_grad();
    }
    EXPECT_LT(last, 0.5 * first) << extra;
    // The router and the experts learned (a gradient reached them).
    for (const auto& p : m->parameters()) {
      if (p.name.find(".mlp.") == std::string::npos) continue;
      EXPECT_NE(p.tensor.to_floats(), start.at(p.name)) << extra << " " << p.name;
    }
  }
}

TEST(Moe, CapacityDropsTokensOnlyInTraining) {
  NoGrad no_grad;
  const ModelCard dropless = moe_card("moe_aux_loss_coef: 0\n");
  ModelCard capped = dropless;
  capped.moe_capacity_factor = 0.5f;  // half the slots per expert: some must drop
  auto a = DecoderLM::create(dropless, Device::cpu(), 3).value();
  auto b = DecoderLM::create(capped, Device::cpu(), 3).value();
  const Tensor ids = random_ids(2, 12, 37, 6);
  const std::vector<float> la = a->forward(ids).to_floats(), lb = b->forward(ids).to_floats();
  EXPECT_NE(la, lb);
  // Generation runs dropless: the capped model's cached logits (one prefill)
  // are the dropless model's.
  EXPECT_TRUE(test::cached_matches_full(*b, ids, std::vector<double>(la.begin(), la.end()), 12,
                                        {2e-5, 2e-4}, "cached capped == dropless"));
}

TEST(Moe, CachedForwardMatchesFullForward) {
  NoGrad no_grad;
  for (const std::string extra : {"", "moe_shared_experts: 1\nmoe_router: sigmoid\n"}) {
    auto model = DecoderLM::create(moe_card(extra), Device::cpu(), 3).value();
    const Tensor ids = random_ids(2, 14, 37, 5);
    const std::vector<float> full = model->forward(ids).to_floats();
    EXPECT_TRUE(test::cached_matches_full(*model, ids, std::vector<double>(full.begin(), full.end()),
                                          6, {2e-5, 2e-4}, "moe " + extra));
  }
}

// The built-in MoE cards: the x8 shapes of their dense cards (experts of the
// dense width, top-2), and the counts their comments state.
TEST(Moe, BuiltinCards) {
  const struct {
    const char *name, *dense;
    int64_t total, active;
  } cards[] = {{"tiny-moe", "tiny", 3'017'344, 1'247'872},
               {"lite-moe", "lite-gqa", 2'561'914'752, 679'196'544},
               {"qwen2.5-0.5bx8-moe", "qwen2.5-0.5b", 2'690'709'376, 807'991'168},
               {"qwen2.5-1.5bx8-moe", "qwen2.5-1.5b", 9'636'443'648, 2'700'113'408}};
  for (const auto& c : cards) {
    const ModelCard moe = find_model_card(c.name).value();
    const ModelCard dense = find_model_card(c.dense).value();
    EXPECT_EQ(moe.moe_experts, 8) << c.name;
    EXPECT_EQ(moe.moe_top_k, 2) << c.name;
    EXPECT_EQ(moe.moe_expert_d_ff(), dense.d_ff) << c.name;
    EXPECT_EQ(moe.n_layer, dense.n_layer) << c.name;
    EXPECT_EQ(moe.d_model, dense.d_model) << c.name;
    const ParameterCounts counts = count_parameters(moe);
    EXPECT_EQ(counts.total, c.total) << c.name;
    EXPECT_EQ(counts.active, c.active) << c.name;
    // Active = the dense model plus one more expert and the router per layer.
    const int64_t extra = moe.n_layer * (3LL * moe.d_model * moe.d_ff + 8LL * moe.d_model);
    EXPECT_EQ(counts.active, count_parameters(dense).total + extra) << c.name;
  }
  const ModelCard tiny = find_model_card("tiny-moe").value();
  EXPECT_EQ(DecoderLM::create(tiny, Device::cpu(), 1).value()->num_parameters(),
            count_parameters(tiny).total);
}

}  // namespace
}  // namespace el
