// moe_ops_test.cpp — the mixture-of-experts ops (ops/ops.h "mixture of
// experts") against plain f64 references that never group tokens:
//  * registry cases (forward, finite-difference gradients, bf16/f16) for the
//    router (softmax / sigmoid, normalised or not, k = 1 .. E), the gather,
//    grouped_linear (experts without rows, unused rows), the combine (with and
//    without the gated shared expert, dropped slots), the whole expert path
//    gather -> grouped_linear -> SwiGLU -> grouped_linear -> combine against
//    a per-token dense MLP, the balance loss, the z-loss and add_scaled;
//  * moe_group against a reference stable sort (dropless and capacity),
//    router ids against a reference top-k;
//  * bad arguments named.
// Router logits are drawn well separated (gaps >> the finite-difference
// step), so a perturbation never changes which experts are chosen.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/moe_test_util.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

using Vec = std::vector<double>;

std::string dims_name(std::initializer_list<std::pair<const char*, int64_t>> dims) {
  std::string s;
  for (const auto& [k, v] : dims) s += (s.empty() ? "" : "_") + std::string(k) + std::to_string(v);
  return s;
}

// Logits gaps > 0.5, far above the FD step; routes with an expert left out.
Tensor separated_logits(int64_t n, int64_t e, Rng& rng) {
  return test::separated_logits(n, e, rng, 0.6f, 0.05f);
}
std::vector<int32_t> random_ids(int64_t n, int64_t e, int64_t k, Rng& rng, int64_t skip = -1) {
  return random_routes(n, e, k, rng, skip);
}

