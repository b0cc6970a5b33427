// quant_grouped.h — the weight-only quantized expert projection that replaces
// a mixture of experts' dense DenseGroupedProjection (nn/grouped_projection.h,
// nn/moe.h).
//
// The E experts' [N, K] weights are the consecutive row blocks of ONE
// QuantizedWeight [E N, K] (ops/quant_layout.h; expert e owns rows
// [e N, (e + 1) N)), so the packed format, the quantizers (quant/rtn.h,
// quant/gptq.h) and the file format (quant/quant_io.h) are those of a
// QuantLinear; forward(x, offsets) is ops::grouped_quant_linear.
//
// Parameter names (collect_parameters): <name>.qweight (u8 [E N, K bits / 8]),
// <name>.scales (f16 [E N, K / g]), <name>.zeros (u8, asymmetric only), with
// <name> the dense tensor's name (e.g. model.layers.0.mlp.experts.down_proj).
// Inference only: nothing here requires grad.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/error.h"
#include "nn/grouped_projection.h"
#include "ops/quant_layout.h"
#include "quant/rtn.h"

namespace el::quant {

class QuantGroupedProjection final : public GroupedProjection {
 public:
  // stacked.out_features must be a multiple of n_experts.
  QuantGroupedProjection(QuantizedWeight stacked, int64_t n_experts);

  Tensor forward(const Tensor& x, const Tensor& offsets) const override;
  void collect_parameters(const std::string& name, ParameterList& out) const override;
  int64_t n_experts() const override { return n_experts_; }
  int64_t in_features() const override { return weight_.in_features; }
  int64_t out_features() const override { return weight_.out_features / n_experts_; }

  const QuantizedWeight& weight() const { return weight_; }
  QuantizedWeight& weight() { return weight_; }

 private:
  QuantizedWeight weight_;
  int64_t n_experts_;
};

// A QuantGroupedProjection of n_experts experts of [n, k], its tensors
// allocated (uninitialised) on `device`; spec.group_size is resolved against
// k (check_quantizable first). Errors: allocation (named with the sizes).
Result<std::unique_ptr<QuantGroupedProjection>> make_quant_grouped(int64_t n_experts, int64_t n, int64_t k,
                                                                   const QuantSpec& spec, Device device);

}  // namespace el::quant
