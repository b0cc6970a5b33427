// partial_rope_test.cpp — GPT-NeoX's ops: RoPE on the first R < D dims of each
// head (inv_freq of R/2 values) through rope, split_qkv_rope and the
// per-row-offset inference ops, and the erf GELU (gelu_exact): registry cases
// (forward vs f64 reference, gradients vs finite differences, bf16/f16) and
// direct checks.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// Rotation of one head row x[d] at position pos over the first r dims (pairs
// (i, i + r/2), frequency theta^(-2i/r)); the rest copied.
void rotate_ref(const double* x, double* y, int64_t d, int64_t r, double pos) {
  const int64_t half = r / 2;
  for (int64_t i = 0; i < d; ++i) y[i] = x[i];
  for (int64_t i = 0; i < half; ++i) {
    const double ang = pos * std::pow(10000.0, -2.0 * static_cast<double>(i) / r);
    y[i] = x[i] * std::cos(ang) - x[half + i] * std::sin(ang);
    y[half + i] = x[half + i] * std::cos(ang) + x[i] * std::sin(ang);
  }
}

std::vector<double> partial_rope_ref(const Tensor& x, int64_t r, int64_t pos_offset) {
  const std::vector<double> xv = to_doubles(x);
  const int64_t t = x.dim(1), h = x.dim(2), d = x.dim(3);
  std::vector<double> y(xv.size());
  for (int64_t row = 0; row < x.dim(0) * t; ++row) {
    for (int64_t hh = 0; hh < h; ++hh) {
      const int64_t base = (row * h + hh) * d;
      rotate_ref(xv.data() + base, y.data() + base, d, r, static_cast<double>(pos_offset + row % t));
    }
  }
  return y;
}

std::string shape_name(const Shape& s) {
  std::string name = "x";
  for (int64_t d : s) name += "_" + std::to_string(d);
  return name;
}

OpCase partial_rope_case(Shape shape, int64_t r, int64_t pos_offset) {
  return {shape_name(shape) + "_r" + std::to_string(r) + "_pos" + std::to_string(pos_offset),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng)};
            inst.differentiable = {true};
            inst.run = [=](const std::vector<Tensor>& in) {
              return ops::rope(in[0], ops::rope_inv_freq(r, 10000.f, Device::cpu()), pos_offset);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              return partial_rope_ref(in[0], r, pos_offset);
            };
            return inst;
          }};
}

// split_qkv_rope with R/2 frequencies: output `part` (0 q, 1 k, 2 v).
OpCase partial_split_case(int64_t t, int64_t h, int64_t hkv, int64_t d, int64_t r, int part) {
  const char* parts[] = {"q", "k", "v"};
  return {"t" + std::to_string(t) + "_h" + std::to_string(h) + "_kv" + std::to_string(hkv) +
              "_d" + std::to_string(d) + "_r" + std::to_string(r) + "_" + parts[part],
          [=](Rng& rng) {
            OpInstance inst;
            const int64_t b = 2, heads = h + 2 * hkv;
            inst.inputs = {random_tensor({b, t, heads * d}, rng)};
            inst.differentiable = {true};
            inst.run = [=](const std::vector<Tensor>& in) {
              const ops::QKV s =
                  ops::split_qkv_rope(in[0], h, hkv, ops::rope_inv_freq(r, 10000.f, Device::cpu()), 3);
              return part == 0 ? s.q : part == 1 ? s.k : s.v;
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const std::vector<double> p = to_doubles(in[0]);
              const int64_t first = part == 0 ? 0 : part == 1 ? h : h + hkv;
              const int64_t n = part == 0 ? h : hkv;
              std::vector<double> y;
              std::vector<double> row(static_cast<size_t>(d));
              for (int64_t pr = 0; pr < b * t; ++pr) {
                for (int64_t hh = 0; hh < n; ++hh) {
                  const double* x = p.data() + (pr * heads + first + hh) * d;
                  if (part == 2) {
                    row.assign(x, x + d);
                  } else {
                    rotate_ref(x, row.data(), d, r, static_cast<double>(3 + pr % t));
                  }
                  y.insert(y.end(), row.begin(), row.end());
                }
              }
              return y;
            };
            return inst;
          }};
}

std::vector<OpCase> partial_rope_cases() {
  std::vector<OpCase> cases = {
      partial_rope_case({1, 3, 2, 8}, 2, 0),  partial_rope_case({2, 5, 3, 16}, 4, 7),
      partial_rope_case({1, 7, 2, 6}, 4, 1),  // D/2 odd, R < D
      partial_rope_case({2, 4, 1, 12}, 6, 2), partial_rope_case({1, 2, 2, 8}, 8, 5)};  // R = D
  for (int part = 0; part < 3; ++part) {
    cases.push_back(partial_split_case(4, 2, 1, 16, 4, part));  // GQA
    cases.push_back(partial_split_case(3, 3, 3, 10, 6, part));
  }
  return cases;
}

