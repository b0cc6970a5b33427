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

Linear::Linear(Tensor weight_, Tensor bias_) : weight(std::move(weight_)), bias(std::move(bias_)) {
  weight.set_requires_grad(true);
  if (bias.defined()) bias.set_requires_grad(true);
}

Tensor Linear::forward(const Tensor& x) const { return ops::linear(x, weight, bias); }

std::vector<std::unique_ptr<LinearLayer>> make_stacked_linears(int64_t in,
                                                               const std::vector<int64_t>& outs,
                                                               bool bias, Device device,
                                                               DType dtype) {
  // 256 bytes: every block then meets the alignment the vectorised kernels
  // (AdamW, grad norm, elementwise) want from a tensor's start.
  constexpr int64_t kAlign = 256;
  const auto es = static_cast<int64_t>(dtype_size(dtype));
  int64_t rows = 0;
  bool aligned = true;
  for (int64_t o : outs) {
    rows += o;
    aligned = aligned && (o * in * es) % kAlign == 0 && (!bias || (o * es) % kAlign == 0);
  }
  std::vector<std::unique_ptr<LinearLayer>> layers;
  if (!aligned) {
    for (int64_t o : outs) layers.push_back(std::make_unique<Linear>(in, o, bias, device, dtype));
    return layers;
  }
  const Tensor w = Tensor::zeros({rows, in}, dtype, device);
  const Tensor b = bias ? Tensor::zeros({rows}, dtype, device) : Tensor();
  int64_t row = 0;
  for (int64_t o : outs) {
    layers.push_back(std::make_unique<Linear>(w.slice0(row, row + o),
                                              bias ? b.slice0(row, row + o) : Tensor()));
    row += o;
  }
  return layers;
}

std::optional<StackedWeights> stacked_weights(std::initializer_list<const LinearLayer*> slots) {
  StackedWeights s;
  for (const LinearLayer* slot : slots) {
    const auto* dense = dynamic_cast<const Linear*>(slot);
    if (!dense) return std::nullopt;
    s.weights.push_back(dense->weight);
    if (dense->bias.defined()) s.biases.push_back(dense->bias);
  }
  if (!ops::rows_are_stacked(s.weights)) return std::nullopt;
  if (!s.biases.empty() && (s.biases.size() != s.weights.size() || !ops::rows_are_stacked(s.biases)))
    return std::nullopt;
  return s;
}

std::optional<StackedQuantized> stacked_quantized(const std::vector<const LinearLayer*>& slots) {
  if (slots.empty() || !slots.front()->quantized_weight()) return std::nullopt;
  const QuantizedWeight& first = *slots.front()->quantized_weight();
  const bool with_bias = slots.front()->bias_tensor().defined();
  std::vector<Tensor> qw, sc, zs, bs;
  int64_t rows = 0;
  for (const LinearLayer* slot : slots) {
    const QuantizedWeight* w = slot->quantized_weight();
    if (!w || w->bits != first.bits || w->group_size != first.group_size ||
        w->symmetric != first.symmetric || w->in_features != first.in_features ||
        slot->bias_tensor().defined() != with_bias) {
      return std::nullopt;
    }
    qw.push_back(w->qweight);
    sc.push_back(w->scales);
    if (!w->symmetric) zs.push_back(w->zeros);
    if (with_bias) bs.push_back(slot->bias_tensor());
    rows += w->out_features;
  }
  if (!ops::rows_are_stacked(qw) || !ops::rows_are_stacked(sc) ||
      (!zs.empty() && !ops::rows_are_stacked(zs)) || (!bs.empty() && !ops::rows_are_stacked(bs))) {
    return std::nullopt;
  }
  StackedQuantized s;
  s.weight = first;
  s.weight.out_features = rows;
  s.weight.qweight = ops::stacked_view(qw);
  s.weight.scales = ops::stacked_view(sc);
  if (!zs.empty()) s.weight.zeros = ops::stacked_view(zs);
  if (!bs.empty()) s.bias = ops::stacked_view(bs);
  return s;
}

Tensor Linear::forward_stacked(const Tensor& x, const std::vector<const LinearLayer*>& rest) const {
  StackedWeights s;
  for (const LinearLayer* slot : rest) {
    const auto* dense = dynamic_cast<const Linear*>(slot);
    if (!dense || dense->bias.defined() != bias.defined()) return Tensor();
  }
  std::vector<const LinearLayer*> all{this};
  all.insert(all.end(), rest.begin(), rest.end());
  for (const LinearLayer* slot : all) {
    const auto* dense = static_cast<const Linear*>(slot);
    s.weights.push_back(dense->weight);
    if (dense->bias.defined()) s.biases.push_back(dense->bias);
  }
  if (!ops::rows_are_stacked(s.weights)) return Tensor();
  if (!s.biases.empty() && !ops::rows_are_stacked(s.biases)) return Tensor();
  return ops::linear_stacked(x, s.weights, s.biases);
}

void Linear::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".weight", weight});
  if (bias.defined()) out.push_back({prefix + ".bias", bias});
}

}  // namespace el
