// mamba_test.cpp — block: mamba (nn/mamba.h) in the model:
//  * MambaMixer::forward against an f64 reference of transformers'
//    MambaMixer written out from the parameters (both bias options);
//  * parameter names, count_parameters and flops_per_token against the
//    built model, Mamba's initialisation;
//  * the loss's gradient w.r.t. every kind of mixer parameter against
//    finite differences; a tiny Mamba model's loss falls when trained;
//  * generation: prefill + decode steps (and a second prefill on a
//    non-empty cache) equal the full forward; a right-padded batch whose
//    rows sit at different positions decodes as each row alone; the state
//    cache does not grow with the length.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "common/model_test_util.h"
#include "common/ops_harness.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/mamba.h"
#include "train/optimizer.h"

namespace el {
namespace {

using test::random_ids;

// d_model 12 -> I 24, N 3, K 3, dt rank 1 (ceil(12 / 16)): odd sizes.
ModelCard mamba_card(const std::string& extra = "", int n_layer = 2) {
  std::string yaml = fmt::format(
      "name: m\nblock: mamba\nn_layer: {}\nd_model: 12\nvocab_size: 29\nmax_seq_len: 32\n{}",
      n_layer, extra);
  // N 3 and K 3 unless `extra` sets them.
  for (const char* key : {"mamba_d_state", "mamba_d_conv"}) {
    if (extra.find(key) == std::string::npos) yaml += fmt::format("{}: 3\n", key);
  }
  auto r = parse_model_card(yaml, "m.yaml");
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

using Vec = std::vector<double>;

Vec values(const ParameterList& ps, const std::string& suffix) {
  for (const auto& p : ps) {
    if (p.name.size() >= suffix.size() &&
        p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return test::to_doubles(p.tensor);
    }
  }
  return {};
}

// y[n, o] = x[n, :] . w[o, :] (+ b[o])
Vec linear(const Vec& x, const Vec& w, const Vec& b, int64_t n, int64_t in, int64_t out) {
  Vec y(static_cast<size_t>(n * out), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// transformers' MambaMixer.slow_forward of h[B, T, C], f64.
Vec mixer_reference(const MambaMixer& m, const ModelCard& card, const Tensor& h) {
  ParameterList ps;
  m.collect_parameters("m", ps);
  const int64_t B = h.dim(0), T = h.dim(1), C = card.d_model, I = m.d_inner, N = m.d_state,
                K = m.d_conv, R = m.dt_rank;
  const Vec xz = linear(test::to_doubles(h), values(ps, "in_proj.weight"),
                        values(ps, "in_proj.bias"), B * T, C, 2 * I);
  const Vec cw = values(ps, "conv1d.weight"), cb = values(ps, "conv1d.bias");
  Vec u(static_cast<size_t>(B * T * I));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < I; ++d) {
        double s = cb.empty() ? 0.0 : cb[d];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t tau = t - K + 1 + k;
          if (tau >= 0) s += cw[d * K + k] * xz[(b * T + tau) * 2 * I + d];
        }
        u[(b * T + t) * I + d] = silu(s);
      }
  const Vec p = linear(u, values(ps, "x_proj.weight"), {}, B * T, I, R + 2 * N);
  Vec ts(static_cast<size_t>(B * T * R));
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t j = 0; j < R; ++j) ts[r * R + j] = p[r * (R + 2 * N) + j];
  const Vec dt = linear(ts, values(ps, "dt_proj.weight"), values(ps, "dt_proj.bias"), B * T, R, I);
  const Vec al = values(ps, "A_log"), D = values(ps, "D");
  Vec y(static_cast<size_t>(B * T * I));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < I; ++d) {
      Vec hs(static_cast<size_t>(N), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t r = b * T + t, e = r * I + d;
        const double step = softplus(dt[e]);
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double Bn = p[r * (R + 2 * N) + R + n], Cn = p[r * (R + 2 * N) + R + N + n];
          hs[n] = std::exp(-std::exp(al[d * N + n]) * step) * hs[n] + step * Bn * u[e];
          acc += Cn * hs[n];
        }
        y[e] = (acc + D[d] * u[e]) * silu(xz[r * 2 * I + I + d]);
      }
    }
  return linear(y, values(ps, "out_proj.weight"), values(ps, "out_proj.bias"), B * T, I, C);
}

