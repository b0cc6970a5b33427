// The PEFT golden fixtures on the GPU: LoRA, RSLoRA and DoRA logits, loss
// and adapter gradients against transformers + peft (recorded on the CPU in
// f32), in f32 and in bf16 (looser: 8-bit mantissas through two layers).
#include "common/finetune_golden.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

TEST(PeftGoldenGpu, F32AndBf16MatchPeft) {
  EL_REQUIRE_GPU();
  for (const char* name : kPeftFixtures) {
    SCOPED_TRACE(name);
    check_peft_fixture(name, gpu(), DType::f32, 1e-4);
    check_peft_fixture(name, gpu(), DType::bf16, 6e-2);
  }
}

}  // namespace
}  // namespace el::test
