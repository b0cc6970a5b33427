// moe.h — the mixture-of-experts feed-forward block (card key moe_experts).
//
// Replaces a DecoderBlock's dense MLP when the card has moe_experts E > 0,
// in the layout of transformers' Mixtral and Qwen2-MoE sparse MoE blocks:
//
//   logits = x gate^T                        router, gate [E, C]
//   ids, w = top-k of softmax / sigmoid(logits) (w renormalised with
//            moe_norm_topk_prob)
//   y[n]   = sum_j w[n, j] expert_{ids[n, j]}(x[n])
//            + sigmoid(shared_expert_gate x[n]) shared_expert(x[n])   (moe_shared_experts)
//   expert_e(x) = down_e(silu(gate_e x) * up_e x)         SwiGLU of width moe_d_ff
//
// Execution (ops/ops.h, "mixture of experts"): the router picks k experts
// per token; ops::moe_group sorts the N k token slots by expert (a counting
// sort: per-expert offsets, no token dropped unless the card sets a capacity
// factor); ops::moe_gather copies each slot's token row into that order;
// each projection is ONE ops::grouped_linear over all experts (gate and up
// together, then down), whatever the token counts per expert — no loop of
// small GEMMs, no host round trip for the counts; ops::moe_combine scatters
// the rows back, weighted, and adds the gated shared expert. Experts that
// receive no token cost nothing and get a zero gradient.
//
// Parameters (transformers' in-memory names, which its save_pretrained maps
// to the per-expert tensors of the checkpoint files; models/hf_model.h loads
// both layouts):
//   gate.weight                [E, C]
//   experts.gate_up_proj       [E, 2F, C]  rows [0, F) of expert e: gate, [F, 2F): up
//   experts.down_proj          [E, C, F]
//   shared_expert.{gate,up,down}_proj.weight, shared_expert_gate.weight [1, C]
// The experts are GroupedProjection objects (nn/grouped_projection.h), not
// LinearLayer slots: for_each_linear (LoRA, quantization) visits the shared
// expert's projections, for_each_grouped the two expert projections. Dense
// they hold the [E, ...] tensors above under those names; weight-only
// quantization (quant/quantize_model.h) swaps them for a QuantizedWeight of
// the E experts' rows stacked ([E 2F, C] and [E C, F], parameters
// experts.gate_up_proj.{qweight,scales,zeros}), run by
// ops::grouped_quant_linear. The router (gate) always stays dense.
//
// Router losses: with `aux` given, forward appends the layer's
// load-balancing loss (ops::moe_balance_loss) and z-loss (ops::moe_z_loss)
// weighted by the card's coefficient over n_layer, so that DecoderLM::loss,
// which sums the list, adds each coefficient times the mean over layers. A
// coefficient of 0 skips its loss.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/grouped_projection.h"
#include "nn/model_card.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el {

struct Mlp;

// One router loss of one layer, as DecoderLM::loss adds it to the training
// loss: weight * value.
struct AuxLoss {
  const char* name;  // "moe_balance" or "moe_z"
  Tensor value;      // f32 [1], unweighted
  float weight;      // the card's coefficient / n_layer
};
// The router losses one forward pass collects, in layer order.
using AuxLosses = std::vector<AuxLoss>;

struct MoeMlp {
  MoeMlp(const ModelCard& card, Device device, DType dtype = DType::f32);
  ~MoeMlp();
  // x[..., C] -> [..., C]. aux: when given, the router losses are appended.
  // dropless: ignore the card's capacity factor (generation runs every token
  // through its k experts: a decode step has too few tokens for a capacity).
  Tensor forward(const Tensor& x, AuxLosses* aux = nullptr, bool dropless = false) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);
  // Visits "<prefix>.experts.gate_up_proj" and "<prefix>.experts.down_proj".
  void for_each_grouped(const std::string& prefix, const GroupedVisitor& visit);

  int64_t n_experts, top_k, expert_d_ff;
  MoeScore score;
  bool normalize;
  float capacity_factor;  // 0 = dropless
  float balance_weight, z_weight;
  Tensor gate;     // [E, C]
  std::unique_ptr<GroupedProjection> gate_up;  // E experts of [2F, C]
  std::unique_ptr<GroupedProjection> down;     // E experts of [C, F]
  std::unique_ptr<Mlp> shared_expert;  // moe_shared_experts > 0
  Tensor shared_expert_gate;           // [1, C] with the shared expert
};

// Slots a forward over n tokens gives each expert: ceil(cf n k / E), or 0
// (dropless) when the capacity factor is 0.
int64_t moe_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k, int64_t n_experts);

}  // namespace el