void randomize(const ParameterList& ps, uint64_t seed, float scale) {
  Rng rng(seed);
  for (const auto& p : ps) {
    Tensor t = p.tensor;
    t.copy_from(test::random_tensor(t.shape(), rng, scale));
  }
}

TEST(Mamba, MixerMatchesTransformersEquations) {
  for (const std::string extra : {"", "mamba_proj_bias: true\nmamba_conv_bias: false\n"}) {
    const ModelCard card = mamba_card(extra + "mamba_dt_rank: 2\n");
    MambaMixer m(card, Device::cpu());
    ParameterList ps;
    m.collect_parameters("m", ps);
    randomize(ps, 4, 0.4f);
    Rng rng(8);
    const Tensor h = test::random_tensor({2, 7, 12}, rng);
    EXPECT_TRUE(test::all_close(m.forward(h).to_floats(), mixer_reference(m, card, h),
                                {2e-5, 2e-4}, extra));
  }
}

TEST(Mamba, ParameterNamesCountsAndFlops) {
  const ModelCard card = mamba_card();
  auto model = DecoderLM::create(card, Device::cpu(), 1).value();
  std::vector<std::string> names;
  for (const auto& p : model->parameters())
    if (p.name.rfind("model.layers.1.", 0) == 0) names.push_back(p.name.substr(15));
  const std::vector<std::string> want = {
      "input_layernorm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight",
      "mixer.conv1d.bias",      "mixer.x_proj.weight",  "mixer.dt_proj.weight",
      "mixer.dt_proj.bias",     "mixer.A_log",          "mixer.D",
      "mixer.out_proj.weight"};
  EXPECT_EQ(names, want);
  for (const std::string extra : {"", "tied_embeddings: false\n",
                                  "mamba_proj_bias: true\nmamba_conv_bias: false\n",
                                  "mamba_expand: 3\nmamba_dt_rank: 5\nmamba_d_state: 7\n"}) {
    const ModelCard c = mamba_card(extra);
    auto m = DecoderLM::create(c, Device::cpu(), 1).value();
    EXPECT_EQ(m->num_parameters(), count_parameters(c).total) << extra;
    EXPECT_EQ(m->num_embedding_parameters(), count_parameters(c).embedding) << extra;
    // matmul FLOPs: 2 per weight element of every projection slot and the head.
    double macs = 0;
    m->for_each_linear([&](const std::string&, std::unique_ptr<LinearLayer>& l) {
      macs += static_cast<double>(l->in_features() * l->out_features());
    });
    if (c.tied_embeddings) macs += static_cast<double>(c.d_model) * c.vocab_size;
    const FlopsPerToken f = flops_per_token(c, 17);
    EXPECT_DOUBLE_EQ(f.matmul_forward, 2.0 * macs) << extra;
    EXPECT_DOUBLE_EQ(f.attention_forward, c.n_layer * 2.0 * c.mamba_d_inner() *
                                              (c.mamba_d_conv + 3.0 * c.mamba_d_state));
    EXPECT_EQ(f.forward(), flops_per_token(c, 4096).forward());  // no length dependence
  }
}

TEST(Mamba, InitialisationIsMambas) {
  auto model = DecoderLM::create(mamba_card(), Device::cpu(), 5).value();
  const ParameterList& ps = model->parameters();
  const Vec al = values(ps, "layers.0.mixer.A_log"), D = values(ps, "layers.0.mixer.D"),
            bias = values(ps, "layers.0.mixer.dt_proj.bias");
  for (size_t i = 0; i < al.size(); ++i) EXPECT_NEAR(al[i], std::log(double(i % 3 + 1)), 1e-6);
  for (double d : D) EXPECT_EQ(d, 1.0);
  for (double b : bias) {
    EXPECT_GE(softplus(b), 1e-3 * (1 - 1e-4));
    EXPECT_LE(softplus(b), 1e-1 * (1 + 1e-4));
  }
  EXPECT_GT(*std::max_element(bias.begin(), bias.end()),
            *std::min_element(bias.begin(), bias.end()));
}