double gelu_exact_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

OpCase gelu_exact_case(Shape shape, float scale) {
  return {shape_name(shape) + "_scale" + std::to_string(static_cast<int>(scale)), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng, scale)};
            inst.differentiable = {true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::gelu_exact(in[0]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              for (double& v : x) v = gelu_exact_ref(v);
              return x;
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(PartialRope, OpCaseTest, ::testing::ValuesIn(partial_rope_cases()),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(GeluExact, OpCaseTest,
                         ::testing::Values(gelu_exact_case({1}, 1.f), gelu_exact_case({3, 5}, 1.f),
                                           gelu_exact_case({7, 17}, 3.f),
                                           gelu_exact_case({33, 64}, 1.f)),
                         op_case_name);

namespace {

// The erf and tanh forms differ (by up to ~1e-3 near |x| = 2): the golden
// checks against transformers' "gelu" need the erf one.
TEST(GeluExact, DiffersFromTanhApproximation) {
  const Tensor x = Tensor::from_floats({-3.f, -2.f, -1.f, 0.f, 1.f, 2.f, 3.f}, {7});
  const std::vector<float> e = ops::gelu_exact(x).to_floats(), t = ops::gelu(x).to_floats();
  double max_diff = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_NEAR(e[i], gelu_exact_ref(x.to_floats()[i]), 1e-6);
    max_diff = std::max(max_diff, std::abs(static_cast<double>(e[i]) - t[i]));
  }
  EXPECT_GT(max_diff, 1e-4);
}

// The inference ops at per-row offsets agree with ops::rope at each row's
// offset, pass dims [R, D) through, and write the same keys to the cache.
TEST(PartialRope, InferenceOpsMatchRope) {
  NoGrad no_grad;
  Rng rng(5);
  const int64_t b = 2, t = 3, h = 2, hkv = 1, d = 16, r = 4;
  const Tensor freq = ops::rope_inv_freq(r, 10000.f, Device::cpu());
  const Tensor positions = Tensor::from_ints({0, 5}, {b});
  const Tensor packed = random_tensor({b, t, (h + 2 * hkv) * d}, rng);
  const ops::QKV at = ops::split_qkv_rope_at(packed, h, hkv, freq, positions);
  Tensor kc = Tensor::zeros({b, 12, hkv, d}), vc = Tensor::zeros({b, 12, hkv, d});
  const Tensor q = ops::qkv_rope_cache_write(packed, h, hkv, freq, positions, kc, vc);
  const std::vector<float> q_at = at.q.to_floats(), q_cw = q.to_floats();
  const std::vector<float> k_at = at.k.to_floats(), kcv = kc.to_floats();
  const std::vector<float> x4 = ops::rope_at(at.q, Tensor(), positions).to_floats();
  for (int64_t bb = 0; bb < b; ++bb) {
    const int32_t pos = bb == 0 ? 0 : 5;
    const Tensor row = packed.slice0(bb, bb + 1).view({1, t, h + 2 * hkv, d}).clone();
    const ops::QKV want = ops::split_qkv_rope(row.view({1, t, (h + 2 * hkv) * d}), h, hkv, freq, pos);
    const std::vector<float> wq = want.q.to_floats(), wk = want.k.to_floats();
    for (size_t i = 0; i < wq.size(); ++i) {
      EXPECT_NEAR(q_at[bb * wq.size() + i], wq[i], 1e-6) << "split_qkv_rope_at q " << bb;
      EXPECT_NEAR(q_cw[bb * wq.size() + i], wq[i], 1e-6) << "qkv_rope_cache_write q " << bb;
    }
    for (int64_t s = 0; s < t; ++s) {
      for (int64_t i = 0; i < hkv * d; ++i) {
        const float k = wk[s * hkv * d + i];
        EXPECT_NEAR(k_at[(bb * t + s) * hkv * d + i], k, 1e-6);
        EXPECT_NEAR(kcv[(bb * 12 + pos + s) * hkv * d + i], k, 1e-6) << "cache row " << pos + s;
      }
    }
  }
  // Dims [R, D) of q are the projection's, unrotated.
  const std::vector<float> p = packed.to_floats();
  for (int64_t i = r; i < d; ++i) EXPECT_EQ(q_at[(1 * t + 2) * h * d + i], p[(1 * t + 2) * (h + 2 * hkv) * d + i]);
  EXPECT_EQ(x4, q_at);  // rope_at without frequencies: the identity
}

TEST(PartialRope, RejectsMoreFrequenciesThanHalfTheHead) {
  try {
    (void)ops::rope(Tensor::zeros({1, 2, 3, 8}), Tensor::zeros({5}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::rope: inv_freq f32[5] does not match x"),
              std::string::npos)
        << e.what();
  }
  try {
    (void)ops::split_qkv_rope(Tensor::zeros({1, 2, 24}), 1, 1, Tensor::zeros({5}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("or fewer for a partial rotary"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace el::test
