// norm_test.cpp — rmsnorm and layernorm: registry cases and checks.
#include <gtest/gtest.h>

#include <cmath>

#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

constexpr float kEps = 1e-5f;

std::vector<double> rmsnorm_ref(const Tensor& x, const Tensor& w) {
  const std::vector<double> xv = to_doubles(x), wv = to_doubles(w);
  const int64_t c = w.numel(), n = x.numel() / c;
  std::vector<double> y(xv.size());
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < c; ++j) ss += xv[r * c + j] * xv[r * c + j];
    const double rstd = 1.0 / std::sqrt(ss / c + kEps);
    for (int64_t j = 0; j < c; ++j) y[r * c + j] = xv[r * c + j] * rstd * wv[j];
  }
  return y;
}

std::vector<double> layernorm_ref(const Tensor& x, const Tensor& w, const Tensor& b) {
  const std::vector<double> xv = to_doubles(x), wv = to_doubles(w), bv = to_doubles(b);
  const int64_t c = w.numel(), n = x.numel() / c;
  std::vector<double> y(xv.size());
  for (int64_t r = 0; r < n; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < c; ++j) mu += xv[r * c + j];
    mu /= c;
    for (int64_t j = 0; j < c; ++j) var += (xv[r * c + j] - mu) * (xv[r * c + j] - mu);
    const double rstd = 1.0 / std::sqrt(var / c + kEps);
    for (int64_t j = 0; j < c; ++j) y[r * c + j] = (xv[r * c + j] - mu) * rstd * wv[j] + bv[j];
  }
  return y;
}

std::string shape_name(const Shape& s) {
  std::string name = "x";
  for (int64_t d : s) name += "_" + std::to_string(d);
  return name;
}

OpCase rmsnorm_case(Shape shape, float offset = 0.f) {
  return {
      shape_name(shape) + (offset != 0.f ? "_offset" : ""), [=](Rng& rng) {
        OpInstance inst;
        Tensor x = random_tensor(shape, rng);
        if (offset != 0.f) {
          float* p = x.data<float>();
          for (int64_t i = 0; i < x.numel(); ++i) p[i] += offset;
        }
        Tensor w = random_tensor({shape.back()}, rng, 0.3f);
        for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] += 1.f;
        inst.inputs = {x, w};
        inst.differentiable = {true, true};
        inst.run = [](const std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1], kEps); };
        inst.reference = [](const std::vector<Tensor>& in) { return rmsnorm_ref(in[0], in[1]); };
        return inst;
      }};
}

OpCase layernorm_case(Shape shape, float offset = 0.f) {
  return {shape_name(shape) + (offset != 0.f ? "_offset" : ""), [=](Rng& rng) {
            OpInstance inst;
            Tensor x = random_tensor(shape, rng);
            if (offset != 0.f) {
              float* p = x.data<float>();
              for (int64_t i = 0; i < x.numel(); ++i) p[i] += offset;
            }
            Tensor w = random_tensor({shape.back()}, rng, 0.3f);
            for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] += 1.f;
            inst.inputs = {x, w, random_tensor({shape.back()}, rng)};
            inst.differentiable = {true, true, true};
            inst.run = [](const std::vector<Tensor>& in) {
              return ops::layernorm(in[0], in[1], in[2], kEps);
            };
            // x ~ 100: the f32 forward's round-off in x - mean (~6e-6) over
            // the 2 eps step gives ~1e-3 of finite-difference noise.
            if (offset != 0.f) inst.grad_tol = {3e-3, 1e-2};
            inst.reference = [](const std::vector<Tensor>& in) {
              return layernorm_ref(in[0], in[1], in[2]);
            };
            return inst;
          }};
}

// add_rmsnorm: the output under test is sum + normed (both outputs' gradients
// flow back), or normed alone (no gradient reaches sum).
OpCase add_rmsnorm_case(Shape shape, bool use_sum) {
  return {shape_name(shape) + (use_sum ? "_both" : "_normed"), [=](Rng& rng) {
            OpInstance inst;
            Tensor x = random_tensor(shape, rng), b = random_tensor(shape, rng);
            Tensor w = random_tensor({shape.back()}, rng, 0.3f);
            for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] += 1.f;
            inst.inputs = {x, b, w};
            inst.differentiable = {true, true, true};
            inst.run = [use_sum](const std::vector<Tensor>& in) {
              const ops::ResidualNorm r = ops::add_rmsnorm(in[0], in[1], in[2], kEps);
              return use_sum ? ops::add(r.sum, r.normed) : r.normed;
            };
            inst.reference = [use_sum](const std::vector<Tensor>& in) {
              const std::vector<double> xv = to_doubles(in[0]), bv = to_doubles(in[1]);
              Tensor s = Tensor::empty(in[0].shape());
              for (int64_t i = 0; i < s.numel(); ++i) {
                s.data<float>()[i] = static_cast<float>(xv[i] + bv[i]);
              }
              std::vector<double> y = rmsnorm_ref(s, in[2]);
              if (use_sum) {
                for (size_t i = 0; i < y.size(); ++i) y[i] += xv[i] + bv[i];
              }
              return y;
            };
            return inst;
          }};
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(AddRmsNorm, OpCaseTest,
                         ::testing::Values(add_rmsnorm_case({1, 5}, true),
                                           add_rmsnorm_case({3, 17}, true),
                                           add_rmsnorm_case({2, 5, 16}, true),
                                           add_rmsnorm_case({7, 64}, false),
                                           add_rmsnorm_case({33, 24}, false)),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(RmsNorm, OpCaseTest,
                         ::testing::Values(rmsnorm_case({1, 5}), rmsnorm_case({3, 17}),
                                           rmsnorm_case({7, 64}), rmsnorm_case({2, 5, 17}),
                                           rmsnorm_case({33, 64}), rmsnorm_case({3, 17}, 10.f)),
                         op_case_name);
INSTANTIATE_TEST_SUITE_P(LayerNorm, OpCaseTest,
                         ::testing::Values(layernorm_case({1, 5}), layernorm_case({3, 17}),
                                           layernorm_case({7, 64}), layernorm_case({2, 5, 17}),
                                           layernorm_case({33, 64}),
                                           layernorm_case({3, 17}, 100.f)),
                         op_case_name);

TEST(NormOps, WeightShapeMismatchIsReported) {
  try {
    (void)ops::rmsnorm(Tensor::zeros({3, 8}), Tensor::zeros({7}), kEps);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::rmsnorm"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[7]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[3, 8]"), std::string::npos) << msg;
  }
  try {
    (void)ops::layernorm(Tensor::zeros({3, 8}), Tensor::zeros({8}), Tensor::zeros({9}), kEps);
    FAIL() << "expected an exception";
  } catch (const Exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ops::layernorm: b f32[9]"), std::string::npos) << msg;
  }
}

TEST(NormOps, LargeRowsRunParallelAndMatch) {
  // Past the OpenMP threshold: the threaded dw reduction must equal the reference.
  Rng rng(3);
  const Tensor x = random_tensor({512, 96}, rng);
  const Tensor w = random_tensor({96}, rng);
  EXPECT_TRUE(all_close(ops::rmsnorm(x, w, kEps).to_floats(), rmsnorm_ref(x, w),
                        tolerance_for(DType::f32), "rmsnorm 512x96"));
}

}  // namespace el::test