// Reference top-k of one row of scores: descending, ties to the lower index.
std::vector<int64_t> topk(const Vec& s, int64_t k) {
  std::vector<int64_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

Vec row_scores(const Vec& l, int64_t r, int64_t e, bool sigmoid) {
  Vec s(static_cast<size_t>(e));
  if (sigmoid) {
    for (int64_t i = 0; i < e; ++i) s[i] = 1.0 / (1.0 + std::exp(-l[r * e + i]));
    return s;
  }
  double mx = -INFINITY, sum = 0;
  for (int64_t i = 0; i < e; ++i) mx = std::max(mx, l[r * e + i]);
  for (int64_t i = 0; i < e; ++i) sum += (s[i] = std::exp(l[r * e + i] - mx));
  for (double& x : s) x /= sum;
  return s;
}

// Reference grouping: slot -> row (-1 dropped), and the kept count per expert.
struct RefGroups {
  std::vector<int64_t> slot_row;
  std::vector<int64_t> offsets;
};
RefGroups ref_groups(const std::vector<int32_t>& ids, int64_t n, int64_t k, int64_t e,
                     int64_t capacity) {
  // Per expert, its slots in priority order (choice j first, then token n).
  std::vector<std::vector<int64_t>> per(static_cast<size_t>(e));
  for (int64_t j = 0; j < k; ++j)
    for (int64_t t = 0; t < n; ++t) per[ids[t * k + j]].push_back(t * k + j);
  RefGroups g;
  g.slot_row.assign(static_cast<size_t>(n * k), -1);
  g.offsets.push_back(0);
  for (int64_t x = 0; x < e; ++x) {
    const int64_t keep = capacity > 0 ? std::min<int64_t>(capacity, per[x].size()) : per[x].size();
    for (int64_t i = 0; i < keep; ++i) g.slot_row[per[x][i]] = g.offsets.back() + i;
    g.offsets.push_back(g.offsets.back() + keep);
  }
  return g;
}

ops::MoeGrouping grouping(const std::vector<int32_t>& ids, int64_t n, int64_t k, int64_t e,
                          int64_t capacity, Device dev) {
  return ops::moe_group(Tensor::from_ints(ids, {n, k}).to(dev), e, capacity);
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---- registry cases -----------------------------------------------------------------

OpCase router_case(int64_t N, int64_t E, int64_t k, bool sigmoid_score, bool normalize) {
  return {std::string(sigmoid_score ? "router_sigmoid_" : "router_softmax_") +
              (normalize ? "norm_" : "raw_") + dims_name({{"N", N}, {"E", E}, {"k", k}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {separated_logits(N, E, rng)};
            inst.differentiable = {true};
            inst.output_always_f32 = true;
            const MoeScore score = sigmoid_score ? MoeScore::sigmoid : MoeScore::softmax;
            inst.run = [=](const std::vector<Tensor>& in) {
              return ops::moe_router(in[0], k, score, normalize).weights;
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec l = to_doubles(in[0]);
              Vec out;
              for (int64_t r = 0; r < N; ++r) {
                const Vec s = row_scores(l, r, E, sigmoid_score);
                const std::vector<int64_t> top = topk(s, k);
                double sum = 0;
                for (int64_t i : top) sum += s[i];
                for (int64_t i : top) out.push_back(normalize ? s[i] / sum : s[i]);
              }
              return out;
            };
            return inst;
          }};
}

OpCase gather_case(int64_t N, int64_t E, int64_t k, int64_t C, int64_t capacity) {
  return {"gather_" + dims_name({{"N", N}, {"E", E}, {"k", k}, {"C", C}, {"cap", capacity}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({N, C}, rng)};
            inst.differentiable = {true};
            const std::vector<int32_t> ids = random_ids(N, E, k, rng, E - 1);
            inst.run = [=](const std::vector<Tensor>& in) {
              return ops::moe_gather(in[0], grouping(ids, N, k, E, capacity, in[0].device()));
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec x = to_doubles(in[0]);
              const RefGroups g = ref_groups(ids, N, k, E, capacity);
              Vec out(static_cast<size_t>(N * k * C), 0.0);
              for (int64_t s = 0; s < N * k; ++s) {
                if (g.slot_row[s] < 0) continue;
                for (int64_t c = 0; c < C; ++c) out[g.slot_row[s] * C + c] = x[(s / k) * C + c];
              }
              return out;
            };
            return inst;
          }};
}

// Rows grouped by `counts` (an expert with 0 rows, and unused rows at the
// end when the counts sum to less than M).
OpCase grouped_linear_case(std::vector<int32_t> counts, int64_t M, int64_t K, int64_t O) {
  const int64_t E = static_cast<int64_t>(counts.size());
  std::string name = "grouped_linear_" + dims_name({{"E", E}, {"M", M}, {"K", K}, {"O", O}});
  for (int32_t c : counts) name += "_" + std::to_string(c);
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({M, K}, rng), random_tensor({E, O, K}, rng, 0.5f)};
            inst.differentiable = {true, true};
            std::vector<int32_t> off{0};
            for (int32_t c : counts) off.push_back(off.back() + c);
            inst.run = [=](const std::vector<Tensor>& in) {
              const Tensor offsets = Tensor::from_ints(off, {E + 1}).to(in[0].device());
              return ops::grouped_linear(in[0], {in[1]}, offsets);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec x = to_doubles(in[0]), w = to_doubles(in[1]);
              Vec y(static_cast<size_t>(M * O), 0.0);
              for (int64_t e = 0; e < E; ++e)
                for (int64_t r = off[e]; r < off[e + 1]; ++r)
                  for (int64_t o = 0; o < O; ++o)
                    for (int64_t i = 0; i < K; ++i)
                      y[r * O + o] += x[r * K + i] * w[(e * O + o) * K + i];
              return y;
            };
            return inst;
          }};
}

