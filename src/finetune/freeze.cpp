#include "finetune/freeze.h"

#include <string>

namespace el::finetune {
namespace {

// The decoder layer index of "model.layers.<i>.<...>", or -1.
int64_t layer_of(const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  const size_t end = name.find('.', prefix.size());
  return std::stoll(name.substr(prefix.size(), end - prefix.size()));
}

}  // namespace

Result<FreezeSummary> apply_freeze(DecoderLM& model, const FreezeConfig& config) {
  const int64_t layers = model.card().n_layer;
  if (config.k < 1 || config.k > layers) {
    return make_error(fmt::format("freeze k = {} must be in [1, {}] (the model's layer count)", config.k, layers),
                      "freeze.k");
  }
  FreezeSummary s;
  for (const auto& p : model.parameters()) {
    const int64_t layer = layer_of(p.name);
    bool train = false;
    if (config.mode == FreezeConfig::Mode::last_k_trainable) {
      train = layer >= layers - config.k;
    } else {
      // Everything past the frozen prefix, the embedding excepted.
      train = layer >= config.k || (layer < 0 && p.name != "model.embed_tokens.weight");
    }
    Tensor(p.tensor).set_requires_grad(train);
    s.total_parameters += p.tensor.numel();
    if (train) s.trainable_parameters += p.tensor.numel();
  }
  return s;
}

}  // namespace el::finetune
