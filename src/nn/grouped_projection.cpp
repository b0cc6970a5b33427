#include "nn/grouped_projection.h"

#include "ops/ops.h"

namespace el {

DenseGroupedProjection::DenseGroupedProjection(Tensor w) : weight(std::move(w)) {
  EL_ENSURE(weight.ndim() == 3, "DenseGroupedProjection: weight {} is not [E, N, K]", shape_str(weight.shape()));
  weight.set_requires_grad(true);
}

Tensor DenseGroupedProjection::forward(const Tensor& x, const Tensor& offsets) const {
  return ops::grouped_linear(x, {weight}, offsets);
}

void DenseGroupedProjection::collect_parameters(const std::string& name, ParameterList& out) const {
  out.push_back({name, weight});
}

}  // namespace el