OpCase combine_case(int64_t N, int64_t E, int64_t k, int64_t C, int64_t capacity, bool shared) {
  return {"combine_" + dims_name({{"N", N}, {"E", E}, {"k", k}, {"C", C}, {"cap", capacity}}) +
              (shared ? "_shared" : ""),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({N * k, C}, rng), random_tensor({N, k}, rng)};
            if (shared) {
              inst.inputs.push_back(random_tensor({N, C}, rng));
              inst.inputs.push_back(random_tensor({N, 1}, rng, 2.f));
            }
            inst.differentiable.assign(inst.inputs.size(), true);
            const std::vector<int32_t> ids = random_ids(N, E, k, rng, 0);
            inst.run = [=](const std::vector<Tensor>& in) {
              const ops::MoeGrouping g = grouping(ids, N, k, E, capacity, in[0].device());
              return shared ? ops::moe_combine(in[0], in[1], g, in[2], in[3])
                            : ops::moe_combine(in[0], in[1], g);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec ys = to_doubles(in[0]), w = to_doubles(in[1]);
              const RefGroups g = ref_groups(ids, N, k, E, capacity);
              Vec out(static_cast<size_t>(N * C), 0.0);
              for (int64_t t = 0; t < N; ++t) {
                for (int64_t j = 0; j < k; ++j) {
                  const int64_t r = g.slot_row[t * k + j];
                  if (r < 0) continue;
                  for (int64_t c = 0; c < C; ++c) out[t * C + c] += w[t * k + j] * ys[r * C + c];
                }
              }
              if (shared) {
                const Vec sh = to_doubles(in[2]), gl = to_doubles(in[3]);
                for (int64_t t = 0; t < N; ++t)
                  for (int64_t c = 0; c < C; ++c) out[t * C + c] += sigmoid(gl[t]) * sh[t * C + c];
              }
              return out;
            };
            return inst;
          }};
}

// The expert path of nn/moe.h with fixed routing against a dense per-token
// reference: y[n] = sum_j w[n, j] down_e(silu(gate_e x) * up_e x), e = ids[n, j].
OpCase expert_path_case(int64_t N, int64_t E, int64_t k, int64_t C, int64_t F, int64_t capacity) {
  return {"expert_path_" +
              dims_name({{"N", N}, {"E", E}, {"k", k}, {"C", C}, {"F", F}, {"cap", capacity}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({N, C}, rng), random_tensor({N, k}, rng),
                           random_tensor({E, 2 * F, C}, rng, 0.5f),
                           random_tensor({E, C, F}, rng, 0.5f)};
            inst.differentiable = {true, true, true, true};
            const std::vector<int32_t> ids = random_ids(N, E, k, rng, E / 2);
            inst.run = [=](const std::vector<Tensor>& in) {
              const ops::MoeGrouping g = grouping(ids, N, k, E, capacity, in[0].device());
              const Tensor h = ops::grouped_linear(ops::moe_gather(in[0], g), {in[2]}, g.offsets);
              const Tensor ys = ops::grouped_linear(ops::swiglu_packed(h), {in[3]}, g.offsets);
              return ops::moe_combine(ys, in[1], g);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec x = to_doubles(in[0]), w = to_doubles(in[1]), gu = to_doubles(in[2]),
                        dn = to_doubles(in[3]);
              const RefGroups g = ref_groups(ids, N, k, E, capacity);
              Vec out(static_cast<size_t>(N * C), 0.0);
              for (int64_t t = 0; t < N; ++t)
                for (int64_t j = 0; j < k; ++j) {
                  if (g.slot_row[t * k + j] < 0) continue;  // dropped by the capacity
                  const int64_t e = ids[t * k + j];
                  Vec h(static_cast<size_t>(F));
                  for (int64_t f = 0; f < F; ++f) {
                    double a = 0, b = 0;
                    for (int64_t c = 0; c < C; ++c) {
                      a += gu[(e * 2 * F + f) * C + c] * x[t * C + c];
                      b += gu[(e * 2 * F + F + f) * C + c] * x[t * C + c];
                    }
                    h[f] = silu(a) * b;
                  }
                  for (int64_t c = 0; c < C; ++c) {
                    double y = 0;
                    for (int64_t f = 0; f < F; ++f) y += dn[(e * C + c) * F + f] * h[f];
                    out[t * C + c] += w[t * k + j] * y;
                  }
                }
              return out;
            };
            inst.max_fd_elements = 24;
            return inst;
          }};
}

