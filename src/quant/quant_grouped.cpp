#include "quant/quant_grouped.h"

#include "ops/ops.h"

namespace el::quant {

QuantGroupedProjection::QuantGroupedProjection(QuantizedWeight stacked, int64_t n_experts)
    : weight_(std::move(stacked)), n_experts_(n_experts) {
  EL_ENSURE(n_experts_ >= 1 && weight_.out_features % n_experts_ == 0,
            "QuantGroupedProjection: {} rows do not split into {} experts", weight_.out_features, n_experts_);
}

Tensor QuantGroupedProjection::forward(const Tensor& x, const Tensor& offsets) const {
  return ops::grouped_quant_linear(x, weight_, offsets);
}

void QuantGroupedProjection::collect_parameters(const std::string& name, ParameterList& out) const {
  out.push_back({name + ".qweight", weight_.qweight});
  out.push_back({name + ".scales", weight_.scales});
  if (!weight_.symmetric) out.push_back({name + ".zeros", weight_.zeros});
}

Result<std::unique_ptr<QuantGroupedProjection>> make_quant_grouped(int64_t n_experts, int64_t n, int64_t k,
                                                                   const QuantSpec& spec, Device device) {
  const int64_t g = spec.group_for(k), rows = n_experts * n;
  QuantizedWeight w;
  w.bits = spec.bits;
  w.group_size = g;
  w.symmetric = spec.symmetric;
  w.out_features = rows;
  w.in_features = k;
  EL_TRY_ASSIGN(w.qweight, Tensor::try_empty({rows, k * spec.bits / 8}, DType::u8, device));
  EL_TRY_ASSIGN(w.scales, Tensor::try_empty({rows, k / g}, DType::f16, device));
  if (!spec.symmetric) {
    EL_TRY_ASSIGN(w.zeros, Tensor::try_empty({rows, k / g}, DType::u8, device));
  }
  return std::make_unique<QuantGroupedProjection>(std::move(w), n_experts);
}

}  // namespace el::quant
