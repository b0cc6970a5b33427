// Our generation against transformers' on the tiny Hugging Face fixtures, on
// the CPU (tests/common/hf_generate_golden.h; tests/cuda runs the same on a GPU).
#include "common/hf_generate_golden.h"

namespace el::test {
namespace {

class HfGenerate : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGenerate, GreedyF32MatchesTransformers) { check_greedy_f32_matches_transformers(GetParam(), Device::cpu()); }
TEST_P(HfGenerate, Bf16LogitsAndGreedyMatchTransformers) { check_bf16_matches_transformers(GetParam(), Device::cpu()); }

INSTANTIATE_TEST_SUITE_P(Fixtures, HfGenerate, ::testing::ValuesIn(kGenerateFixtures));

}  // namespace
}  // namespace el::test
