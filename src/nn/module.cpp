#include "nn/module.h"

#include "ops/ops.h"

namespace el {

void init_normal(Tensor& t, Rng& rng, float std) {
  std::vector<float> host(static_cast<size_t>(t.numel()));
  for (float& v : host) v = rng.normal() * std;
  t.copy_from(Tensor::from_floats(host, t.shape()));
}

Linear::Linear(int64_t in, int64_t out, bool bias, Device device, DType dtype) {
  weight = Tensor::zeros({out, in}, dtype, device);
  weight.set_requires_grad(true);
  if (bias) {
    this->bias = Tensor::zeros({out}, dtype, device);
    this->bias.set_requires_grad(true);
  }
}

Tensor Linear::forward(const Tensor& x) const { return ops::linear(x, weight, bias); }

void Linear::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".weight", weight});
  if (bias.defined()) out.push_back({prefix + ".bias", bias});
}

}  // namespace el
