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
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

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
};

// The dense projection: weight[out, in] (+ bias[out]), stored in `dtype`
// (f32, or bf16/f16 for mixed-precision training; zero-initialised).
class Linear final : public LinearLayer {
 public:
  Linear(int64_t in, int64_t out, bool bias, Device device, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const override;
  void collect_parameters(const std::string& prefix, ParameterList& out) const override;
  int64_t in_features() const override { return weight.dim(1); }
  int64_t out_features() const override { return weight.dim(0); }

  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
};

// A visitor over every linear slot of a model: (parameter prefix, slot).
using LinearVisitor = std::function<void(const std::string&, std::unique_ptr<LinearLayer>&)>;

}  // namespace el
