// cuda_model_util.h — helpers of the CUDA tests that compare whole models
// across backends (mla_cuda_test.cpp, nsa_cuda_test.cpp, rwkv_cuda_test.cpp):
// a copy of a model on another device and dtype, a model's logits and
// parameter gradients, and the comparison of a whole step with the CPU's.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "core/error.h"
#include "core/tensor.h"
#include "models/decoder_lm.h"

namespace el::test {

// A model on `device` in `dtype` holding `src`'s parameter values.
inline std::unique_ptr<DecoderLM> copy_model(const DecoderLM& src, Device device, DType dtype) {
  auto m = DecoderLM::create(src.card(), device, 0, dtype, /*init_weights=*/false).value();
  const auto& from = src.parameters();
  const auto& to = m->parameters();
  EL_ENSURE(from.size() == to.size(), "parameter lists differ");
  for (size_t i = 0; i < from.size(); ++i) {
    Tensor t = to[i].tensor;  // a handle on the model's parameter
    t.copy_from(from[i].tensor);
  }
  return m;
}

// The logits (on the host, in *logits) and every parameter's gradient of the
// loss on (ids, targets), in parameters() order (undefined where a parameter
// got none); the gradients are cleared from the model afterwards.
inline std::vector<Tensor> grads_of(DecoderLM& m, const Tensor& ids, const Tensor& targets,
                                    Tensor* logits) {
  {
    NoGrad no_grad;
    *logits = m.forward(ids.to(m.device())).to(Device::cpu());
  }
  Tensor loss = m.loss(ids.to(m.device()), targets.to(m.device()));
  tape().backward(loss);
  std::vector<Tensor> g;
  for (const auto& p : m.parameters()) {
    Tensor t = p.tensor;
    g.push_back(t.has_grad() ? t.grad().to(Device::cpu()) : Tensor());
    t.set_grad(Tensor());
  }
  return g;
}

// ||got - ref|| / ||ref|| over all values (NaN when got has a non-finite
// value or the sizes differ; the absolute norm when ref is all zero).
inline double relative_error(const Tensor& got, const Tensor& ref) {
  const std::vector<float> a = got.to_floats(), e = ref.to_floats();
  if (a.size() != e.size()) return NAN;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return NAN;
    num += (double(a[i]) - e[i]) * (double(a[i]) - e[i]);
    den += double(e[i]) * e[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// One training step's logits and every parameter gradient of `cpu_model`
// copied to `device` in `dtype`, against the CPU model's: relative errors
// below `fwd` (logits) and `bwd` (each gradient), failures naming the
// parameter.
inline void expect_model_matches_cpu(DecoderLM& cpu_model, Device device, DType dtype,
                                     const Tensor& ids, const Tensor& targets, double fwd,
                                     double bwd) {
  Tensor ref_logits, logits;
  const std::vector<Tensor> ref = grads_of(cpu_model, ids, targets, &ref_logits);
  auto model = copy_model(cpu_model, device, dtype);
  const std::vector<Tensor> got = grads_of(*model, ids, targets, &logits);
  const std::string what = dtype_name(dtype);
  EXPECT_LT(relative_error(logits, ref_logits), fwd) << what << " logits";
  const auto& params = cpu_model.parameters();
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(got[i].defined(), ref[i].defined()) << params[i].name;
    if (ref[i].defined()) {
      EXPECT_LT(relative_error(got[i], ref[i]), bwd) << what << " grad " << params[i].name;
    }
  }
}

}  // namespace el::test
