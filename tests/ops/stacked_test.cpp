// stacked_test.cpp — the packed-projection ops: linear_stacked (several
// projections as one GEMM), split_qkv_rope and swiglu_packed. The packed ops
// run through the op registry (reference, finite-difference gradients,
// bf16/f16); linear_stacked is checked against one ops::linear per part.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// ---- split_qkv_rope ------------------------------------------------------------------
// packed[B, T, H + 2 Hkv, D]: the reference of output `part` (0 q, 1 k, 2 v).
std::vector<double> split_ref(const Tensor& packed, int64_t h, int64_t hkv, bool rotate,
                              int64_t pos_offset, int part) {
  const std::vector<double> p = to_doubles(packed);
  const int64_t b = packed.dim(0), t = packed.dim(1), heads = h + 2 * hkv;
  const int64_t d = packed.dim(2) / heads, half = d / 2;
  const int64_t first = part == 0 ? 0 : part == 1 ? h : h + hkv;
  const int64_t n = part == 0 ? h : hkv;
  std::vector<double> y;
  for (int64_t r = 0; r < b * t; ++r) {
    const int64_t pos = pos_offset + r % t;
    for (int64_t hh = 0; hh < n; ++hh) {
      const double* x = p.data() + (r * heads + first + hh) * d;
      for (int64_t i = 0; i < d; ++i) {
        if (!rotate || part == 2) {
          y.push_back(x[i]);
          continue;
        }
        const int64_t j = i % half;
        const double ang = static_cast<double>(pos) * std::pow(10000.0, -2.0 * j / d);
        const double x1 = x[j], x2 = x[half + j];
        y.push_back(i < half ? x1 * std::cos(ang) - x2 * std::sin(ang)
                             : x2 * std::cos(ang) + x1 * std::sin(ang));
      }
    }
  }
  return y;
}

OpCase split_case(int64_t b, int64_t t, int64_t h, int64_t hkv, int64_t d, bool rotate,
                  int64_t pos_offset, int part) {
  const char* parts[] = {"q", "k", "v"};
  const std::string name = "b" + std::to_string(b) + "_t" + std::to_string(t) + "_h" +
                           std::to_string(h) + "_kv" + std::to_string(hkv) + "_d" +
                           std::to_string(d) + (rotate ? "_rope" : "_norope") + "_pos" +
                           std::to_string(pos_offset) + "_" + parts[part];
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({b, t, (h + 2 * hkv) * d}, rng)};
            inst.differentiable = {true};
            // Only one output flows back: the other two contribute zeros.
            inst.run = [=](const std::vector<Tensor>& in) {
              const Tensor freq = rotate ? ops::rope_inv_freq(d, 10000.f, Device::cpu()) : Tensor();
              const ops::QKV s = ops::split_qkv_rope(in[0], h, hkv, freq, pos_offset);
              return part == 0 ? s.q : part == 1 ? s.k : s.v;
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              return split_ref(in[0], h, hkv, rotate, pos_offset, part);
            };
            return inst;
          }};
}

std::vector<OpCase> split_cases() {
  std::vector<OpCase> cases;
  for (int part = 0; part < 3; ++part) {
    cases.push_back(split_case(1, 1, 1, 1, 2, true, 0, part));
    cases.push_back(split_case(2, 5, 3, 1, 8, true, 4, part));   // MQA
    cases.push_back(split_case(1, 7, 4, 2, 6, true, 0, part));   // GQA, D/2 odd
    cases.push_back(split_case(2, 3, 2, 2, 4, false, 0, part));  // MHA, no rotation
  }
  return cases;
}