// d loss / d (a few entries of each mixer parameter) by central differences.
TEST(Mamba, LossGradientMatchesFiniteDifferences) {
  auto model = DecoderLM::create(mamba_card("tied_embeddings: false\n"), Device::cpu(), 3).value();
  const Tensor ids = random_ids(2, 9, 29, 1), targets = random_ids(2, 9, 29, 2);
  Tensor loss = model->loss(ids, targets);
  tape().backward(loss);
  for (const auto& p : model->parameters()) {
    if (p.name.find("layers.0.") == std::string::npos) continue;
    Tensor t = p.tensor;
    const std::vector<float> g = t.grad().to_floats();
    std::vector<float> v = t.to_floats();
    for (size_t i : {size_t{0}, v.size() / 2, v.size() - 1}) {
      const float keep = v[i];
      double l[2];
      for (int s = 0; s < 2; ++s) {
        NoGrad no_grad;
        v[i] = keep + (s ? 1e-2f : -1e-2f);
        t.copy_from(Tensor::from_floats(v, t.shape()));
        l[s] = model->loss(ids, targets).item();
      }
      v[i] = keep;
      t.copy_from(Tensor::from_floats(v, t.shape()));
      const double fd = (l[1] - l[0]) / 2e-2;
      EXPECT_NEAR(g[i], fd, 2e-3 + 2e-2 * std::abs(fd)) << p.name << "[" << i << "]";
    }
  }
}

TEST(Mamba, TrainingReducesLoss) {
  auto m = DecoderLM::create(mamba_card("tied_embeddings: false\n"), Device::cpu(), 11).value();
  AdamW opt(m->parameters(), AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
  const Tensor ids = random_ids(2, 16, 29, 1), targets = random_ids(2, 16, 29, 2);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    Tensor loss = m->loss(ids, targets);
    (step == 0 ? first : last) = loss.item();
    tape().backward(loss);
    opt.step(1e-2f);
    opt.zero_grad();
  }
  EXPECT_LT(last, 0.5 * first);
}

// Logits of rows [t0, t1) of every batch row of full [B, T, V].
std::vector<double> logits_rows(const std::vector<float>& full, int64_t B, int64_t T, int64_t V,
                                int64_t t0, int64_t t1) {
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t v = 0; v < V; ++v) out.push_back(full[(b * T + t) * V + v]);
  return out;
}

Tensor time_slice_ids(const Tensor& ids, int64_t t0, int64_t t1) {
  const int64_t B = ids.dim(0), T = ids.dim(1);
  const std::vector<float> all = ids.to_floats();
  std::vector<int32_t> chunk;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t) chunk.push_back(static_cast<int32_t>(all[b * T + t]));
  return Tensor::from_ints(chunk, {B, t1 - t0});
}

constexpr test::Tolerance kCachedTol{2e-5, 2e-4};

TEST(Mamba, CachedForwardMatchesFullForward) {
  NoGrad no_grad;
  auto model = DecoderLM::create(mamba_card("mamba_d_conv: 4\n"), Device::cpu(), 3).value();
  const int64_t T = 14, B = 2, V = 29;
  const Tensor ids = random_ids(B, T, V, 5);
  const std::vector<float> full = model->forward(ids).to_floats();
  KvCache cache = KvCache::create(model->card(), B, T, DType::f32, Device::cpu()).value();
  // A prefill of 5, decode steps, a second prefill of 3 on the cache, decode.
  const std::vector<std::pair<int64_t, int64_t>> chunks = {{0, 5}, {5, 6}, {6, 7}, {7, 10},
                                                           {10, 11}, {11, 12}, {12, 14}};
  for (const auto& [t0, t1] : chunks) {
    const std::vector<float> got =
        model->forward_cached(time_slice_ids(ids, t0, t1), cache).to_floats();
    cache.advance(static_cast<int32_t>(t1 - t0));
    EXPECT_TRUE(test::all_close(got, logits_rows(full, B, T, V, t0, t1), kCachedTol,
                                fmt::format("[{}, {})", t0, t1)));
  }
  // reset(0) starts over from zero states.
  cache.reset(0);
  const std::vector<float> again =
      model->forward_cached(time_slice_ids(ids, 0, 4), cache).to_floats();
  EXPECT_TRUE(test::all_close(again, logits_rows(full, B, T, V, 0, 4), kCachedTol, "after reset"));
}

