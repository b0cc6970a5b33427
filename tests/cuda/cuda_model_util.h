// cuda_model_util.h — helpers of the CUDA tests that compare whole models
// across backends (mla_cuda_test.cpp, nsa_cuda_test.cpp): a copy of a model
// on another device and dtype, and a model's logits and parameter gradients.
#pragma once

#include <memory>
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

}  // namespace el::test
