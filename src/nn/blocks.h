// blocks.h — the shared building blocks of decoder-only models.
//
// Each block is a plain struct: its parameters, a forward built only from
// ops/ops.h (so autograd and every backend come for free), and
// collect_parameters() under transformers-style names. Model families
// (models/) compose these; a variant that needs a new block adds one here.
// Every constructor takes the parameters' dtype (f32 by default; bf16/f16 for
// mixed-precision training, see train/precision.h).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "nn/kv_cache.h"
#include "nn/mamba.h"
#include "nn/mla.h"
#include "nn/moe.h"
#include "nn/nsa.h"
#include "nn/rwkv.h"
#include "nn/rwkv6.h"
#include "nn/model_card.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el {

// RMSNorm or LayerNorm over the last dimension, chosen by the card.
struct Norm {
  Norm(int64_t dim, ModelCard::Norm kind, float eps, Device device, DType dtype = DType::f32);
  Norm() = default;  // absent: no weight (a Mamba layer has no second norm)
  Tensor forward(const Tensor& x) const;
  // {x + branch, norm(x + branch)}: the residual add fused with the norm that
  // follows it (ops::add_rmsnorm; LayerNorm does the two steps).
  ops::ResidualNorm forward_residual(const Tensor& x, const Tensor& branch) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;

  ModelCard::Norm kind = ModelCard::Norm::rmsnorm;
  float eps = 0.0f;
  Tensor weight;  // [C], init 1
  Tensor bias;    // [C], LayerNorm only, init 0
};

// Causal self-attention with n_kv_head key/value heads (MHA, GQA, MQA).
struct Attention {
  Attention(const ModelCard& card, Device device, DType dtype = DType::f32);
  // x[B, T, C] -> [B, T, C]; rope_inv_freq undefined when the card has no RoPE.
  Tensor forward(const Tensor& x, const Tensor& rope_inv_freq) const;
  // Generation: x[B, T, C] holds each row's next T tokens, which go to cache
  // rows positions[b] + t of layer (k_cache, v_cache); attends over all that
  // row has cached. from_zero: every row starts at 0 (a prefill), so plain
  // causal attention over the new keys gives the same result faster.
  Tensor forward_cached(const Tensor& x, const Tensor& rope_inv_freq, Tensor& k_cache,
                        Tensor& v_cache, const Tensor& positions, bool from_zero) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  int64_t n_head, n_kv_head, head_dim;
  std::unique_ptr<LinearLayer> q_proj, k_proj, v_proj, o_proj;
  // pos_encoding: alibi — the per-head slopes, f32 [H] (ops::alibi_slopes), a
  // constant rather than a parameter; undefined for every other encoding.
  Tensor alibi_slopes;
};

// Feed-forward: SwiGLU (gate/up/down) or GELU (up/down; tanh or erf form),
// chosen by the card; biases on every projection with mlp_bias.
struct Mlp {
  Mlp(const ModelCard& card, Device device, DType dtype = DType::f32);
  Mlp() = default;  // absent: no slots (a Mamba layer has no MLP)
  Tensor forward(const Tensor& x) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  ModelCard::Mlp kind = ModelCard::Mlp::swiglu;
  std::unique_ptr<LinearLayer> gate_proj;  // SwiGLU only
  std::unique_ptr<LinearLayer> up_proj, down_proj;
};