// Prompts of lengths 3, 7 and 5 right-padded into one prefill (last_index
// = length - 1), then decode steps: each row's logits equal those of its
// own sequence run alone through the full forward.
TEST(Mamba, RowsAtDifferentPositionsDecodeAsAlone) {
  NoGrad no_grad;
  auto model = DecoderLM::create(mamba_card(), Device::cpu(), 7).value();
  const int64_t V = 29, steps = 4;
  const std::vector<int64_t> lens = {3, 7, 5};
  const int64_t B = 3, longest = 7;
  const Tensor seqs = random_ids(B, longest + steps, V, 9);  // row b: prompt then decode tokens
  const std::vector<float> all = seqs.to_floats();
  auto tok = [&](int64_t b, int64_t t) {
    return static_cast<int32_t>(all[b * (longest + steps) + t]);
  };
  std::vector<int32_t> prompt(static_cast<size_t>(B * longest), 0), last;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < lens[b]; ++t) prompt[b * longest + t] = tok(b, t);
    last.push_back(static_cast<int32_t>(lens[b] - 1));
  }
  KvCache cache =
      KvCache::create(model->card(), B, longest + steps, DType::f32, Device::cpu()).value();
  // Per row: the logits of the prefill's last token, then of each step.
  std::vector<std::vector<float>> got(B);
  const std::vector<float> first =
      model->forward_cached(Tensor::from_ints(prompt, {B, longest}), cache, last).to_floats();
  std::vector<int32_t> pos;
  for (int64_t b = 0; b < B; ++b) {
    got[b].insert(got[b].end(), first.begin() + b * V, first.begin() + (b + 1) * V);
    pos.push_back(static_cast<int32_t>(lens[b]));
  }
  cache.set_positions(pos);
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> step;
    for (int64_t b = 0; b < B; ++b) step.push_back(tok(b, lens[b] + s));
    const std::vector<float> l =
        model->forward_cached(Tensor::from_ints(step, {B, 1}), cache).to_floats();
    cache.advance(1);
    for (int64_t b = 0; b < B; ++b) {
      got[b].insert(got[b].end(), l.begin() + b * V, l.begin() + (b + 1) * V);
    }
  }
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = lens[b] + steps;
    std::vector<int32_t> alone;
    for (int64_t t = 0; t < n; ++t) alone.push_back(tok(b, t));
    const std::vector<float> full = model->forward(Tensor::from_ints(alone, {1, n})).to_floats();
    EXPECT_TRUE(test::all_close(got[b], logits_rows(full, 1, n, V, lens[b] - 1, n), kCachedTol,
                                fmt::format("row {}", b)));
  }
}

TEST(Mamba, StateCacheDoesNotGrowWithLength) {
  const ModelCard c = mamba_card();
  const int64_t per_seq = KvCache::bytes_per_sequence(c, 16, DType::bf16);
  EXPECT_EQ(per_seq, KvCache::bytes_per_sequence(c, 1 << 20, DType::bf16));
  EXPECT_EQ(per_seq, c.n_layer * ((c.mamba_d_conv - 1) * 24 + 24 * 3) * 4);  // f32 states
  KvCache cache = KvCache::create(c, 3, 16, DType::bf16, Device::cpu()).value();
  EXPECT_EQ(cache.bytes(), 3 * per_seq);
}

// The built-in Mamba cards against the Transformer cards they are compared
// with: parameter counts within 5% (the counts their comments state).
TEST(Mamba, BuiltinCardsMatchTheirTransformers) {
  const struct {
    const char* mamba;
    const char* transformer;
    int64_t params;
  } pairs[] = {{"tiny-mamba", "tiny", 990'848},
               {"lite-mamba", "lite-gqa", 368'421'888},
               {"mamba-1.5b", "qwen2.5-1.5b", 1'553'928'192}};
  for (const auto& p : pairs) {
    auto m = find_model_card(p.mamba);
    auto t = find_model_card(p.transformer);
    ASSERT_TRUE(m.ok()) << m.error().message();
    ASSERT_TRUE(t.ok()) << t.error().message();
    EXPECT_EQ(m->block, ModelCard::Block::mamba);
    EXPECT_EQ(m->name, p.mamba);
    const int64_t n = count_parameters(*m).total;
    EXPECT_EQ(n, p.params) << p.mamba;
    const double ratio = static_cast<double>(n) / static_cast<double>(count_parameters(*t).total);
    EXPECT_NEAR(ratio, 1.0, 0.05) << p.mamba << " vs " << p.transformer;
    EXPECT_EQ(m->vocab_size, t->vocab_size);
    EXPECT_EQ(m->max_seq_len, t->max_seq_len);
  }
  // The tiny card builds and its count matches the allocated tensors.
  auto tiny = DecoderLM::create(find_model_card("tiny-mamba").value(), Device::cpu(), 1).value();
  EXPECT_EQ(tiny->num_parameters(), 990'848);
}

}  // namespace
}  // namespace el
