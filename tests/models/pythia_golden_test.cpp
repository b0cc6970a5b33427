// Pythia against transformers' GPTNeoXForCausalLM: the tiny random
// checkpoints of tools/make_pythia_fixtures.py (tests/fixtures/pythia/<name>/,
// Hugging Face model directories) loaded through the normal loader
// (load_hf_model: config.json -> card, query_key_value split into q/k/v),
// logits compared with transformers' for the same ids in f32 and bf16, and
// through the cached forward (prefill, then decode steps).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "autograd/tape.h"
#include "common/hf_golden_util.h"
#include "common/ops_harness.h"
#include "io/safetensors.h"
#include "models/hf_model.h"
#include "nn/kv_cache.h"

namespace el {
namespace {

namespace fs = std::filesystem;

std::string fixture_dir(const std::string& name) {
  return hftest::family_fixture_dir("pythia", name);
}

struct Reference {
  Tensor ids, logits, logits_bf16;
};

Reference reference(const std::string& name) {
  auto f = hftest::open_reference(fixture_dir(name));
  return {f.load("input_ids").value(), f.load("logits").value(), f.load("logits_bf16").value()};
}

std::unique_ptr<DecoderLM> load(const std::string& name, DType dtype) {
  return hftest::load_golden(fixture_dir(name), dtype, "gpt_neox");
}

// f32: the same bf16 weights in f32 arithmetic on both sides; logits of
// O(1-10) from sums of ~100 terms through two LayerNorms.
constexpr test::Tolerance kF32Tol{5e-5, 5e-5};
// bf16: both sides round activations to bf16 after each op, in different
// orders (and fuse different ops); a few bf16 ulps (2^-8) of the logits.
constexpr test::Tolerance kBf16Tol{0.12, 0.03};

class PythiaGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(PythiaGolden, CardFollowsTheConfig) {
  auto model = load(GetParam(), DType::f32);
  ASSERT_TRUE(model);
  const ModelCard& c = model->card();
  EXPECT_EQ(c.parallel_residual, GetParam() == "pythia_parallel");
  EXPECT_EQ(c.rotary_dims, 4);  // 16 * 0.25
  EXPECT_EQ(c.norm, ModelCard::Norm::layernorm);
  EXPECT_EQ(c.mlp, ModelCard::Mlp::gelu_exact);
  EXPECT_TRUE(c.qkv_bias && c.o_bias && c.mlp_bias);
  EXPECT_FALSE(c.tied_embeddings);
}

TEST_P(PythiaGolden, LogitsMatchTransformersF32) {
  NoGrad no_grad;
  const Reference ref = reference(GetParam());
  auto model = load(GetParam(), DType::f32);
  ASSERT_TRUE(model);
  EXPECT_TRUE(test::all_close(model->forward(ref.ids).to_floats(), test::to_doubles(ref.logits),
                              kF32Tol, GetParam() + " f32 logits"));
}

TEST_P(PythiaGolden, LogitsMatchTransformersBf16) {
  NoGrad no_grad;
  const Reference ref = reference(GetParam());
  auto model = load(GetParam(), DType::bf16);
  ASSERT_TRUE(model);
  EXPECT_TRUE(test::all_close(model->forward(ref.ids).to_floats(),
                              test::to_doubles(ref.logits_bf16), kBf16Tol,
                              GetParam() + " bf16 logits"));
}

// Prefill of 3 tokens, then decode steps, in f32 and bf16 (cache in the
// model's dtype), each step against transformers' full-sequence logits.
TEST_P(PythiaGolden, CachedForwardMatchesTransformers) {
  NoGrad no_grad;
  const Reference ref = reference(GetParam());
  for (const DType dt : {DType::f32, DType::bf16}) {
    auto model = load(GetParam(), dt);
    ASSERT_TRUE(model);
    const int64_t B = ref.ids.dim(0), T = ref.ids.dim(1), V = ref.logits.dim(2);
    KvCache cache = KvCache::create(model->card(), B, T, dt, Device::cpu()).value();
    const std::vector<float> ids = ref.ids.to_floats();
    const std::vector<double> want =
        test::to_doubles(dt == DType::f32 ? ref.logits : ref.logits_bf16);
    for (int64_t t0 = 0; t0 < T;) {
      const int64_t t1 = t0 == 0 ? 3 : t0 + 1;
      std::vector<int32_t> step;
      std::vector<double> expect;
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = t0; t < t1; ++t) {
          step.push_back(static_cast<int32_t>(ids[b * T + t]));
          expect.insert(expect.end(), want.begin() + (b * T + t) * V,
                        want.begin() + (b * T + t + 1) * V);
        }
      }
      const Tensor logits = model->forward_cached(Tensor::from_ints(step, {B, t1 - t0}), cache);
      cache.advance(static_cast<int32_t>(t1 - t0));
      EXPECT_TRUE(test::all_close(logits.to_floats(), expect,
                                  dt == DType::f32 ? kF32Tol : kBf16Tol,
                                  GetParam() + " cached " + dtype_name(dt) + ", tokens from " +
                                      std::to_string(t0)));
      t0 = t1;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PythiaGolden,
                         ::testing::Values("pythia_parallel", "pythia_sequential"));

}  // namespace
}  // namespace el
