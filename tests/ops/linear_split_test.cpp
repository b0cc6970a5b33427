// linear_split_test.cpp — ops::linear_split (a Linear's output as column
// parts, one GEMM per row block of the weight):
//  * registry cases (f64 reference, finite-difference gradients of x, w and
//    bias, bf16/f16): odd part sizes, one part, unused parts; the parts are
//    mixed into one output by fixed projections so every part's width counts;
//  * equal to split_columns(linear(x, w, bias)) in the output and in every
//    gradient, with unused parts, x already holding a gradient (the dx GEMMs
//    accumulate into it), w a row block of a larger buffer and bf16 weights;
//  * argument errors name the op and the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

std::string sizes_name(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t d : v) s += "_" + std::to_string(d);
  return s;
}

// The parts in `use` mixed into one [..., M] output: sum_u linear(part_u, P_u)
// with fixed projections P_u [M, sizes[u]] (not inputs: no gradient checked).
constexpr int64_t kMix = 3;

OpCase split_case(Shape x_shape, std::vector<int64_t> sizes, bool bias, std::vector<int> use) {
  std::string name = "x" + sizes_name(x_shape) + "_parts" + sizes_name(sizes) +
                     (bias ? "_bias" : "_nobias") + "_use";
  for (int u : use) name += std::to_string(u);
  return {name, [=](Rng& rng) {
            OpInstance inst;
            const int64_t in = x_shape.back();
            int64_t out = 0;
            for (int64_t s : sizes) out += s;
            inst.inputs = {random_tensor(x_shape, rng), random_tensor({out, in}, rng, 0.5f)};
            if (bias) inst.inputs.push_back(random_tensor({out}, rng));
            inst.differentiable.assign(inst.inputs.size(), true);
            std::vector<Tensor> mix;
            for (int64_t s : sizes) {
              mix.push_back(random_tensor({kMix, s}, rng, 1.f / std::sqrt(float(s))));
            }
            inst.run = [=](const std::vector<Tensor>& in) {
              const std::vector<Tensor> p =
                  ops::linear_split(in[0], in[1], sizes, bias ? in[2] : Tensor());
              Tensor y;
              for (int u : use) {
                const auto i = static_cast<size_t>(u);
                const Tensor m = ops::linear(p[i], mix[i]);
                y = y.defined() ? ops::add(y, m) : m;
              }
              return y;
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const std::vector<double> x = to_doubles(in[0]), w = to_doubles(in[1]);
              const std::vector<double> b = bias ? to_doubles(in[2]) : std::vector<double>();
              const int64_t rows = in[0].numel() / in[0].dim(-1);
              std::vector<double> y(static_cast<size_t>(rows * kMix), 0.0);
              for (int u : use) {
                int64_t r0 = 0;
                for (int i = 0; i < u; ++i) r0 += sizes[static_cast<size_t>(i)];
                const int64_t s = sizes[static_cast<size_t>(u)];
                const std::vector<double> p = to_doubles(mix[static_cast<size_t>(u)]);
                for (int64_t n = 0; n < rows; ++n) {
                  for (int64_t o = 0; o < s; ++o) {
                    double v = bias ? b[r0 + o] : 0.0;
                    for (int64_t k = 0; k < in[0].dim(-1); ++k) {
                      v += x[n * in[0].dim(-1) + k] * w[(r0 + o) * in[0].dim(-1) + k];
                    }
                    for (int64_t m = 0; m < kMix; ++m) y[n * kMix + m] += p[m * s + o] * v;
                  }
                }
              }
              return y;
            };
            return inst;
          }};
}

std::vector<OpCase> split_cases() {
  return {split_case({5}, {3, 4}, false, {0, 1}),               // 1-D x
          split_case({2, 3, 5}, {4, 1, 2}, true, {0, 1, 2}),    // dt | B | C, odd sizes
          split_case({3, 17}, {5, 6, 5}, true, {0, 2}),         // middle part unused
          split_case({1, 7, 9}, {7}, true, {0}),                // one part
          split_case({2, 19, 16}, {8, 8}, false, {1}),          // first part unused
          split_case({33, 64}, {1, 30, 2}, true, {2, 1})};
}

