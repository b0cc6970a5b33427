// op_registry_test.cpp — the three generic tests every registered op case runs
// (see tests/common/ops_harness.h); the cases are instantiated in the
// per-family files (linear_test.cpp, norm_test.cpp, attention_test.cpp, ...).
#include "autograd/tape.h"
#include "common/ops_harness.h"

namespace el::test {

TEST_P(OpCaseTest, ForwardMatchesReference) {
  Rng rng(seed_for(GetParam().name));
  const OpInstance inst = GetParam().make(rng);
  NoGrad no_grad;
  const Tensor out = inst.run(inst.inputs);
  const std::vector<double> want = inst.reference(inst.inputs);
  EXPECT_TRUE(all_close(out.to_floats(), want, inst.forward_tol, GetParam().name));
}

TEST_P(OpCaseTest, GradientMatchesFiniteDifferences) {
  Rng rng(seed_for(GetParam().name));
  const OpInstance inst = GetParam().make(rng);
  EXPECT_TRUE(gradients_match(inst, seed_for(GetParam().name)));
}

TEST_P(OpCaseTest, HalfPrecisionMatchesF32) {
  Rng rng(seed_for(GetParam().name));
  const OpInstance inst = GetParam().make(rng);
  for (DType dt : {DType::bf16, DType::f16}) {
    EXPECT_TRUE(half_precision_matches(inst, dt, seed_for(GetParam().name)));
  }
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(OpCaseTest);

}  // namespace el::test