OpCase balance_case(int64_t N, int64_t E, int64_t k, bool sigmoid_score) {
  return {std::string("balance_") + (sigmoid_score ? "sigmoid_" : "softmax_") +
              dims_name({{"N", N}, {"E", E}, {"k", k}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({N, E}, rng, 1.5f)};
            inst.differentiable = {true};
            inst.output_always_f32 = true;
            const std::vector<int32_t> ids = random_ids(N, E, k, rng, E - 1);
            const MoeScore score = sigmoid_score ? MoeScore::sigmoid : MoeScore::softmax;
            inst.run = [=](const std::vector<Tensor>& in) {
              return ops::moe_balance_loss(in[0], Tensor::from_ints(ids, {N, k}).to(in[0].device()),
                                           score);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec l = to_doubles(in[0]);
              Vec f(static_cast<size_t>(E), 0.0), p(static_cast<size_t>(E), 0.0);
              for (int32_t id : ids) f[id] += 1.0 / N;
              for (int64_t r = 0; r < N; ++r) {
                Vec s = row_scores(l, r, E, sigmoid_score);
                const double sum = std::accumulate(s.begin(), s.end(), 0.0);
                for (int64_t i = 0; i < E; ++i) p[i] += s[i] / sum / N;
              }
              double loss = 0;
              for (int64_t i = 0; i < E; ++i) loss += f[i] * p[i];
              return Vec{E * loss};
            };
            return inst;
          }};
}

OpCase z_loss_case(int64_t N, int64_t E) {
  return {"z_loss_" + dims_name({{"N", N}, {"E", E}}), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({N, E}, rng, 2.f)};
            inst.differentiable = {true};
            inst.output_always_f32 = true;
            inst.run = [](const std::vector<Tensor>& in) { return ops::moe_z_loss(in[0]); };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec l = to_doubles(in[0]);
              double sum = 0;
              for (int64_t r = 0; r < N; ++r) {
                double mx = -INFINITY, s = 0;
                for (int64_t i = 0; i < E; ++i) mx = std::max(mx, l[r * E + i]);
                for (int64_t i = 0; i < E; ++i) s += std::exp(l[r * E + i] - mx);
                const double lse = mx + std::log(s);
                sum += lse * lse;
              }
              return Vec{sum / N};
            };
            return inst;
          }};
}

OpCase add_scaled_case(int64_t n, float alpha) {
  return {"add_scaled_n" + std::to_string(n), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({n}, rng), random_tensor({n}, rng)};
            inst.differentiable = {true, true};
            inst.run = [=](const std::vector<Tensor>& in) {
              return ops::add_scaled(in[0], in[1], alpha);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const Vec a = to_doubles(in[0]), b = to_doubles(in[1]);
              Vec out(a.size());
              for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + alpha * b[i];
              return out;
            };
            return inst;
          }};
}

std::vector<OpCase> moe_cases() {
  return {
      router_case(7, 5, 2, false, true),  // Mixtral
      router_case(7, 5, 2, false, false),  // Qwen2-MoE norm_topk_prob false
      router_case(6, 8, 1, false, true),   // k = 1: the weight is 1
      router_case(5, 4, 4, false, false),  // k = E
      router_case(7, 5, 2, true, true),
      router_case(9, 6, 3, true, false),
      gather_case(7, 5, 2, 6, 0),
      gather_case(9, 4, 2, 3, 3),  // capacity 3: some slots dropped, unused rows
      grouped_linear_case({3, 0, 5, 1}, 9, 6, 4),  // expert 1 empty
      grouped_linear_case({2, 4, 0}, 10, 5, 6),    // 4 unused rows at the end
      combine_case(7, 5, 2, 6, 0, false),
      combine_case(7, 5, 2, 6, 0, true),
      combine_case(9, 4, 2, 5, 3, true),  // dropped slots
      expert_path_case(7, 5, 2, 6, 3, 0),
      expert_path_case(10, 4, 2, 5, 4, 4),  // capacity: dropped slots contribute nothing
      expert_path_case(5, 3, 1, 4, 3, 0),
      balance_case(7, 5, 2, false),
      balance_case(9, 6, 3, true),
      z_loss_case(7, 5),
      z_loss_case(3, 9),
      add_scaled_case(5, 0.25f),
  };
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Moe, OpCaseTest, ::testing::ValuesIn(moe_cases()), op_case_name);

