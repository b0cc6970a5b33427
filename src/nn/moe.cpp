#include "nn/moe.h"

#include <cmath>

#include "nn/blocks.h"

namespace el {

namespace {

// The card of the shared expert: a dense SwiGLU MLP of the shared width.
ModelCard shared_expert_card(const ModelCard& card) {
  ModelCard c = card;
  c.d_ff = card.moe_shared_width();
  c.mlp = ModelCard::Mlp::swiglu;
  c.mlp_bias = false;
  return c;
}

Tensor parameter(const Shape& shape, Device device, DType dtype) {
  Tensor t = Tensor::zeros(shape, dtype, device);
  t.set_requires_grad(true);
  return t;
}

}  // namespace

int64_t moe_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k, int64_t n_experts) {
  if (capacity_factor <= 0.0) return 0;
  return static_cast<int64_t>(std::ceil(capacity_factor * static_cast<double>(n_tokens * top_k) /
                                        static_cast<double>(n_experts)));
}

MoeMlp::MoeMlp(const ModelCard& card, Device device, DType dtype)
    : n_experts(card.moe_experts),
      top_k(card.moe_top_k),
      expert_d_ff(card.moe_expert_d_ff()),
      score(card.moe_router == ModelCard::MoeRouter::sigmoid ? MoeScore::sigmoid
                                                             : MoeScore::softmax),
      normalize(card.moe_norm_topk_prob),
      capacity_factor(card.moe_capacity_factor),
      balance_weight(card.moe_aux_loss_coef / static_cast<float>(card.n_layer)),
      z_weight(card.moe_z_loss_coef / static_cast<float>(card.n_layer)) {
  const int64_t C = card.d_model, E = n_experts, F = expert_d_ff;
  gate = parameter({E, C}, device, dtype);
  gate_up = std::make_unique<DenseGroupedProjection>(parameter({E, 2 * F, C}, device, dtype));
  down = std::make_unique<DenseGroupedProjection>(parameter({E, C, F}, device, dtype));
  if (card.moe_shared_experts > 0) {
    shared_expert = std::make_unique<Mlp>(shared_expert_card(card), device, dtype);
    shared_expert_gate = parameter({1, C}, device, dtype);
  }
}

MoeMlp::~MoeMlp() = default;

Tensor MoeMlp::forward(const Tensor& x, AuxLosses* aux, bool dropless) const {
  const Shape shape = x.shape();
  const int64_t C = shape.back(), N = x.numel() / C;
  const Tensor xf = ops::reshape(x, {N, C});
  const Tensor logits = ops::linear(xf, gate);  // [N, E]
  const ops::MoeRouting r = ops::moe_router(logits, top_k, score, normalize);
  if (aux) {
    if (balance_weight > 0.f) {
      aux->push_back({"moe_balance", ops::moe_balance_loss(logits, r.ids, score), balance_weight});
    }
    if (z_weight > 0.f) aux->push_back({"moe_z", ops::moe_z_loss(logits), z_weight});
  }
  const int64_t capacity = dropless ? 0 : moe_capacity(capacity_factor, N, top_k, n_experts);
  const ops::MoeGrouping g = ops::moe_group(r.ids, n_experts, capacity);
  // One grouped GEMM for every expert's gate and up, SwiGLU, one for down.
  const Tensor h = gate_up->forward(ops::moe_gather(xf, g), g.offsets);  // [M, 2F]
  const Tensor ys = down->forward(ops::swiglu_packed(h), g.offsets);     // [M, C]
  const Tensor y = shared_expert ? ops::moe_combine(ys, r.weights, g, shared_expert->forward(xf),
                                                    ops::linear(xf, shared_expert_gate))
                                 : ops::moe_combine(ys, r.weights, g);
  return ops::reshape(y, shape);
}

void MoeMlp::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".gate.weight", gate});
  gate_up->collect_parameters(prefix + ".experts.gate_up_proj", out);
  down->collect_parameters(prefix + ".experts.down_proj", out);
  if (shared_expert) {
    shared_expert->collect_parameters(prefix + ".shared_expert", out);
    out.push_back({prefix + ".shared_expert_gate.weight", shared_expert_gate});
  }
}

void MoeMlp::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  if (shared_expert) shared_expert->for_each_linear(prefix + ".shared_expert", visit);
}

void MoeMlp::for_each_grouped(const std::string& prefix, const GroupedVisitor& visit) {
  visit(prefix + ".experts.gate_up_proj", gate_up);
  visit(prefix + ".experts.down_proj", down);
}

}  // namespace el
