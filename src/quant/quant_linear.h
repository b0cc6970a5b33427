// quant_linear.h — the weight-only quantized projection that replaces a dense
// Linear in a model slot (nn/module.h), and the stacked groups it lives in.
//
// forward(x) is ops::quant_linear (y in x's dtype, f32 accumulation). Like
// make_stacked_linears for dense weights, make_stacked_quant_linears gives
// the projections of one input (q/k/v, gate/up) quantized tensors that are
// consecutive row blocks of one buffer each (qweight, scales, zeros, bias),
// so forward_stacked runs them as ONE quantized matmul over all their rows
// (the packed q/k/v and gate/up outputs nn/blocks.cpp expects).
//
// Parameter names (collect_parameters): <slot>.qweight (u8), <slot>.scales
// (f16), <slot>.zeros (u8, asymmetric only), <slot>.bias (when present). A
// quantized model is inference only: nothing here requires grad.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "nn/module.h"
#include "ops/quant_layout.h"
#include "quant/rtn.h"

namespace el::quant {

class QuantLinear final : public LinearLayer {
 public:
  // `weight` tensors and `bias` ([out] or undefined) may be row blocks of
  // stacked buffers (see file comment).
  QuantLinear(QuantizedWeight weight, Tensor bias);

  Tensor forward(const Tensor& x) const override;
  // One ops::quant_linear over this slot and `rest` when all are QuantLinear
  // with this layer's bits / group size / symmetry / in_features, their
  // qweight, scales, zeros and biases are consecutive row blocks of one
  // buffer each; an undefined Tensor otherwise (the caller runs each slot).
  Tensor forward_stacked(const Tensor& x,
                         const std::vector<const LinearLayer*>& rest) const override;
  void collect_parameters(const std::string& prefix, ParameterList& out) const override;
  int64_t in_features() const override { return weight_.in_features; }
  int64_t out_features() const override { return weight_.out_features; }
  const QuantizedWeight* quantized_weight() const override { return &weight_; }
  Tensor bias_tensor() const override { return bias_; }

  const QuantizedWeight& weight() const { return weight_; }
  QuantizedWeight& weight() { return weight_; }
  const Tensor& bias() const { return bias_; }
  Tensor& bias() { return bias_; }

 private:
  QuantizedWeight weight_;
  Tensor bias_;
};

// QuantLinear layers of one input (`in` features) with `outs` output
// features each, their tensors allocated (uninitialised) as row blocks of
// one buffer per kind on `device`; biases (when `bias`) in `bias_dtype`.
// spec.group_size is resolved against `in` (check_quantizable first).
// Errors: allocation failures (named with the sizes).
Result<std::vector<std::unique_ptr<QuantLinear>>> make_stacked_quant_linears(
    int64_t in, const std::vector<int64_t>& outs, const QuantSpec& spec, bool bias,
    DType bias_dtype, Device device);

}  // namespace el::quant
