// finetune_golden.h — the PEFT golden fixtures (tools/make_peft_fixtures.py):
// one function that loads a fixture's base model and adapter on a device,
// runs the forward and one backward, and compares logits, loss and every
// adapter gradient with what transformers + peft recorded. Used by
// tests/finetune (CPU, in CI) and tests/cuda (GPU).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "autograd/tape.h"
#include "finetune/peft_io.h"
#include "io/safetensors.h"
#include "models/hf_model.h"

namespace el::test {

inline const char* const kPeftFixtures[] = {"llama_lora", "llama_rslora", "llama_dora", "qwen2_dora",
                                             "llama_pissa"};

inline std::string peft_fixture_dir(const std::string& name) {
  return std::string(EL_TEST_DATA_DIR) + "/peft/" + name;
}

// |got - want| <= tol * max(1, rms(want)) elementwise; names the first miss.
inline ::testing::AssertionResult golden_close(const std::vector<float>& got, const std::vector<float>& want,
                                               double tol, const std::string& what) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << what << ": " << got.size() << " values, expected " << want.size();
  }
  double ss = 0;
  for (float w : want) ss += double(w) * w;
  const double scale = std::max(1.0, want.empty() ? 0.0 : std::sqrt(ss / double(want.size())));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::abs(double(got[i]) - want[i]) <= tol * scale)) {
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << got[i] << ", peft has " << want[i]
                                           << " (tolerance " << tol * scale << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Loads fixture `name` on `device` in `dtype` and checks it against peft's
// numbers within `tol` (relative to each tensor's RMS).
inline void check_peft_fixture(const std::string& name, Device device, DType dtype, double tol) {
  const std::string dir = peft_fixture_dir(name);
  auto hf = load_hf_model(dir + "/base", device, dtype);
  ASSERT_TRUE(hf.ok()) << hf.error().message();
  DecoderLM& model = *hf->model;
  auto summary = finetune::load_peft_adapter(model, dir + "/adapter");
  ASSERT_TRUE(summary.ok()) << summary.error().message();
  auto expect = io::SafetensorsFile::open(dir + "/expect.safetensors");
  ASSERT_TRUE(expect.ok()) << expect.error().message();
  auto host = [&](const char* key) { return expect->load(key).value(); };
  auto on_device = [&](const Tensor& t) {
    Tensor d = Tensor::empty(t.shape(), t.dtype(), device);
    d.copy_from(t);
    return d;
  };
  const Tensor ids = on_device(host("ids")), targets = on_device(host("targets"));
  const Tensor logits = model.forward(ids);
  EXPECT_TRUE(golden_close(logits.to_floats(), host("logits").to_floats(), tol, name + " logits"));
  Tensor loss = model.loss(ids, targets);
  tape().backward(loss);
  EXPECT_NEAR(loss.item(), host("loss").to_floats()[0], tol * 4) << name << " loss";
  int grads = 0;
  for (const auto& p : model.parameters()) {
    if (!p.tensor.requires_grad()) continue;
    ASSERT_TRUE(p.tensor.has_grad()) << p.name;
    const std::string key = "grad." + p.name;
    ASSERT_TRUE(expect->contains(key)) << key << " not in the fixture";
    EXPECT_TRUE(golden_close(p.tensor.grad().to_floats(), host(key.c_str()).to_floats(), tol, name + " " + key));
    Tensor(p.tensor).zero_grad();
    ++grads;
  }
  EXPECT_EQ(grads, static_cast<int>(expect->names().size()) - 4) << "every gradient peft recorded";
}

}  // namespace el::test
