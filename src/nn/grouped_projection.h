// grouped_projection.h — the swappable weights of a mixture of experts'
// expert projections (nn/moe.h), the grouped counterpart of LinearLayer.
//
// An expert projection maps the expert-sorted rows x[M, K] (expert e owns
// rows [offsets[e], offsets[e + 1]), ops::moe_group) to y[M, N] with expert
// e's own [N, K] weight. The MoE block holds each one (gate_up, down) as a
// std::unique_ptr<GroupedProjection>, so quantization swaps the object and
// the block's forward never changes (the same transform rule as module.h):
//
//   DenseGroupedProjection   weight [E, N, K] (today's tensor, trainable):
//                            ops::grouped_linear; parameter "<name>".
//   quant::QuantGroupedProjection (quant/quant_grouped.h)   the E experts'
//                            rows stacked as one QuantizedWeight [E N, K]:
//                            ops::grouped_quant_linear; parameters
//                            "<name>.qweight", ".scales", ".zeros".
//
// The parameter name is the slot's path itself ("...mlp.experts.gate_up_proj",
// transformers' in-memory name): HF import / export, checkpoints, the
// optimizer and training see the dense tensor under the name they always had.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "nn/module.h"

namespace el {

class GroupedProjection {
 public:
  virtual ~GroupedProjection() = default;
  // x[M, K] grouped by offsets (i32 [E + 1]) -> y[M, N]; unused rows 0.
  virtual Tensor forward(const Tensor& x, const Tensor& offsets) const = 0;
  // Appends the parameters: "<name>" (dense) or "<name>.qweight", ... .
  virtual void collect_parameters(const std::string& name, ParameterList& out) const = 0;
  virtual int64_t n_experts() const = 0;
  virtual int64_t in_features() const = 0;   // K
  virtual int64_t out_features() const = 0;  // N, per expert
};

class DenseGroupedProjection final : public GroupedProjection {
 public:
  // weight [E, N, K]; marks it as requiring grad.
  explicit DenseGroupedProjection(Tensor weight);
  Tensor forward(const Tensor& x, const Tensor& offsets) const override;
  void collect_parameters(const std::string& name, ParameterList& out) const override;
  int64_t n_experts() const override { return weight.dim(0); }
  int64_t in_features() const override { return weight.dim(2); }
  int64_t out_features() const override { return weight.dim(1); }

  Tensor weight;  // [E, N, K]
};

// A visitor over every grouped projection of a model: (parameter name, slot).
using GroupedVisitor = std::function<void(const std::string&, std::unique_ptr<GroupedProjection>&)>;

}  // namespace el
