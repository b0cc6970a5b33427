// nsa_test.cpp — attention: nsa (nn/nsa.h) in the model:
//  * NsaAttention::forward against a dense f64 reference written from the
//    paper's equations (compression, masked attentions, top-n selection,
//    gates), at overlapping compression blocks and GQA;
//  * parameter names, count_parameters against the allocated tensors, the
//    key counts behind flops_per_token against brute force;
//  * a tiny NSA model's loss falls when trained;
//  * forward_cached (prefill + decode, recomputing from the raw cache)
//    matches the full forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "common/model_test_util.h"
#include "common/ops_harness.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/nsa.h"
#include "train/optimizer.h"

namespace el {
namespace {

using test::random_ids;

// A small NSA card: d_model 16, 4 heads of 4 dims over 2 kv heads; l = 4,
// d = 2 (overlapping compression blocks), l' = 4, n = 2, w = 3.
ModelCard nsa_card(const std::string& extra = "", int n_layer = 2) {
  const std::string yaml = fmt::format(
      "name: nsa\nn_layer: {}\nd_model: 16\nn_head: 4\nn_kv_head: 2\nd_ff: 24\nvocab_size: 37\n"
      "max_seq_len: 32\nattention: nsa\nnsa_window: 3\nnsa_compress_block: 4\n"
      "nsa_compress_stride: 2\nnsa_select_block: 4\nnsa_select_count: 2\n{}",
      n_layer, extra);
  auto r = parse_model_card(yaml, "nsa.yaml");
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

using Vec = std::vector<double>;

// y[N, O] = x[N, I] w[O, I]^T
Vec matmul_t(const Vec& x, const Vec& w, int64_t n, int64_t in, int64_t out) {
  Vec y(static_cast<size_t>(n * out), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) y[r * out + o] += x[r * in + i] * w[o * in + i];
  return y;
}

// Attention of one batch row: q[T, H, D], k/v[S, Hkv, D]; mask(g, t, s);
// returns out[T, H, D] and p[H][T][S] (0 where masked).
struct Attn {
  Vec out;
  std::vector<Vec> p;  // [H] of [T * S]
};
Attn attend(const Vec& q, const Vec& k, const Vec& v, int64_t T, int64_t S, int64_t H,
            int64_t Hkv, int64_t D, const std::function<bool(int64_t, int64_t, int64_t)>& mask) {
  Attn a;
  a.out.assign(static_cast<size_t>(T * H * D), 0.0);
  a.p.assign(static_cast<size_t>(H), Vec(static_cast<size_t>(T * S), 0.0));
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / Hkv);
    for (int64_t t = 0; t < T; ++t) {
      Vec sc(static_cast<size_t>(S), -INFINITY);
      double mx = -INFINITY;
      for (int64_t s = 0; s < S; ++s) {
        if (!mask(g, t, s)) continue;
        double dot = 0;
        for (int64_t e = 0; e < D; ++e) dot += q[(t * H + h) * D + e] * k[(s * Hkv + g) * D + e];
        sc[s] = dot * scale;
        mx = std::max(mx, sc[s]);
      }
      if (mx == -INFINITY) continue;
      double sum = 0;
      for (double& x : sc) sum += (x = std::exp(x - mx));
      for (int64_t s = 0; s < S; ++s) {
        const double p = sc[s] / sum;
        a.p[h][t * S + s] = p;
        for (int64_t e = 0; e < D; ++e) a.out[(t * H + h) * D + e] += p * v[(s * Hkv + g) * D + e];
      }
    }
  }
  return a;
}

// The layer in f64 from the paper's equations, for x[B, T, C] (no RoPE).
Vec nsa_reference(const NsaAttention& m, const ModelCard& card, const Tensor& x) {
  const int64_t B = x.dim(0), T = x.dim(1), C = x.dim(2), H = m.n_head, Hkv = m.n_kv_head,
                D = m.head_dim, l = m.compress_block, d = m.compress_stride,
                sb = m.select_block, n = m.select_count, w = m.window;
  (void)card;
  ParameterList params;
  m.collect_parameters("a", params);
  auto get = [&](const std::string& name) {
    for (const auto& p : params)
      if (p.name == "a." + name) return test::to_doubles(p.tensor);
    EL_ENSURE(false, "no parameter {}", name);
    return Vec();
  };
  const Vec wq = get("q_proj.weight"), wk = get("k_proj.weight"), wv = get("v_proj.weight"),
            wo = get("o_proj.weight"), wg = get("gate_proj.weight"),
            wck = get("compress_k.weight"), pk = get("compress_k.pos"),
            wcv = get("compress_v.weight"), pv = get("compress_v.pos");
  const Vec xv = test::to_doubles(x);
  const int64_t nc = T >= l ? (T - l) / d + 1 : 0;
  Vec y;
  for (int64_t b = 0; b < B; ++b) {
    const Vec xb(xv.begin() + b * T * C, xv.begin() + (b + 1) * T * C);
    const Vec q = matmul_t(xb, wq, T, C, H * D), k = matmul_t(xb, wk, T, C, Hkv * D),
              v = matmul_t(xb, wv, T, C, Hkv * D), g = matmul_t(xb, wg, T, C, 3 * H);
    // k_cmp_i = W_ck flatten(k[i d .. i d + l) + pe_k), per kv head.
    auto compress = [&](const Vec& src, const Vec& wc, const Vec& pe) {
      Vec out(static_cast<size_t>(nc * Hkv * D), 0.0);
      for (int64_t i = 0; i < nc; ++i)
        for (int64_t hk = 0; hk < Hkv; ++hk)
          for (int64_t e = 0; e < D; ++e)
            for (int64_t j = 0; j < l; ++j)
              for (int64_t f = 0; f < D; ++f)
                out[(i * Hkv + hk) * D + e] +=
                    wc[e * l * D + j * D + f] * (src[((i * d + j) * Hkv + hk) * D + f] + pe[j * D + f]);
      return out;
    };
    const Vec kc = compress(k, wck, pk), vc = compress(v, wcv, pv);
    const Attn cmp = attend(q, kc, vc, T, nc, H, Hkv, D, [&](int64_t, int64_t t, int64_t i) {
      return i * d + l - 1 <= t;
    });
    // Selection: importance of block j = sum over the group's heads and the
    // compressed tokens inside j of p_cmp; own block always; top n.
    std::vector<std::vector<std::vector<int64_t>>> sel(
        static_cast<size_t>(Hkv), std::vector<std::vector<int64_t>>(static_cast<size_t>(T)));
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t jt = t / sb;
        Vec score(static_cast<size_t>(jt + 1), 0.0);
        for (int64_t h = hk * (H / Hkv); h < (hk + 1) * (H / Hkv); ++h)
          for (int64_t i = 0; i < nc; ++i)
            for (int64_t j = 0; j < jt; ++j)
              if (i * d >= j * sb && i * d + l <= (j + 1) * sb) score[j] += cmp.p[h][t * nc + i];
        score[jt] = INFINITY;
        std::vector<int64_t> idx(static_cast<size_t>(jt + 1));
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t c) { return score[a] > score[c]; });
        idx.resize(static_cast<size_t>(std::min(n, jt + 1)));
        sel[hk][t] = idx;
      }
    const Attn slc = attend(q, k, v, T, T, H, Hkv, D, [&](int64_t g2, int64_t t, int64_t s) {
      const auto& bl = sel[g2][t];
      return s <= t && std::find(bl.begin(), bl.end(), s / sb) != bl.end();
    });
    const Attn win = attend(q, k, v, T, T, H, Hkv, D,
                            [&](int64_t, int64_t t, int64_t s) { return s <= t && s > t - w; });
    Vec o(static_cast<size_t>(T * H * D), 0.0);
    auto sig = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t e = 0; e < D; ++e) {
          const int64_t i = (t * H + h) * D + e;
          o[i] = sig(g[t * 3 * H + 3 * h]) * cmp.out[i] + sig(g[t * 3 * H + 3 * h + 1]) * slc.out[i] +
                 sig(g[t * 3 * H + 3 * h + 2]) * win.out[i];
        }
    const Vec yb = matmul_t(o, wo, T, H * D, C);
    y.insert(y.end(), yb.begin(), yb.end());
  }
  return y;
}