// Seeds dL/dy = dy on each (y, dy) pair and runs the tape (as the harness does).
void backward_from(const std::vector<std::pair<Tensor, Tensor>>& seeds) {
  for (const auto& [y, dy] : seeds) accumulate_grad(y, dy.clone());
  tape().backward(Tensor::zeros({1}));
}

struct Grads {
  std::vector<std::vector<float>> y;
  std::vector<float> dx, dw, db;
  DType dw_dtype = DType::f32;
};

// Runs linear_split (split = true) or split_columns(linear(...)) on fresh
// leaves of the same values, seeds the parts in `use` with dys[u], and
// returns the parts and the gradients. w_pad > 0: w is rows [w_pad, w_pad +
// out) of a larger buffer (a view). twice: x also feeds a second linear
// recorded after the split, whose backward runs first, so x already has a
// gradient when the split's backward adds to it.
Grads run(bool split, const Tensor& x_host, const Tensor& w_host, const Tensor& b_host,
          DType w_dtype, const std::vector<int64_t>& sizes, const std::vector<int>& use,
          const std::vector<Tensor>& dys, int64_t w_pad, bool twice) {
  Tensor x = x_host.clone().set_requires_grad(true);
  const int64_t out = w_host.dim(0), in = w_host.dim(1);
  Tensor buffer = Tensor::zeros({out + 2 * w_pad, in}, w_dtype);
  Tensor w = buffer.slice0(w_pad, w_pad + out);
  w.copy_from(w_host);
  w.set_requires_grad(true);
  Tensor b;
  if (b_host.defined()) b = b_host.clone().set_requires_grad(true);
  const std::vector<Tensor> parts =
      split ? ops::linear_split(x, w, sizes, b) : ops::split_columns(ops::linear(x, w, b), sizes);
  std::vector<std::pair<Tensor, Tensor>> seeds;
  for (int u : use) seeds.emplace_back(parts[static_cast<size_t>(u)], dys[static_cast<size_t>(u)]);
  if (twice) {
    const Tensor w2 = Tensor::full({2, in}, 0.25f);
    Tensor y2 = ops::linear(x, w2);
    seeds.emplace_back(y2, Tensor::full(y2.shape(), 1.f));
  }
  backward_from(seeds);
  Grads g;
  for (const Tensor& p : parts) g.y.push_back(p.to_floats());
  g.dx = x.grad().to_floats();
  g.dw = w.grad().to_floats();
  g.dw_dtype = w.grad().dtype();
  if (b.defined()) g.db = b.grad().to_floats();
  return g;
}

std::vector<double> as_doubles(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct EquivCase {
  Shape x_shape;
  std::vector<int64_t> sizes;
  bool bias;
  std::vector<int> use;
  DType w_dtype;
  int64_t w_pad;
  bool twice;
};

}  // namespace

INSTANTIATE_TEST_SUITE_P(LinearSplit, OpCaseTest, ::testing::ValuesIn(split_cases()), op_case_name);

