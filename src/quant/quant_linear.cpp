#include "quant/quant_linear.h"

#include "ops/ops.h"

namespace el::quant {

QuantLinear::QuantLinear(QuantizedWeight weight, Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  weight_.qweight.set_requires_grad(false);
  weight_.scales.set_requires_grad(false);
  if (weight_.zeros.defined()) weight_.zeros.set_requires_grad(false);
  if (bias_.defined()) bias_.set_requires_grad(false);
}

Tensor QuantLinear::forward(const Tensor& x) const { return ops::quant_linear(x, weight_, bias_); }

Tensor QuantLinear::forward_stacked(const Tensor& x,
                                    const std::vector<const LinearLayer*>& rest) const {
  std::vector<const LinearLayer*> all{this};
  all.insert(all.end(), rest.begin(), rest.end());
  const std::optional<StackedQuantized> s = stacked_quantized(all);
  return s ? ops::quant_linear(x, s->weight, s->bias) : Tensor();
}

void QuantLinear::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".qweight", weight_.qweight});
  out.push_back({prefix + ".scales", weight_.scales});
  if (!weight_.symmetric) out.push_back({prefix + ".zeros", weight_.zeros});
  if (bias_.defined()) out.push_back({prefix + ".bias", bias_});
}

Result<std::vector<std::unique_ptr<QuantLinear>>> make_stacked_quant_linears(
    int64_t in, const std::vector<int64_t>& outs, const QuantSpec& spec, bool bias,
    DType bias_dtype, Device device) {
  const int64_t g = spec.group_for(in), groups = in / g, row_bytes = in * spec.bits / 8;
  int64_t rows = 0;
  for (int64_t o : outs) rows += o;
  EL_TRY_ASSIGN(Tensor qweight, Tensor::try_empty({rows, row_bytes}, DType::u8, device));
  EL_TRY_ASSIGN(Tensor scales, Tensor::try_empty({rows, groups}, DType::f16, device));
  Tensor zeros, biases;
  if (!spec.symmetric) {
    EL_TRY_ASSIGN(zeros, Tensor::try_empty({rows, groups}, DType::u8, device));
  }
  if (bias) {
    EL_TRY_ASSIGN(biases, Tensor::try_empty({rows}, bias_dtype, device));
  }
  std::vector<std::unique_ptr<QuantLinear>> layers;
  int64_t row = 0;
  for (int64_t o : outs) {
    QuantizedWeight w;
    w.bits = spec.bits;
    w.group_size = g;
    w.symmetric = spec.symmetric;
    w.out_features = o;
    w.in_features = in;
    w.qweight = qweight.slice0(row, row + o);
    w.scales = scales.slice0(row, row + o);
    if (!spec.symmetric) w.zeros = zeros.slice0(row, row + o);
    layers.push_back(std::make_unique<QuantLinear>(std::move(w), bias ? biases.slice0(row, row + o) : Tensor()));
    row += o;
  }
  return layers;
}

}  // namespace el::quant