void randomize(const ParameterList& params, uint64_t seed, float scale) {
  Rng rng(seed);
  for (const auto& p : params) {
    Tensor t = p.tensor;
    t.copy_from(test::random_tensor(t.shape(), rng, scale));
  }
}

TEST(Nsa, ForwardMatchesDenseReference) {
  const ModelCard card = nsa_card("pos_encoding: none\n");
  NsaAttention m(card, Device::cpu());
  ParameterList params;
  m.collect_parameters("a", params);
  randomize(params, 4, 0.4f);
  Rng rng(8);
  for (int64_t T : {3, 19}) {  // no compressed token yet; several blocks and selections
    const Tensor x = test::random_tensor({2, T, 16}, rng);
    const Tensor y = m.forward(x, Tensor());
    EXPECT_TRUE(test::all_close(y.to_floats(), nsa_reference(m, card, x), {2e-5, 2e-4},
                                fmt::format("T {}", T)));
  }
}

TEST(Nsa, ParameterNamesAndCounts) {
  const ModelCard card = nsa_card();
  auto model = DecoderLM::create(card, Device::cpu(), 1).value();
  std::vector<std::string> names;
  for (const auto& p : model->parameters())
    if (p.name.rfind("model.layers.0.self_attn.", 0) == 0) names.push_back(p.name.substr(25));
  const std::vector<std::string> want = {
      "q_proj.weight",     "k_proj.weight",  "v_proj.weight",     "o_proj.weight",
      "gate_proj.weight",  "compress_k.weight", "compress_k.pos", "compress_v.weight",
      "compress_v.pos"};
  EXPECT_EQ(names, want);
  EXPECT_EQ(model->num_parameters(), count_parameters(card).total);
  const ModelCard biased = nsa_card("qkv_bias: true\no_bias: true\n");
  EXPECT_EQ(DecoderLM::create(biased, Device::cpu(), 1).value()->num_parameters(),
            count_parameters(biased).total);
  // Every parameter got a non-zero init (the compression weights included).
  for (const auto& p : model->parameters()) {
    if (p.name.find("compress") == std::string::npos) continue;
    const std::vector<float> v = p.tensor.to_floats();
    EXPECT_GT(std::count_if(v.begin(), v.end(), [](float f) { return f != 0.f; }), 0) << p.name;
  }
}

