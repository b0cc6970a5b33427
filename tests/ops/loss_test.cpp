// loss_test.cpp — cross_entropy: registry cases (with ignored targets) and checks.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// Mean over kept rows of lse - logit[target], in f64.
double cross_entropy_ref(const Tensor& logits, const Tensor& targets) {
  const std::vector<double> l = to_doubles(logits), t = to_doubles(targets);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] < 0) continue;
    double mx = -INFINITY;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, l[i * v + j]);
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(l[i * v + j] - mx);
    sum += mx + std::log(s) - l[i * v + static_cast<int64_t>(t[i])];
    ++count;
  }
  return count ? sum / count : 0.0;
}

OpCase ce_case(int64_t n, int64_t v, double ignore_frac, float scale) {
  std::string name = "N" + std::to_string(n) + "_V" + std::to_string(v) + "_ignore" +
                     std::to_string(static_cast<int>(ignore_frac * 100)) + "_scale" +
                     std::to_string(static_cast<int>(scale));
  return {name, [=](Rng& rng) {
            OpInstance inst;
            Tensor t = random_ints({n}, rng, 0, static_cast<int32_t>(v));
            for (int64_t i = 0; i < n; ++i) {
              if (rng.uniform() < ignore_frac) t.data<int32_t>()[i] = -1;
            }
            inst.inputs = {random_tensor({n, v}, rng, scale), t};
            inst.differentiable = {true, false};
            inst.output_always_f32 = true;  // the loss is f32 for any logits dtype
            inst.run = [](const std::vector<Tensor>& in) {
              return ops::cross_entropy(in[0], in[1]);
            };
            inst.reference = [](const std::vector<Tensor>& in) {
              return std::vector<double>{cross_entropy_ref(in[0], in[1])};
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(CrossEntropy, OpCaseTest,
                         ::testing::Values(ce_case(1, 5, 0.0, 1.f), ce_case(3, 17, 0.3, 1.f),
                                           ce_case(7, 64, 0.3, 4.f), ce_case(33, 17, 0.5, 1.f),
                                           ce_case(5, 300, 0.2, 2.f), ce_case(4, 5, 1.0, 1.f)),
                         op_case_name);

TEST(CrossEntropyOp, LargeVocabAndExtremeLogits) {
  // Vocab of the quick suite, logits far from 0 (the max must be subtracted).
  Rng rng(9);
  Tensor logits = random_tensor({16, 4096}, rng, 3.f);
  for (int64_t j = 0; j < 4096; ++j) logits.data<float>()[j] += 500.f;  // row 0 shifted
  Tensor t = random_ints({16}, rng, 0, 4096);
  t.data<int32_t>()[3] = -1;
  const Tensor loss = ops::cross_entropy(logits, t);
  EXPECT_EQ(loss.numel(), 1);
  EXPECT_NEAR(loss.item(), cross_entropy_ref(logits, t), 1e-4);
}

TEST(CrossEntropyOp, GradientRowsSumToZeroAndIgnoredRowsAreZero) {
  Rng rng(4);
  Tensor logits = random_tensor({4, 9}, rng);
  logits.set_requires_grad(true);
  const Tensor t = Tensor::from_ints({2, -1, 8, 0}, {4});
  Tensor loss = ops::cross_entropy(logits, t);
  tape().backward(loss);
  const std::vector<float> g = logits.grad().to_floats();
  for (int i = 0; i < 4; ++i) {
    double s = 0;
    for (int j = 0; j < 9; ++j) s += g[i * 9 + j];
    EXPECT_NEAR(s, 0.0, 1e-6);
  }
  for (int j = 0; j < 9; ++j) EXPECT_EQ(g[9 + j], 0.f);
  // d loss / d logit[target] = (p - 1) / count with count = 3
  const std::vector<float> l = logits.to_floats();
  double mx = -INFINITY, s = 0;
  for (int j = 0; j < 9; ++j) mx = std::max<double>(mx, l[j]);
  for (int j = 0; j < 9; ++j) s += std::exp(l[j] - mx);
  EXPECT_NEAR(g[2], (std::exp(l[2] - mx) / s - 1.0) / 3.0, 1e-6);
}

TEST(CrossEntropyOp, BadTargetsAreReported) {
  try {
    (void)ops::cross_entropy(Tensor::zeros({2, 5}), Tensor::from_ints({1, 5}, {2}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("target 5 at row 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocab size 5"), std::string::npos) << msg;
  }
  try {
    (void)ops::cross_entropy(Tensor::zeros({2, 5}), Tensor::from_ints({1, 2, 3}, {3}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::cross_entropy: targets i32[3] do not match logits f32[2, 5]"),
              std::string::npos)
        << msg;
  }
}

}  // namespace el::test
