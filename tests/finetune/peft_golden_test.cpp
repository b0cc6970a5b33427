// peft_golden_test.cpp — LoRA, RSLoRA and DoRA against transformers + peft:
// the same base model and adapter files give the same logits, loss and
// adapter gradients (fixtures: tools/make_peft_fixtures.py).
#include <cstdlib>

#include "common/finetune_golden.h"

namespace el::test {
namespace {

TEST(PeftGolden, F32MatchesPeftOnTheCpu) {
  for (const char* name : kPeftFixtures) {
    SCOPED_TRACE(name);
    check_peft_fixture(name, Device::cpu(), DType::f32, 2e-5);
  }
}

// Our adapter files load in our loader exactly (peft loading them is checked
// by tools/make_peft_fixtures.py --check-adapter on the GPU machine).
TEST(PeftGolden, SavedAdapterReloadsToTheSameLogits) {
  const std::string dir = peft_fixture_dir("llama_dora");
  auto a = load_hf_model(dir + "/base", Device::cpu());
  ASSERT_TRUE(a.ok());
  auto s = finetune::load_peft_adapter(*a->model, dir + "/adapter");
  ASSERT_TRUE(s.ok());
  finetune::LoraConfig cfg = finetune::read_peft_config(dir + "/adapter/adapter_config.json").value();
  // EL_PEFT_EXPORT_DIR keeps the directory for tools/make_peft_fixtures.py
  // --check-adapter (peft loading our file).
  const char* keep = std::getenv("EL_PEFT_EXPORT_DIR");
  const std::string out = keep ? std::string(keep) : ::testing::TempDir() + "/el_peft_resave";
  ASSERT_TRUE(finetune::save_peft_adapter(*a->model, cfg, out).ok());
  auto b = load_hf_model(dir + "/base", Device::cpu());
  ASSERT_TRUE(finetune::load_peft_adapter(*b->model, out).ok());
  const Tensor ids = Tensor::from_ints({1, 2, 3, 4, 5}, {1, 5});
  EXPECT_EQ(a->model->forward(ids).to_floats(), b->model->forward(ids).to_floats());
}

}  // namespace
}  // namespace el::test