// nsa_mean_keys against counting the masks key by key.
TEST(Nsa, FlopKeyCountsMatchBruteForce) {
  for (int64_t T : {1, 7, 32}) {
    const ModelCard c = nsa_card();
    const int64_t l = c.nsa_compress_block, d = c.nsa_compress_stride, sb = c.nsa_select_block,
                  n = c.nsa_select_count, w = c.nsa_window;
    const int64_t nc = nsa_compressed_tokens(c, T);
    double cmp = 0, slc = 0, win = 0;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < nc; ++i) cmp += i * d + l - 1 <= t;
      // own block plus the n - 1 latest full ones (any n - 1 full blocks count alike)
      for (int64_t s = 0; s <= t; ++s) {
        const int64_t j = s / sb, jt = t / sb;
        slc += j == jt || j >= jt - (n - 1);
        win += s > t - w;
      }
    }
    const NsaKeyCounts k = nsa_mean_keys(c, T);
    EXPECT_DOUBLE_EQ(k.compressed, cmp / static_cast<double>(T)) << T;
    EXPECT_DOUBLE_EQ(k.selected, slc / static_cast<double>(T)) << T;
    EXPECT_DOUBLE_EQ(k.window, win / static_cast<double>(T)) << T;
    // The FLOP count uses them: 4 H D per key and layer.
    const FlopsPerToken f = flops_per_token(c, T);
    EXPECT_DOUBLE_EQ(f.attention_forward, 2.0 * 2.0 * 4 * 4 * 2 * (k.compressed + k.selected + k.window));
  }
  // Limit: every block selectable and a full window: both sparse branches
  // read the causal (T + 1) / 2 keys.
  const ModelCard big = nsa_card("", 1);
  ModelCard all = big;
  all.nsa_select_count = 8;
  all.nsa_window = 32;
  const NsaKeyCounts k = nsa_mean_keys(all, 32);
  EXPECT_DOUBLE_EQ(k.selected, 16.5);
  EXPECT_DOUBLE_EQ(k.window, 16.5);
}

TEST(Nsa, TrainingReducesLoss) {
  auto m = DecoderLM::create(nsa_card("tied_embeddings: false\n"), Device::cpu(), 11).value();
  AdamW opt(m->parameters(), AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
  const Tensor ids = random_ids(2, 16, 37, 1), targets = random_ids(2, 16, 37, 2);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    Tensor loss = m->loss(ids, targets);
    (step == 0 ? first : last) = loss.item();
    tape().backward(loss);
    opt.step(1e-2f);
    opt.zero_grad();
  }
  EXPECT_LT(last, 0.5 * first);
  // The compression and gate parameters learned too (gradient reached them).
  for (const auto& p : m->parameters()) {
    if (p.name.find("compress_k.weight") != std::string::npos ||
        p.name.find("gate_proj") != std::string::npos) {
      EXPECT_GT(backend_for(Device::cpu()).sum_squares(p.tensor), 0.0) << p.name;
    }
  }
}

TEST(Nsa, CachedForwardMatchesFullForward) {
  NoGrad no_grad;
  for (const std::string pe : {"rope", "none"}) {
    auto model = DecoderLM::create(nsa_card("pos_encoding: " + pe + "\n"), Device::cpu(), 3).value();
    const int64_t T = 14, B = 2, V = 37;
    const Tensor ids = random_ids(B, T, V, 5);
    const std::vector<float> full = model->forward(ids).to_floats();
    KvCache cache = KvCache::create(model->card(), B, T, DType::f32, Device::cpu()).value();
    const std::vector<float> all = ids.to_floats();
    for (int64_t t0 = 0; t0 < T;) {
      const int64_t t1 = t0 == 0 ? 6 : t0 + 1;  // a prefill, then decode steps
      std::vector<int32_t> chunk;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = t0; t < t1; ++t) chunk.push_back(static_cast<int32_t>(all[b * T + t]));
      const std::vector<float> got =
          model->forward_cached(Tensor::from_ints(chunk, {B, t1 - t0}), cache).to_floats();
      cache.advance(static_cast<int32_t>(t1 - t0));
      std::vector<double> want;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t v = 0; v < V; ++v) want.push_back(full[(b * T + t) * V + v]);
      EXPECT_TRUE(test::all_close(got, want, {2e-5, 2e-4}, fmt::format("{} [{}, {})", pe, t0, t1)));
      t0 = t1;
    }
  }
}

}  // namespace
}  // namespace el
