// linear_test.cpp — linear, embedding, add and reshape: registry cases and
// op-specific checks (bf16/f16 weights, error messages).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// y[n][o] = sum_i x[n][i] w[o][i] + b[o]
std::vector<double> linear_ref(const Tensor& x, const Tensor& w, const Tensor* b) {
  const std::vector<double> xv = to_doubles(x), wv = to_doubles(w);
  const int64_t in = w.dim(1), out = w.dim(0), n = x.numel() / in;
  std::vector<double> bv = b ? to_doubles(*b) : std::vector<double>(static_cast<size_t>(out), 0.0);
  std::vector<double> y(static_cast<size_t>(n * out));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double s = bv[static_cast<size_t>(o)];
      for (int64_t i = 0; i < in; ++i) s += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

OpCase linear_case(Shape x_shape, int64_t out, bool bias) {
  std::string name = "x";
  for (int64_t d : x_shape) name += "_" + std::to_string(d);
  name += "_out" + std::to_string(out) + (bias ? "_bias" : "_nobias");
  return {name, [=](Rng& rng) {
            OpInstance inst;
            const int64_t in = x_shape.back();
            inst.inputs = {random_tensor(x_shape, rng), random_tensor({out, in}, rng, 0.5f)};
            if (bias) inst.inputs.push_back(random_tensor({out}, rng));
            inst.differentiable.assign(inst.inputs.size(), true);
            inst.run = [bias](const std::vector<Tensor>& in) {
              return bias ? ops::linear(in[0], in[1], in[2]) : ops::linear(in[0], in[1]);
            };
            inst.reference = [bias](const std::vector<Tensor>& in) {
              return linear_ref(in[0], in[1], bias ? &in[2] : nullptr);
            };
            return inst;
          }};
}

std::vector<OpCase> linear_cases() {
  return {linear_case({5}, 3, false),        linear_case({1, 5}, 7, true),
          linear_case({3, 17}, 5, true),     linear_case({7, 17}, 33, false),
          linear_case({2, 3, 5}, 4, true),   linear_case({33, 64}, 17, true),
          linear_case({2, 19, 16}, 8, false)};
}

OpCase embedding_case(Shape ids_shape, int64_t v, int64_t c) {
  std::string name = "ids";
  for (int64_t d : ids_shape) name += "_" + std::to_string(d);
  name += "_V" + std::to_string(v) + "_C" + std::to_string(c);
  return {name, [=](Rng& rng) {
            OpInstance inst;
            // A small vocab makes repeated ids (scatter-add collisions) certain.
            inst.inputs = {random_ints(ids_shape, rng, 0, static_cast<int32_t>(v)),
                           random_tensor({v, c}, rng)};
            inst.differentiable = {false, true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::embedding(in[0], in[1]); };
            inst.reference = [c](const std::vector<Tensor>& in) {
              const std::vector<double> ids = to_doubles(in[0]), tab = to_doubles(in[1]);
              std::vector<double> y;
              for (double id : ids) {
                for (int64_t j = 0; j < c; ++j) y.push_back(tab[static_cast<size_t>(id) * c + j]);
              }
              return y;
            };
            return inst;
          }};
}

OpCase add_case(Shape shape) {
  std::string name = "shape";
  for (int64_t d : shape) name += "_" + std::to_string(d);
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng), random_tensor(shape, rng)};
            inst.differentiable = {true, true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> a = to_doubles(in[0]);
              const std::vector<double> b = to_doubles(in[1]);
              for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
              return a;
            };
            return inst;
          }};
}