// Pre-norm residual block: h = x + attn(norm1(x)), then h + mlp(norm2(h));
// with the card's parallel_residual (GPT-NeoX) x + attn(norm1(x)) + mlp(norm2(x)).
// Each residual add is fused with the norm that reads its result, so the
// block takes the stream x with x_normed = input_layernorm(x) already made
// (by the previous block, or the model for the first one) and returns the
// new stream with next_norm applied (the next block's input_layernorm, or the
// model's final norm).
// block: mamba (nn/mamba.h): the layer is x + mixer(input_layernorm(x)) under
// the same contract; it has no attention, and post_attention_layernorm and
// mlp are absent (default-constructed, no parameters).
// block: rwkv (nn/rwkv.h): input_layernorm and post_attention_layernorm are
// RWKV's ln1 and ln2, time_mix takes the attention's place and channel_mix
// the MLP's (mlp absent), under the same contract; layer 0 also holds
// pre_ln, which the model applies to the embedding before anything else.
// Parameter names are transformers' (pre_ln, ln1, ln2, attention.*,
// feed_forward.*). `layer` (0-based) sets RWKV's per-layer init and eps.
// block: rwkv6 (nn/rwkv6.h) the same with time_mix6 / channel_mix6.
struct DecoderBlock {
  DecoderBlock(const ModelCard& card, Device device, DType dtype = DType::f32, int layer = 0);
  // aux: where an MoE layer appends its router losses (nn/moe.h); null: none.
  ops::ResidualNorm forward(const Tensor& x, const Tensor& x_normed, const Norm& next_norm,
                            const Tensor& rope_inv_freq, AuxLosses* aux = nullptr) const;
  // The same with the attention reading and extending layer `layer` of the cache.
  // state_last (block: mamba): undefined, or i32 [B], row b's last real
  // token in a right-padded prefill; the layer's states stop after it.
  ops::ResidualNorm forward_cached(const Tensor& x, const Tensor& x_normed, const Norm& next_norm,
                                   const Tensor& rope_inv_freq, KvCache& cache, int64_t layer,
                                   const Tensor& state_last = Tensor()) const;
  // The layer as ops::decode_layer takes it, when it has that shape: RMSNorm,
  // SwiGLU, q/k/v and gate/up stacked in one buffer each, either all four
  // projections dense Linear slots or all quantized (QuantLinear) with one
  // format, biases on q/k/v only (a LoRA slot, mixed slots: nullopt).
  std::optional<DecodeLayerWeights> decode_weights() const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);
  // The MoE expert projections (nn/grouped_projection.h); none otherwise.
  void for_each_grouped(const std::string& prefix, const GroupedVisitor& visit);

  bool parallel_residual;  // the card's parallel_residual
  Norm input_layernorm;
  // Exactly one of the three, by the card's attention (both are named
  // "self_attn" in parameter names, as transformers names them).
  std::unique_ptr<Attention> self_attn;   // standard: MHA / GQA / MQA
  std::unique_ptr<MlaAttention> mla_attn;  // mla
  std::unique_ptr<NsaAttention> nsa_attn;  // nsa
  Norm post_attention_layernorm;
  Mlp mlp;
  // moe_experts > 0: the mixture of experts replaces the dense MLP (mlp is
  // then absent; named "mlp" in parameter names, as transformers names it).
  std::unique_ptr<MoeMlp> moe;
  std::unique_ptr<MambaMixer> mixer;  // block: mamba (then none of the above but input_layernorm)
  std::unique_ptr<RwkvTimeMix> time_mix;        // block: rwkv ("attention")
  std::unique_ptr<RwkvChannelMix> channel_mix;  // block: rwkv ("feed_forward")
  std::unique_ptr<Rwkv6TimeMix> time_mix6;        // block: rwkv6 (nn/rwkv6.h), as time_mix
  std::unique_ptr<Rwkv6ChannelMix> channel_mix6;  // block: rwkv6, as channel_mix
  std::unique_ptr<Norm> pre_ln;                 // block: rwkv / rwkv6, layer 0 only

 private:
  // The residual adds and the MLP after the attention output `attn`
  // (aux, dropless: MoeMlp::forward's).
  ops::ResidualNorm finish(const Tensor& x, const Tensor& attn, const Norm& next_norm,
                           AuxLosses* aux, bool dropless) const;
  // block: rwkv / rwkv6: h = x + time_mix(x_normed), then h + channel_mix(ln2(h));
  // the steps are null in training, the cache's state in generation.
  ops::ResidualNorm rwkv_forward(const Tensor& x, const Tensor& x_normed, const Norm& next_norm,
                                 const RwkvCachedStep* att, const RwkvCachedStep* ffn) const;
  // The dense MLP or the mixture of experts.
  Tensor feed_forward(const Tensor& x, AuxLosses* aux, bool dropless) const;
};

}  // namespace el