// ---- swiglu_packed ------------------------------------------------------------------
OpCase swiglu_packed_case(Shape shape) {
  std::string name = "x";
  for (int64_t d : shape) name += "_" + std::to_string(d);
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng, 2.f)};
            inst.differentiable = {true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::swiglu_packed(in[0]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              const std::vector<double> x = to_doubles(in[0]);
              const int64_t f = in[0].dim(-1) / 2, rows = static_cast<int64_t>(x.size()) / (2 * f);
              std::vector<double> y;
              for (int64_t r = 0; r < rows; ++r) {
                for (int64_t i = 0; i < f; ++i) {
                  const double g = x[r * 2 * f + i], u = x[r * 2 * f + f + i];
                  y.push_back(g / (1.0 + std::exp(-g)) * u);
                }
              }
              return y;
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(SplitQkvRope, OpCaseTest, ::testing::ValuesIn(split_cases()),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(SwiGluPacked, OpCaseTest,
                         ::testing::Values(swiglu_packed_case({2}), swiglu_packed_case({3, 10}),
                                           swiglu_packed_case({7, 34}),
                                           swiglu_packed_case({2, 5, 64})),
                         op_case_name);

namespace {

// Backpropagates seed dL/dy = dy through the tape (as the op harness does).
void backward_from(const Tensor& y, const Tensor& dy) {
  accumulate_grad(y, dy.clone());
  tape().backward(Tensor::zeros({1}));
}

}  // namespace

TEST(LinearStacked, MatchesOneLinearPerPartForwardAndBackward) {
  Rng rng(7);
  const std::vector<int64_t> rows = {5, 3, 3};
  for (bool bias : {false, true}) {
    const Tensor x_host = random_tensor({2, 7, 9}, rng);
    const Tensor w_host = random_tensor({11, 9}, rng, 0.5f), b_host = random_tensor({11}, rng);
    const Tensor dy = random_tensor({2, 7, 11}, rng);

    // Stacked: one buffer, three parts.
    Tensor x1 = x_host.clone().set_requires_grad(true);
    const Tensor w_all = w_host.clone(), b_all = b_host.clone();
    const std::vector<Tensor> ws = stacked_parts(w_all, rows);
    const std::vector<Tensor> bs = bias ? stacked_parts(b_all, rows) : std::vector<Tensor>{};
    ASSERT_TRUE(ops::rows_are_stacked(ws));
    Tensor y1 = ops::linear_stacked(x1, ws, bs);
    ASSERT_EQ(y1.shape(), Shape({2, 7, 11}));
    backward_from(y1, dy);

    // Reference: each part its own tensor and its own linear.
    Tensor x2 = x_host.clone().set_requires_grad(true);
    int64_t r = 0;
    std::vector<float> y_ref(static_cast<size_t>(2 * 7 * 11));
    for (size_t i = 0; i < rows.size(); ++i) {
      Tensor w = w_host.slice0(r, r + rows[i]).clone().set_requires_grad(true);
      Tensor b = bias ? b_host.slice0(r, r + rows[i]).clone().set_requires_grad(true) : Tensor();
      Tensor y = ops::linear(x2, w, b);
      // dy's columns of this part, as the seed of this part's output.
      std::vector<float> dyv = dy.to_floats(), part;
      for (int64_t n = 0; n < 14; ++n)
        for (int64_t o = 0; o < rows[i]; ++o) part.push_back(dyv[n * 11 + r + o]);
      backward_from(y, Tensor::from_floats(part, y.shape()));
      const std::vector<float> yv = y.to_floats();
      for (int64_t n = 0; n < 14; ++n)
        for (int64_t o = 0; o < rows[i]; ++o) y_ref[n * 11 + r + o] = yv[n * rows[i] + o];
      const Tolerance tol = tolerance_for(DType::f32);
      EXPECT_TRUE(all_close(ws[i].grad().to_floats(), to_doubles(w.grad()), tol,
                            "dW part " + std::to_string(i)));
      if (bias) {
        EXPECT_TRUE(all_close(bs[i].grad().to_floats(), to_doubles(b.grad()), tol,
                              "db part " + std::to_string(i)));
      }
      r += rows[i];
    }
    std::vector<double> yr(y_ref.begin(), y_ref.end());
    EXPECT_TRUE(all_close(y1.to_floats(), yr, tolerance_for(DType::f32), "y"));
    EXPECT_TRUE(all_close(x1.grad().to_floats(), to_doubles(x2.grad()), tolerance_for(DType::f32),
                          "dx"));
    // The parts' gradients are row blocks of one buffer too (no copies).
    EXPECT_TRUE(ops::rows_are_stacked({ws[0].grad(), ws[1].grad(), ws[2].grad()}));
  }
}

TEST(LinearStacked, RowsAreStackedOnlyForAdjacentBlocksOfOneBuffer) {
  const Tensor a = Tensor::zeros({6, 4});
  EXPECT_TRUE(ops::rows_are_stacked({a.slice0(0, 2), a.slice0(2, 3), a.slice0(3, 6)}));
  EXPECT_FALSE(ops::rows_are_stacked({a.slice0(0, 2), a.slice0(3, 6)}));   // a gap
  EXPECT_FALSE(ops::rows_are_stacked({a.slice0(2, 4), a.slice0(0, 2)}));   // out of order
  EXPECT_FALSE(ops::rows_are_stacked({Tensor::zeros({2, 4}), Tensor::zeros({2, 4})}));
  EXPECT_FALSE(ops::rows_are_stacked({a.slice0(0, 2), Tensor()}));
  EXPECT_FALSE(ops::rows_are_stacked({}));
  const Tensor flat = Tensor::zeros({24});
  EXPECT_FALSE(ops::rows_are_stacked({a.view({4, 6}).slice0(0, 1), a.slice0(1, 2)}));
  EXPECT_TRUE(ops::rows_are_stacked({flat.slice0(0, 5), flat.slice0(5, 24)}));
}

TEST(LinearStacked, SeparateBuffersAreABugNamedInTheMessage) {
  try {
    (void)ops::linear_stacked(Tensor::zeros({2, 4}), {Tensor::zeros({2, 4}), Tensor::zeros({3, 4})});
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::linear_stacked: the 2 weights are not consecutive"),
              std::string::npos)
        << e.what();
  }
}

TEST(SplitQkvRope, BadPackedWidthIsReported) {
  try {
    (void)ops::split_qkv_rope(Tensor::zeros({1, 2, 30}), 3, 2, Tensor());
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::split_qkv_rope: packed is f32[1, 2, 30]"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace el::test
