// module.h — parameters and the swappable linear layer.
//
// A model is a tree of plain structs holding Tensors; each exposes its
// parameters under transformers-style names ("model.layers.0.self_attn.q_proj
// .weight") so checkpoints and later Hugging Face loading share one naming.
//
// Techniques are model transforms, not branches in forward: every projection
// is held as a std::unique_ptr<LinearLayer>, so LoRA/DoRA (fine-tuning issue)
// or a quantized linear (inference issue) replace the object in its slot and
// the forward code never changes. Model::for_each_linear() visits the slots.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "ops/quant_layout.h"

namespace el {

struct NamedParameter {
  std::string name;
  Tensor tensor;
};
using ParameterList = std::vector<NamedParameter>;

// Normal(0, std) initialisation drawn on the host in f32 in a fixed order (so
// runs are reproducible), then copied to the tensor's device and dtype (a
// bf16 tensor gets the f32 draws rounded to nearest even, so bf16 and f32
// models of one seed start from the same values up to rounding).
void init_normal(Tensor& t, Rng& rng, float std);

class LinearLayer {
 public:
  virtual ~LinearLayer() = default;
  // y[..., out] = f(x[..., in])
  virtual Tensor forward(const Tensor& x) const = 0;
  // Appends this layer's parameters as "<prefix>.weight", "<prefix>.bias", ...
  virtual void collect_parameters(const std::string& prefix, ParameterList& out) const = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // This slot and `rest` (same input) as one projection: y[..., sum of
  // out_features] with the outputs side by side in order, when the layers can
  // share one kernel (dense weights that are row blocks of one buffer, or
  // quantized weights packed the same way). An undefined Tensor when they
  // cannot; the caller then runs each forward on its own (q/k/v, gate/up).
  virtual Tensor forward_stacked(const Tensor& x,
                                 const std::vector<const LinearLayer*>& rest) const {
    (void)x;
    (void)rest;
    return Tensor();
  }
  // The weight-only quantized weight of this slot (quant/quant_linear.h), or
  // nullptr for any other layer; bias_tensor() is the slot's bias whatever
  // its kind (undefined when none). Fused kernels read both (decode_weights).
  virtual const QuantizedWeight* quantized_weight() const { return nullptr; }
  virtual Tensor bias_tensor() const { return Tensor(); }
};

// The dense projection: weight[out, in] (+ bias[out]), stored in `dtype`
// (f32, or bf16/f16 for mixed-precision training; zero-initialised).
class Linear final : public LinearLayer {
 public:
  Linear(int64_t in, int64_t out, bool bias, Device device, DType dtype = DType::f32);
  // Over existing tensors (row blocks of a stacked buffer, see
  // make_stacked_linears); marks them as requiring grad.
  Linear(Tensor weight, Tensor bias);
  Tensor forward(const Tensor& x) const override;
  Tensor forward_stacked(const Tensor& x,
                         const std::vector<const LinearLayer*>& rest) const override;
  void collect_parameters(const std::string& prefix, ParameterList& out) const override;
  int64_t in_features() const override { return weight.dim(1); }
  int64_t out_features() const override { return weight.dim(0); }
  Tensor bias_tensor() const override { return bias; }

  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
};

// Dense Linear layers of one input (in features) whose weights, and biases,
// are consecutive row blocks of one buffer, so that ops::linear_stacked runs
// them as one GEMM (q/k/v, gate/up). Each layer still holds its own named
// parameters: checkpoints, the optimizer and transforms see q_proj, k_proj,
// ... as usual. When a block would not start on a 256-byte boundary (only
// tiny widths), every layer gets its own buffer and the model uses the
// per-layer path instead.
std::vector<std::unique_ptr<LinearLayer>> make_stacked_linears(int64_t in,
                                                               const std::vector<int64_t>& outs,
                                                               bool bias, Device device,
                                                               DType dtype);

// The weights (and biases, empty when there are none) of `slots` when every
// slot still holds a dense Linear and they are stacked in one buffer (what
// make_stacked_linears made, before any transform swapped a slot); nullopt
// otherwise, and the caller runs each slot's forward.
struct StackedWeights {
  std::vector<Tensor> weights, biases;
};
std::optional<StackedWeights> stacked_weights(std::initializer_list<const LinearLayer*> slots);

// The same for quantized slots: one QuantizedWeight over all their rows (its
// qweight / scales / zeros views over consecutive row blocks of one buffer
// each) and the biases stacked alike (undefined when no slot has one); nullopt
// when a slot is not quantized, the slots' bits / group size / symmetry /
// in_features differ, only some have a bias, or the tensors are not stacked.
struct StackedQuantized {
  QuantizedWeight weight;
  Tensor bias;
};
std::optional<StackedQuantized> stacked_quantized(const std::vector<const LinearLayer*>& slots);

// A visitor over every linear slot of a model: (parameter prefix, slot).
using LinearVisitor = std::function<void(const std::string&, std::unique_ptr<LinearLayer>&)>;

}  // namespace el