OpCase reshape_case(Shape from, Shape to, std::string name) {
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(from, rng)};
            inst.differentiable = {true};
            // gelu after the reshape makes the gradient shape-dependent
            // (a reshape alone would pass with any identity backward).
            inst.run = [to](const std::vector<Tensor>& in) {
              return ops::gelu(ops::reshape(ops::gelu(in[0]), to));
            };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              auto g = [](double v) {
                return 0.5 * v *
                       (1.0 +
                        std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v)));
              };
              for (double& v : x) v = g(g(v));
              return x;
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Linear, OpCaseTest, ::testing::ValuesIn(linear_cases()), op_case_name);
INSTANTIATE_TEST_SUITE_P(Embedding, OpCaseTest,
                         ::testing::Values(embedding_case({7}, 5, 17), embedding_case({1}, 3, 5),
                                           embedding_case({2, 5}, 11, 5),
                                           embedding_case({3, 19}, 7, 64)),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(Add, OpCaseTest,
                         ::testing::Values(add_case({1}), add_case({3, 5}), add_case({2, 7, 17}),
                                           add_case({33, 64})),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(Reshape, OpCaseTest,
                         ::testing::Values(reshape_case({2, 3, 4}, {6, -1}, "r234_to_6x4"),
                                           reshape_case({5, 7}, {35}, "r57_to_35"),
                                           reshape_case({19}, {1, 19, 1}, "r19_to_1x19x1")),
                         op_case_name);

// bf16 / f16 weights with f32 activations: the forward (f32, x's dtype)
// matches the f32 reference of the rounded weights, and the weight's gradient
// comes back in the weight's dtype (a gradient has its tensor's dtype).
TEST(LinearOp, HalfPrecisionWeights) {
  for (DType dt : {DType::bf16, DType::f16}) {
    Rng rng(7);
    const Tensor x = random_tensor({7, 33}, rng);
    const Tensor w32 = random_tensor({17, 33}, rng, 0.3f);
    Tensor w = Tensor::empty(w32.shape(), dt);
    w.copy_from(w32);
    Tensor wr = Tensor::empty(w32.shape(), DType::f32);
    wr.copy_from(w);  // the weight values the kernel actually sees
    const Tensor b = random_tensor({17}, rng);
    const Tensor y = ops::linear(x, w, b);
    EXPECT_EQ(y.dtype(), DType::f32);
    EXPECT_TRUE(
        all_close(y.to_floats(), linear_ref(x, wr, &b), tolerance_for(DType::f32), dtype_name(dt)));
    EXPECT_TRUE(all_close(y.to_floats(), linear_ref(x, w32, &b), tolerance_for(dt),
                          std::string(dtype_name(dt)) + " vs f32 weights"));
    w.set_requires_grad(true);
    Tensor out = ops::linear(x, w);
    accumulate_grad(out, Tensor::full(out.shape(), 1.f));
    tape().backward(Tensor::zeros({1}));
    ASSERT_TRUE(w.has_grad());
    EXPECT_EQ(w.grad().dtype(), dt);
    // dW[o][i] = sum_n x[n][i]
    const std::vector<double> xv = to_doubles(x);
    std::vector<double> want(17 * 33, 0.0);
    for (int o = 0; o < 17; ++o)
      for (int i = 0; i < 33; ++i)
        for (int n = 0; n < 7; ++n) want[o * 33 + i] += xv[n * 33 + i];
    EXPECT_TRUE(all_close(w.grad().to_floats(), want, tolerance_for(dt), "dW"));
  }
}

TEST(LinearOp, ShapeMismatchNamesOpAndShapes) {
  const Tensor x = Tensor::zeros({2, 7});
  const Tensor w = Tensor::zeros({4, 5});
  try {
    (void)ops::linear(x, w);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::linear"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[2, 7]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[4, 5]"), std::string::npos) << msg;
  }
  try {
    (void)ops::linear(Tensor::zeros({2, 5}), w, Tensor::zeros({3}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("bias f32[3]"), std::string::npos) << e.what();
  }
}

TEST(EmbeddingOp, OutOfRangeIdIsReported) {
  const Tensor ids = Tensor::from_ints({0, 9}, {2});
  const Tensor table = Tensor::zeros({5, 3});
  try {
    (void)ops::embedding(ids, table);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("id 9 at position 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 5)"), std::string::npos) << msg;
  }
}

TEST(AddOp, ShapeMismatchAndSharedInput) {
  try {
    (void)ops::add(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}));
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::add"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[2, 3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[3, 2]"), std::string::npos) << msg;
  }
  // add(x, x): both gradient contributions land in x.grad (2 per element).
  Tensor x = Tensor::full({4}, 1.f);
  x.set_requires_grad(true);
  Tensor y = ops::add(x, x);
  accumulate_grad(y, Tensor::full({4}, 1.f));
  tape().backward(Tensor::zeros({1}));
  EXPECT_EQ(x.grad().to_floats(), std::vector<float>(4, 2.f));
}

TEST(ReshapeOp, BadShapeIsReported) {
  try {
    (void)ops::reshape(Tensor::zeros({2, 3}), {4, -1});
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::reshape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[4, -1]"), std::string::npos) << msg;
  }
  const Tensor y = ops::reshape(Tensor::zeros({2, 3, 4}), {-1, 4});
  EXPECT_EQ(y.shape(), (Shape{6, 4}));
}

}  // namespace el::test
