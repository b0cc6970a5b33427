// tape_test.cpp — autograd plumbing through the ops: take_grad /
// accumulate_grad semantics, NoGrad, and a 2-layer network's gradients via
// Tape::backward against finite differences.
#include "autograd/tape.h"

#include <gtest/gtest.h>

#include <functional>

#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {

TEST(TapeOps, AccumulateGradTakesOwnershipThenAdds) {
  Tensor p = Tensor::zeros({3});
  p.set_requires_grad(true);
  Tensor g1 = Tensor::full({3}, 1.f);
  accumulate_grad(p, g1);
  EXPECT_TRUE(p.grad().same(g1));  // first gradient: the buffer itself
  accumulate_grad(p, Tensor::full({3}, 2.f));
  EXPECT_EQ(p.grad().to_floats(), std::vector<float>(3, 3.f));
  EXPECT_EQ(g1.to_floats(), std::vector<float>(3, 3.f));  // same buffer, so it changed too
  // A tensor that does not require grad ignores gradients.
  Tensor c = Tensor::zeros({3});
  accumulate_grad(c, Tensor::full({3}, 1.f));
  EXPECT_FALSE(c.has_grad());
  // A gradient of another shape with the same numel is viewed in the tensor's shape.
  Tensor q = Tensor::zeros({2, 3});
  q.set_requires_grad(true);
  accumulate_grad(q, Tensor::full({6}, 1.f));
  EXPECT_EQ(q.grad().shape(), (Shape{2, 3}));
}

TEST(TapeOps, TakeGradDetachesIntermediatesButNotLeaves) {
  Tensor leaf = Tensor::zeros({2});
  leaf.set_requires_grad(true);
  accumulate_grad(leaf, Tensor::full({2}, 1.f));
  EXPECT_TRUE(take_grad(leaf).defined());
  EXPECT_TRUE(leaf.has_grad());  // leaves keep .grad for the optimizer
  Tensor x = Tensor::zeros({2});
  x.set_requires_grad(true);
  Tensor y = ops::gelu(x);  // non-leaf output
  EXPECT_FALSE(y.is_leaf());
  accumulate_grad(y, Tensor::full({2}, 1.f));
  EXPECT_TRUE(take_grad(y).defined());
  EXPECT_FALSE(y.has_grad());  // freed once consumed
  EXPECT_FALSE(take_grad(y).defined());
  tape().clear();
}

TEST(TapeOps, NoGradRecordsNothingAndUnreachedOutputsAreSkipped) {
  Tensor x = Tensor::full({4}, 0.5f);
  x.set_requires_grad(true);
  {
    NoGrad ng;
    Tensor y = ops::gelu(x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(tape().size(), 0u);
  }
  Tensor unused = ops::gelu(x);  // recorded, but no gradient reaches it
  Tensor used = ops::gelu(x);
  EXPECT_EQ(tape().size(), 2u);
  accumulate_grad(used, Tensor::full({4}, 1.f));
  tape().backward(Tensor::zeros({1}));
  ASSERT_TRUE(x.has_grad());
  EXPECT_EQ(tape().size(), 0u);
  // Only `used` contributed: one gelu'(0.5) per element.
  const float g = x.grad().to_floats()[0];
  EXPECT_NEAR(g, 0.8674, 1e-3);
}

// loss = CE(linear(gelu(linear(x, w1, b1)), w2), targets) — every parameter's
// gradient from Tape::backward against central differences of the loss.
// Every element (every `stride`-th) of every parameter's autograd gradient
// against central differences of loss_of.
static void expect_gradients_match_fd(std::vector<Tensor>& params,
                               const std::function<Tensor(const std::vector<Tensor>&)>& loss_of,
                               int64_t stride) {
  for (Tensor& p : params) p.set_requires_grad(true);
  Tensor loss = loss_of(params);
  EXPECT_GT(tape().size(), 0u);
  tape().backward(loss);
  EXPECT_EQ(tape().size(), 0u);
  NoGrad ng;
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(params[i].has_grad()) << i;
    const std::vector<float> analytic = params[i].grad().to_floats();
    std::vector<Tensor> probe;
    for (const Tensor& p : params) probe.push_back(p.clone());
    std::vector<float> got;
    std::vector<double> want;
    for (int64_t e = 0; e < probe[i].numel(); e += stride) {
      float* d = probe[i].data<float>();
      const float orig = d[e];
      const float eps = 1e-2f;
      d[e] = orig + eps;
      const double lp = loss_of(probe).item();
      d[e] = orig - eps;
      const double lm = loss_of(probe).item();
      d[e] = orig;
      want.push_back((lp - lm) / (static_cast<double>(orig + eps) - (orig - eps)));
      got.push_back(analytic[e]);
    }
    EXPECT_TRUE(all_close(got, want, {1e-3, 2e-2}, "param " + std::to_string(i)));
  }
}