namespace {

TEST(MoeRouter, IdsAreTheReferenceTopK) {
  Rng rng(11);
  for (bool sig : {false, true}) {
    const int64_t N = 13, E = 7, k = 3;
    const Tensor logits = random_tensor({N, E}, rng, 2.f);
    const ops::MoeRouting r =
        ops::moe_router(logits, k, sig ? MoeScore::sigmoid : MoeScore::softmax, true);
    ASSERT_EQ(r.ids.dtype(), DType::i32);
    ASSERT_EQ(r.ids.shape(), (Shape{N, k}));
    EXPECT_EQ(r.weights.dtype(), DType::f32);
    const Vec l = to_doubles(logits);
    const int32_t* got = r.ids.data<int32_t>();
    for (int64_t t = 0; t < N; ++t) {
      const std::vector<int64_t> want = topk(row_scores(l, t, E, sig), k);
      for (int64_t j = 0; j < k; ++j) EXPECT_EQ(got[t * k + j], want[j]) << t << " " << j;
    }
  }
}

TEST(MoeRouter, TiesGoToTheLowerIndex) {
  const Tensor logits = Tensor::from_floats({1, 3, 3, 0, 3}, {1, 5});
  const ops::MoeRouting r = ops::moe_router(logits, 2, MoeScore::softmax, false);
  EXPECT_EQ(r.ids.data<int32_t>()[0], 1);
  EXPECT_EQ(r.ids.data<int32_t>()[1], 2);
}

void check_grouping(int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t skip, uint64_t seed) {
  Rng rng(seed);
  const std::vector<int32_t> ids = random_ids(N, E, k, rng, skip);
  const ops::MoeGrouping g = grouping(ids, N, k, E, capacity, Device::cpu());
  const RefGroups want = ref_groups(ids, N, k, E, capacity);
  ASSERT_EQ(g.offsets.numel(), E + 1);
  for (int64_t e = 0; e <= E; ++e) EXPECT_EQ(g.offsets.data<int32_t>()[e], want.offsets[e]) << e;
  std::vector<int64_t> sorted(static_cast<size_t>(N * k), -1);
  for (int64_t s = 0; s < N * k; ++s) {
    EXPECT_EQ(g.slot_row.data<int32_t>()[s], want.slot_row[s]) << "slot " << s;
    if (want.slot_row[s] >= 0) sorted[want.slot_row[s]] = s;
  }
  for (int64_t r = 0; r < N * k; ++r) EXPECT_EQ(g.sorted_slot.data<int32_t>()[r], sorted[r]) << r;
}

TEST(MoeGroup, DroplessMatchesReferenceSort) {
  check_grouping(7, 5, 2, 0, -1, 1);
  check_grouping(33, 8, 2, 0, 3, 2);  // expert 3 receives no token
  check_grouping(5, 3, 3, 0, -1, 3);  // k = E
}

TEST(MoeGroup, CapacityKeepsFirstChoicesFirst) {
  check_grouping(20, 4, 2, 6, -1, 4);
  check_grouping(9, 3, 2, 1, -1, 5);
  // Every token's first choice is expert 0, second expert 1, capacity 2:
  // expert 0 keeps tokens 0, 1; expert 1 keeps tokens 0, 1 (second choices).
  const std::vector<int32_t> ids = {0, 1, 0, 1, 0, 1, 0, 1};
  const ops::MoeGrouping g = grouping(ids, 4, 2, 3, 2, Device::cpu());
  const std::vector<int32_t> rows(g.slot_row.data<int32_t>(), g.slot_row.data<int32_t>() + 8);
  EXPECT_EQ(rows, (std::vector<int32_t>{0, 2, 1, 3, -1, -1, -1, -1}));
  EXPECT_EQ(g.offsets.data<int32_t>()[3], 4);
}

// Weights given as parts (row blocks of one buffer, as gate/up of each
// expert could be) compute what the single [E, O, K] tensor computes, and
// each part gets its row block of dW.
TEST(MoeGroupedLinear, StackedPartsEqualOneTensor) {
  Rng rng(8);
  const int64_t E = 3, M = 9, K = 5, O = 4;
  const Tensor x = random_tensor({M, K}, rng), w = random_tensor({E, O, K}, rng);
  const Tensor dy = random_tensor({M, O}, rng);
  const Tensor offsets = Tensor::from_ints({0, 3, 3, 8}, {E + 1});
  auto run = [&](bool parts) {
    Tensor buf = w.clone();
    std::vector<Tensor> ws;
    if (parts) {
      const Tensor rows = buf.view({E * O, K});
      for (int64_t r = 0; r < E * O; r += O / 2) ws.push_back(rows.slice0(r, r + O / 2));
    } else {
      ws.push_back(buf);
    }
    for (Tensor& p : ws) p.set_requires_grad(true);
    tape().clear();
    Tensor y = ops::grouped_linear(x, ws, offsets);
    accumulate_grad(y, dy.clone());
    tape().backward(Tensor::zeros({1}));
    std::vector<float> grad;
    for (const Tensor& p : ws) {
      const std::vector<float> g = p.grad().to_floats();
      grad.insert(grad.end(), g.begin(), g.end());
    }
    return std::make_pair(y.to_floats(), grad);
  };
  const auto one = run(false), parts = run(true);
  EXPECT_EQ(one.first, parts.first);
  EXPECT_EQ(one.second, parts.second);
}

TEST(MoeLoss, BalancedRouterGivesK) {
  // Uniform probabilities and each expert chosen equally often: f_e = k / E,
  // P_e = 1 / E, so E sum_e f_e P_e = k (Switch's minimum for k = 1).
  const int64_t N = 8, E = 4, k = 2;
  const Tensor logits = Tensor::zeros({N, E});
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < N; ++t) {
    ids.push_back(static_cast<int32_t>(t % E));
    ids.push_back(static_cast<int32_t>((t + 1) % E));
  }
  const Tensor loss = ops::moe_balance_loss(logits, Tensor::from_ints(ids, {N, k}), MoeScore::softmax);
  EXPECT_NEAR(loss.item(), 2.0f, 1e-6f);
  // z-loss of zero logits: lse = log E.
  EXPECT_NEAR(ops::moe_z_loss(logits).item(), std::log(4.0) * std::log(4.0), 1e-5);
}

TEST(MoeOps, BadArgumentsAreReported) {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const Tensor logits = Tensor::zeros({3, 4});
  EXPECT_NE(message([&] { ops::moe_router(logits, 5, MoeScore::softmax, true); }).find("k 5"),
            std::string::npos);
  EXPECT_NE(message([&] { ops::moe_group(Tensor::from_ints({0, 7}, {1, 2}), 4); })
                .find("names expert 7"),
            std::string::npos);
  const Tensor x = Tensor::zeros({4, 3});
  const Tensor offsets = Tensor::from_ints({0, 2, 4}, {3});
  EXPECT_NE(message([&] { ops::grouped_linear(x, {Tensor::zeros({2, 5, 4})}, offsets); })
                .find("w[E, O, K]"),
            std::string::npos);
}

}  // namespace
}  // namespace el::test