TEST(LinearSplit, EqualsSplitColumnsOfLinearInOutputAndGradients) {
  const std::vector<EquivCase> cases = {
      {{2, 7, 9}, {5, 3, 3}, true, {0, 1, 2}, DType::f32, 0, false},
      {{2, 7, 9}, {5, 3, 3}, false, {2}, DType::f32, 0, false},          // two parts unused
      {{11, 24}, {12, 12}, true, {0, 1}, DType::f32, 3, true},           // w a view, prior dx
      {{3, 5, 13}, {1, 7, 2}, true, {0, 2}, DType::f32, 1, true},
      {{4, 6, 16}, {6, 5, 5}, true, {1, 2}, DType::bf16, 0, false},      // bf16 w and bias
      {{1, 1, 8}, {3, 1}, false, {0, 1}, DType::f32, 0, false}};          // one token (decode)
  int k = 0;
  for (const EquivCase& c : cases) {
    SCOPED_TRACE("case " + std::to_string(k++));
    Rng rng(11 + static_cast<uint64_t>(k));
    int64_t out = 0;
    for (int64_t s : c.sizes) out += s;
    const Tensor x = random_tensor(c.x_shape, rng);
    const Tensor w = random_tensor({out, c.x_shape.back()}, rng, 0.5f);
    Tensor b;
    if (c.bias) {
      b = Tensor::empty({out}, c.w_dtype);
      b.copy_from(random_tensor({out}, rng));
    }
    std::vector<Tensor> dys;
    for (int64_t s : c.sizes) {
      Shape shape = c.x_shape;
      shape.back() = s;
      dys.push_back(random_tensor(shape, rng));
    }
    const Grads got = run(true, x, w, b, c.w_dtype, c.sizes, c.use, dys, c.w_pad, c.twice);
    const Grads want = run(false, x, w, b, c.w_dtype, c.sizes, c.use, dys, c.w_pad, c.twice);
    // The same GEMMs over the same operands: f32 rounding apart, equal. A
    // bf16 weight's gradient is rounded to bf16 (one ulp where the f32 sums
    // fall on different sides of a rounding boundary).
    const Tolerance tol = tolerance_for(DType::f32);
    const Tolerance wtol = tolerance_for(c.w_dtype);
    ASSERT_EQ(got.y.size(), want.y.size());
    for (size_t i = 0; i < got.y.size(); ++i) {
      EXPECT_TRUE(all_close(got.y[i], as_doubles(want.y[i]), tol, "part " + std::to_string(i)));
    }
    EXPECT_TRUE(all_close(got.dx, as_doubles(want.dx), tol, "dx"));
    EXPECT_TRUE(all_close(got.dw, as_doubles(want.dw), wtol, "dw"));
    EXPECT_EQ(got.dw_dtype, c.w_dtype);
    EXPECT_TRUE(all_close(got.db, as_doubles(want.db), wtol, "db"));
    // Rows of an unused part get exactly zero.
    int64_t r = 0;
    for (size_t i = 0; i < c.sizes.size(); ++i) {
      const bool used = std::find(c.use.begin(), c.use.end(), static_cast<int>(i)) != c.use.end();
      if (!used) {
        for (int64_t j = r * c.x_shape.back(); j < (r + c.sizes[i]) * c.x_shape.back(); ++j) {
          ASSERT_EQ(got.dw[static_cast<size_t>(j)], 0.f) << "part " << i;
        }
      }
      r += c.sizes[i];
    }
  }
}

TEST(LinearSplit, RecordsNothingWithoutGradients) {
  Rng rng(3);
  const Tensor x = random_tensor({2, 5}, rng), w = random_tensor({6, 5}, rng);
  const size_t recorded = tape().size();
  const std::vector<Tensor> p = ops::linear_split(x, w, {2, 4});
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].shape(), Shape({2, 2}));
  EXPECT_EQ(p[1].shape(), Shape({2, 4}));
  EXPECT_FALSE(p[0].requires_grad());
  EXPECT_EQ(tape().size(), recorded);
}

TEST(LinearSplit, BadArgumentsAreNamed) {
  const auto message = [](auto&& call) {
    try {
      call();
    } catch (const Exception& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  const Tensor x = Tensor::zeros({2, 5}), w = Tensor::zeros({6, 5});
  std::string msg = message([&] { (void)ops::linear_split(x, w, {2, 3}); });
  EXPECT_NE(msg.find("ops::linear_split: the 2 parts have 5 rows in all, w f32[6, 5] has 6"),
            std::string::npos)
      << msg;
  msg = message([&] { (void)ops::linear_split(x, w, {6, 0}); });
  EXPECT_NE(msg.find("ops::linear_split: part sizes must be positive, got 0"), std::string::npos)
      << msg;
  msg = message([&] { (void)ops::linear_split(x, w, {}); });
  EXPECT_NE(msg.find("ops::linear_split: the 0 parts"), std::string::npos) << msg;
  msg = message([&] { (void)ops::linear_split(Tensor::zeros({2, 4}), w, {6}); });
  EXPECT_NE(msg.find("ops::linear_split: x f32[2, 4] does not match w f32[6, 5]"),
            std::string::npos)
      << msg;
  msg = message([&] { (void)ops::linear_split(x, w, {6}, Tensor::zeros({5})); });
  EXPECT_NE(msg.find("ops::linear_split: bias f32[5] does not match w f32[6, 5]"),
            std::string::npos)
      << msg;
}

}  // namespace el::test