TEST(TapeOps, TwoLayerNetworkMatchesFiniteDifferences) {
  Rng rng(21);
  const int64_t n = 6, in = 5, hidden = 17, classes = 7;
  std::vector<Tensor> params = {random_tensor({hidden, in}, rng, 0.5f),
                                random_tensor({hidden}, rng, 0.1f),
                                random_tensor({classes, hidden}, rng, 0.5f)};
  const Tensor x = random_tensor({2, n / 2, in}, rng);
  const Tensor targets = Tensor::from_ints({0, 3, -1, 6, 2, 2}, {n});
  auto loss_of = [&](const std::vector<Tensor>& p) {
    Tensor h = ops::gelu(ops::linear(x, p[0], p[1]));  // [2, 3, hidden]
    Tensor logits = ops::linear(ops::reshape(h, {n, hidden}), p[2]);
    return ops::cross_entropy(logits, targets);
  };
  expect_gradients_match_fd(params, loss_of, 3);
}

// The decoder block's gradient plumbing: an add hands one buffer to the
// residual stream and the branch (shared, copy on write), linears that share
// an input add their dx in the GEMM (beta = 1), and RMSNorm adds the residual
// gradient in its backward kernel. Checked against finite differences, and
// the shared buffer must come out unchanged for the tensor that still reads it.
TEST(TapeOps, ResidualBlockGradientsMatchFiniteDifferences) {
  Rng rng(23);
  const int64_t n = 5, c = 8;
  std::vector<Tensor> params = {random_tensor({n, c}, rng),          // x
                                random_tensor({c}, rng, 0.3f),       // norm 1 weight
                                random_tensor({c, c}, rng, 0.4f),    // "q"
                                random_tensor({c, c}, rng, 0.4f),    // "k"
                                random_tensor({c}, rng, 0.3f),       // norm 2 weight
                                random_tensor({c, c}, rng, 0.4f)};   // "mlp"
  const Tensor r = random_tensor({n, c}, rng);
  auto loss_of = [&](const std::vector<Tensor>& p) {
    Tensor a = ops::rmsnorm(p[0], p[1], 1e-5f);
    Tensor h = ops::add(p[0], ops::add(ops::linear(a, p[2]), ops::gelu(ops::linear(a, p[3]))));
    Tensor h2 = ops::add(h, ops::linear(ops::rmsnorm(h, p[4], 1e-5f), p[5]));
    Tensor out = ops::add(h2, ops::rmsnorm(h2, p[4], 1e-5f));
    Tensor logits = ops::linear(out, r.view({n, c}));  // [n, n]
    return ops::cross_entropy(logits, Tensor::from_ints({0, 1, 2, 3, 4}, {n}));
  };
  expect_gradients_match_fd(params, loss_of, 1);
}

TEST(TapeOps, SharedGradientIsCopiedOnWrite) {
  Tensor a = Tensor::zeros({3}), b = Tensor::zeros({3});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor g = Tensor::from_floats({1, 2, 3}, {3});
  share_grad(a, g);
  share_grad(b, g);
  EXPECT_EQ(a.grad().raw(), b.grad().raw());
  accumulate_grad(a, Tensor::from_floats({10, 10, 10}, {3}));
  EXPECT_EQ(a.grad().to_floats(), (std::vector<float>{11, 12, 13}));
  EXPECT_EQ(b.grad().to_floats(), (std::vector<float>{1, 2, 3}));  // untouched
  const GradSlot slot = grad_slot(b, Device::cpu());
  EXPECT_FALSE(slot.in_place());  // still shared: a kernel must write elsewhere
  EXPECT_EQ(slot.prior.raw(), g.raw());
}

}  // namespace el::test
