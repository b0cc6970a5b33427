// Generation on the GPU against transformers on the tiny Hugging Face fixtures
// (tests/common/hf_generate_golden.h): the KV-cache prefill and decode kernels
// (cuda_infer.cu) and the GEMMs at decode shapes, end to end.
#include "common/hf_generate_golden.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

class HfGenerateGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGenerateGpu, GreedyF32MatchesTransformers) {
  EL_REQUIRE_GPU();
  check_greedy_f32_matches_transformers(GetParam(), gpu());
}
TEST_P(HfGenerateGpu, Bf16LogitsAndGreedyMatchTransformers) {
  EL_REQUIRE_GPU();
  check_bf16_matches_transformers(GetParam(), gpu());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfGenerateGpu, ::testing::ValuesIn(kGenerateFixtures));

}  // namespace
}  // namespace el::test
