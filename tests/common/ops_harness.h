// ops_harness.h — the op test registry shared by tests/ops/*_test.cpp.
//
// Each differentiable op contributes a list of OpCase entries (one per shape
// or flag combination). An OpCase builds an OpInstance from a seeded Rng:
// host input tensors, the call of the op under test, and an independent naive
// reference written in the test (f64 loops). Three generic tests run every case
// (tests/ops/op_registry_test.cpp):
//   OpCaseTest.ForwardMatchesReference   — output vs reference, tolerance_for(dtype)
//   OpCaseTest.GradientMatchesFiniteDifferences — autograd vs central
//       differences of L = sum(out * R) for a random R, per differentiable input.
//   OpCaseTest.HalfPrecisionMatchesF32   — the op on bf16 and on f16 inputs
//       (every float input converted) against the same op in f32 on the
//       rounded inputs: output and gradient dtypes, values within
//       tolerance_for(dtype).
// An op file registers its cases with
//   INSTANTIATE_TEST_SUITE_P(Linear, OpCaseTest, ::testing::ValuesIn(linear_cases()),
//                            op_case_name);
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "common/ops_tolerance.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace el::test {

struct OpInstance {
  std::vector<Tensor> inputs;                             // host tensors; ints for ids/targets
  std::vector<bool> differentiable;                       // per input: check its gradient
  std::function<Tensor(const std::vector<Tensor>&)> run;  // the op under test
  std::function<std::vector<double>(const std::vector<Tensor>&)> reference;  // naive, f64
  Tolerance forward_tol = tolerance_for(DType::f32);
  Tolerance grad_tol = kFiniteDiffTolerance;
  double grad_eps = kFiniteDiffEps;
  int max_fd_elements = 48;  // per input; larger inputs are sampled
  bool output_always_f32 = false;  // the output is f32 whatever the inputs (losses)
};

struct OpCase {
  std::string name;  // gtest-safe: letters, digits, '_'
  std::function<OpInstance(Rng&)> make;
};

// gtest parameter name generator.
std::string op_case_name(const ::testing::TestParamInfo<OpCase>& info);
void PrintTo(const OpCase& c, std::ostream* os);

class OpCaseTest : public ::testing::TestWithParam<OpCase> {};

// ---- helpers for cases and tests ------------------------------------------------
// Normal(0, scale^2) f32 values.
Tensor random_tensor(const Shape& shape, Rng& rng, float scale = 1.0f);
// Uniform ints in [lo, hi) as i32.
Tensor random_ints(const Shape& shape, Rng& rng, int32_t lo, int32_t hi);
// Host values as f64 (any dtype).
std::vector<double> to_doubles(const Tensor& t);
// Row blocks [rows_i, in] of `whole` (views, not copies), each a leaf that
// requires grad: the parts of a stacked weight (ops::linear_stacked).
std::vector<Tensor> stacked_parts(const Tensor& whole, const std::vector<int64_t>& rows);

// Elementwise |actual - expected| <= abs + rel |expected|; the failure message
// names `what`, the count of bad elements and the first few.
::testing::AssertionResult all_close(const std::vector<float>& actual,
                                     const std::vector<double>& expected, Tolerance tol,
                                     const std::string& what);

// Runs instance.run on clones of the inputs with grad on, seeds out.grad = R,
// backpropagates, and compares every differentiable input's .grad with
// central differences of sum(out * R).
::testing::AssertionResult gradients_match(const OpInstance& inst, uint64_t seed);

// Converts every float input to `dt` and runs the op forward and backward
// (seed R of the output's dtype) against the f32 op on the rounded inputs
// with the same seed. Checks the output dtype (dt, or f32 when
// output_always_f32), each gradient's dtype (its input's) and the values
// within tolerance_for(dt).
::testing::AssertionResult half_precision_matches(const OpInstance& inst, DType dt, uint64_t seed);

// A seed derived from a case name, so each case draws its own inputs.
uint64_t seed_for(const std::string& name);

}  // namespace el::test
