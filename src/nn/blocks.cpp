#include "nn/blocks.h"

#include "ops/ops.h"

namespace el {

Norm::Norm(int64_t dim, ModelCard::Norm kind, float eps, Device device, DType dtype)
    : kind(kind), eps(eps) {
  weight = Tensor::full({dim}, 1.0f, dtype, device);
  weight.set_requires_grad(true);
  if (kind == ModelCard::Norm::layernorm) {
    bias = Tensor::zeros({dim}, dtype, device);
    bias.set_requires_grad(true);
  }
}

Tensor Norm::forward(const Tensor& x) const {
  return kind == ModelCard::Norm::rmsnorm ? ops::rmsnorm(x, weight, eps)
                                          : ops::layernorm(x, weight, bias, eps);
}

ops::ResidualNorm Norm::forward_residual(const Tensor& x, const Tensor& branch) const {
  if (kind == ModelCard::Norm::rmsnorm) return ops::add_rmsnorm(x, branch, weight, eps);
  Tensor sum = ops::add(x, branch);
  return {sum, ops::layernorm(sum, weight, bias, eps)};
}

void Norm::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".weight", weight});
  if (bias.defined()) out.push_back({prefix + ".bias", bias});
}

static int64_t card_head_dim(const ModelCard& c) {
  return c.head_dim > 0 ? c.head_dim : c.d_model / c.n_head;
}

Attention::Attention(const ModelCard& card, Device device, DType dtype)
    : n_head(card.n_head), n_kv_head(card.n_kv_head), head_dim(card_head_dim(card)) {
  const int64_t c = card.d_model;
  auto qkv = make_stacked_linears(c, {n_head * head_dim, n_kv_head * head_dim, n_kv_head * head_dim},
                                  card.qkv_bias, device, dtype);
  q_proj = std::move(qkv[0]);
  k_proj = std::move(qkv[1]);
  v_proj = std::move(qkv[2]);
  o_proj = std::make_unique<Linear>(n_head * head_dim, c, card.o_bias, device, dtype);
  if (card.pos_encoding == ModelCard::PosEncoding::alibi) {
    alibi_slopes = ops::alibi_slopes(n_head, device);
  }
}

Tensor Attention::forward(const Tensor& x, const Tensor& rope_inv_freq) const {
  const int64_t B = x.dim(0), T = x.dim(1);
  ops::QKV h;
  const Tensor packed = q_proj->forward_stacked(x, {k_proj.get(), v_proj.get()});
  if (packed.defined()) {
    // One GEMM for q, k and v (their weights are row blocks of one buffer),
    // then the split and the rotation in one pass.
    h = ops::split_qkv_rope(packed, n_head, n_kv_head, rope_inv_freq);
  } else {
    // A transform replaced a projection (e.g. LoRA): each slot on its own.
    h.q = ops::reshape(q_proj->forward(x), {B, T, n_head, head_dim});
    h.k = ops::reshape(k_proj->forward(x), {B, T, n_kv_head, head_dim});
    h.v = ops::reshape(v_proj->forward(x), {B, T, n_kv_head, head_dim});
    if (rope_inv_freq.defined()) {
      h.q = ops::rope(h.q, rope_inv_freq);
      h.k = ops::rope(h.k, rope_inv_freq);
    }
  }
  Tensor y = ops::attention(h.q, h.k, h.v, /*causal=*/true, 0.0f, alibi_slopes);  // [B, T, H, D]
  return o_proj->forward(ops::reshape(y, {B, T, n_head * head_dim}));
}

Tensor Attention::forward_cached(const Tensor& x, const Tensor& rope_inv_freq, Tensor& k_cache,
                                 Tensor& v_cache, const Tensor& positions, bool from_zero) const {
  const int64_t B = x.dim(0), T = x.dim(1);
  ops::QKV h;
  const Tensor packed = q_proj->forward_stacked(x, {k_proj.get(), v_proj.get()});
  if (packed.defined() && !from_zero) {
    // Decode (and a prefill after cached tokens): k and v go straight to the
    // cache, in one kernel with the split and RoPE.
    const Tensor q = ops::qkv_rope_cache_write(packed, n_head, n_kv_head, rope_inv_freq, positions,
                                               k_cache, v_cache);
    const Tensor y = ops::attention_cached(q, k_cache, v_cache, positions, 0.0f, alibi_slopes);
    return o_proj->forward(ops::reshape(y, {B, T, n_head * head_dim}));
  }
  if (packed.defined()) {
    h = ops::split_qkv_rope_at(packed, n_head, n_kv_head, rope_inv_freq, positions);
  } else {
    h.q = ops::reshape(q_proj->forward(x), {B, T, n_head, head_dim});
    h.k = ops::reshape(k_proj->forward(x), {B, T, n_kv_head, head_dim});
    h.v = ops::reshape(v_proj->forward(x), {B, T, n_kv_head, head_dim});
    if (rope_inv_freq.defined()) {
      h.q = ops::rope_at(h.q, rope_inv_freq, positions);
      h.k = ops::rope_at(h.k, rope_inv_freq, positions);
    }
  }
  ops::kv_cache_write(h.k, h.v, positions, k_cache, v_cache);
  // A prefill from position 0 sees exactly its own keys: the training
  // kernel (tiled, tensor cores) instead of the decode kernel.
  Tensor y = from_zero ? ops::attention(h.q, h.k, h.v, /*causal=*/true, 0.0f, alibi_slopes)
                       : ops::attention_cached(h.q, k_cache, v_cache, positions, 0.0f,
                                               alibi_slopes);
  return o_proj->forward(ops::reshape(y, {B, T, n_head * head_dim}));
}

void Attention::collect_parameters(const std::string& prefix, ParameterList& out) const {
  q_proj->collect_parameters(prefix + ".q_proj", out);
  k_proj->collect_parameters(prefix + ".k_proj", out);
  v_proj->collect_parameters(prefix + ".v_proj", out);
  o_proj->collect_parameters(prefix + ".o_proj", out);
}

void Attention::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".q_proj", q_proj);
  visit(prefix + ".k_proj", k_proj);
  visit(prefix + ".v_proj", v_proj);
  visit(prefix + ".o_proj", o_proj);
}

Mlp::Mlp(const ModelCard& card, Device device, DType dtype) : kind(card.mlp) {
  const bool bias = card.mlp_bias;
  if (kind == ModelCard::Mlp::swiglu) {
    auto gate_up = make_stacked_linears(card.d_model, {card.d_ff, card.d_ff}, bias, device, dtype);
    gate_proj = std::move(gate_up[0]);
    up_proj = std::move(gate_up[1]);
  } else {
    up_proj = std::make_unique<Linear>(card.d_model, card.d_ff, bias, device, dtype);
  }
  down_proj = std::make_unique<Linear>(card.d_ff, card.d_model, bias, device, dtype);
}

Tensor Mlp::forward(const Tensor& x) const {
  if (kind == ModelCard::Mlp::gelu) return down_proj->forward(ops::gelu(up_proj->forward(x)));
  if (kind == ModelCard::Mlp::gelu_exact) {
    return down_proj->forward(ops::gelu_exact(up_proj->forward(x)));
  }
  // gate and up as one GEMM when their weights are stacked (see Attention).
  const Tensor gate_up = gate_proj->forward_stacked(x, {up_proj.get()});
  Tensor h = gate_up.defined() ? ops::swiglu_packed(gate_up)
                               : ops::swiglu(gate_proj->forward(x), up_proj->forward(x));
  return down_proj->forward(h);
}

void Mlp::collect_parameters(const std::string& prefix, ParameterList& out) const {
  if (gate_proj) gate_proj->collect_parameters(prefix + ".gate_proj", out);
  up_proj->collect_parameters(prefix + ".up_proj", out);
  down_proj->collect_parameters(prefix + ".down_proj", out);
}

void Mlp::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  if (gate_proj) visit(prefix + ".gate_proj", gate_proj);
  visit(prefix + ".up_proj", up_proj);
  visit(prefix + ".down_proj", down_proj);
}

DecoderBlock::DecoderBlock(const ModelCard& card, Device device, DType dtype, int layer)
    : parallel_residual(card.parallel_residual),
      input_layernorm(card.d_model, card.norm, card.norm_eps, device, dtype),
      post_attention_layernorm(card.block == ModelCard::Block::mamba
                                   ? Norm()
                                   : Norm(card.d_model, card.norm, card.norm_eps, device, dtype)),
      mlp(card.block != ModelCard::Block::transformer || card.moe_experts > 0
              ? Mlp()
              : Mlp(card, device, dtype)) {
  if (card.block == ModelCard::Block::rwkv) {
    // transformers' rescale_every as LayerNorm eps (nn/rwkv.h).
    input_layernorm.eps *= rwkv_layer_eps_scale(card, layer);
    post_attention_layernorm.eps *= rwkv_layer_eps_scale(card, layer);
    time_mix = std::make_unique<RwkvTimeMix>(card, layer, device, dtype);
    channel_mix = std::make_unique<RwkvChannelMix>(card, layer, device, dtype);
    if (layer == 0) {
      pre_ln = std::make_unique<Norm>(card.d_model, card.norm, card.norm_eps, device, dtype);
    }
    return;
  }
  if (card.block == ModelCard::Block::rwkv6) {  // nn/rwkv6.h: every LayerNorm has norm_eps
    time_mix6 = std::make_unique<Rwkv6TimeMix>(card, layer, device, dtype);
    channel_mix6 = std::make_unique<Rwkv6ChannelMix>(card, layer, device, dtype);
    if (layer == 0) {
      pre_ln = std::make_unique<Norm>(card.d_model, card.norm, card.norm_eps, device, dtype);
    }
    return;
  }
  if (card.block == ModelCard::Block::mamba) {
    mixer = std::make_unique<MambaMixer>(card, device, dtype);
    return;
  }
  if (card.attention == ModelCard::Attention::mla) {
    mla_attn = std::make_unique<MlaAttention>(card, device, dtype);
  } else if (card.attention == ModelCard::Attention::nsa) {
    nsa_attn = std::make_unique<NsaAttention>(card, device, dtype);
  } else {
    self_attn = std::make_unique<Attention>(card, device, dtype);
  }
  if (card.moe_experts > 0) moe = std::make_unique<MoeMlp>(card, device, dtype);
}

ops::ResidualNorm DecoderBlock::forward(const Tensor& x, const Tensor& x_normed,
                                        const Norm& next_norm, const Tensor& rope_inv_freq,
                                        AuxLosses* aux) const {
  if (mixer) return next_norm.forward_residual(x, mixer->forward(x_normed));
  if (time_mix || time_mix6) return rwkv_forward(x, x_normed, next_norm, nullptr, nullptr);
  const Tensor attn = mla_attn   ? mla_attn->forward(x_normed, rope_inv_freq)
                      : nsa_attn ? nsa_attn->forward(x_normed, rope_inv_freq)
                                 : self_attn->forward(x_normed, rope_inv_freq);
  return finish(x, attn, next_norm, aux, /*dropless=*/false);
}

ops::ResidualNorm DecoderBlock::rwkv_forward(const Tensor& x, const Tensor& x_normed,
                                             const Norm& next_norm, const RwkvCachedStep* att,
                                             const RwkvCachedStep* ffn) const {
  const Tensor a = time_mix ? time_mix->forward(x_normed, att) : time_mix6->forward(x_normed, att);
  const ops::ResidualNorm h = post_attention_layernorm.forward_residual(x, a);
  return next_norm.forward_residual(h.sum, channel_mix ? channel_mix->forward(h.normed, ffn)
                                                       : channel_mix6->forward(h.normed, ffn));
}

Tensor DecoderBlock::feed_forward(const Tensor& x, AuxLosses* aux, bool dropless) const {
  return moe ? moe->forward(x, aux, dropless) : mlp.forward(x);
}

ops::ResidualNorm DecoderBlock::finish(const Tensor& x, const Tensor& attn, const Norm& next_norm,
                                       AuxLosses* aux, bool dropless) const {
  if (parallel_residual) {
    // GPT-NeoX: x + (mlp(ln2(x)) + attn), the branches summed first as
    // transformers' mlp_output + attn_output + hidden_states does.
    const Tensor m = feed_forward(post_attention_layernorm.forward(x), aux, dropless);
    return next_norm.forward_residual(x, ops::add(m, attn));
  }
  const ops::ResidualNorm h = post_attention_layernorm.forward_residual(x, attn);
  return next_norm.forward_residual(h.sum, feed_forward(h.normed, aux, dropless));
}

ops::ResidualNorm DecoderBlock::forward_cached(const Tensor& x, const Tensor& x_normed,
                                               const Norm& next_norm, const Tensor& rope_inv_freq,
                                               KvCache& cache, int64_t layer,
                                               const Tensor& state_last) const {
  const size_t l = static_cast<size_t>(layer);
  if (mixer) {
    return next_norm.forward_residual(
        x, mixer->forward_cached(x_normed, cache.conv_state[l], cache.ssm_state[l], state_last));
  }
  if (time_mix || time_mix6) {
    const RwkvCachedStep att{&cache.rwkv_att_shift[l], &cache.rwkv_wkv[l], state_last};
    const RwkvCachedStep ffn{&cache.rwkv_ffn_shift[l], nullptr, state_last};
    return rwkv_forward(x, x_normed, next_norm, &att, &ffn);
  }
  const Tensor attn =
      mla_attn ? mla_attn->forward_cached(x_normed, rope_inv_freq, cache.k[l], cache.v[l],
                                          cache.positions, cache.empty())
      : nsa_attn ? nsa_attn->forward_cached(x_normed, rope_inv_freq, cache.k[l], cache.v[l],
                                            cache.positions, cache.host_positions)
               : self_attn->forward_cached(x_normed, rope_inv_freq, cache.k[l], cache.v[l],
                                           cache.positions, cache.empty());
  return finish(x, attn, next_norm, nullptr, /*dropless=*/true);  // generation: no capacity
}

std::optional<DecodeLayerWeights> DecoderBlock::decode_weights() const {
  if (!self_attn || moe || parallel_residual || input_layernorm.kind != ModelCard::Norm::rmsnorm ||
      post_attention_layernorm.kind != ModelCard::Norm::rmsnorm ||
      input_layernorm.eps != post_attention_layernorm.eps || mlp.kind != ModelCard::Mlp::swiglu) {
    return std::nullopt;
  }
  DecodeLayerWeights w;
  w.input_norm = input_layernorm.weight;
  w.post_norm = post_attention_layernorm.weight;
  w.eps = input_layernorm.eps;
  w.n_head = self_attn->n_head;
  w.n_kv_head = self_attn->n_kv_head;
  w.head_dim = self_attn->head_dim;
  const LinearLayer* o = self_attn->o_proj.get();
  const LinearLayer* down = mlp.down_proj.get();
  if (o->bias_tensor().defined() || down->bias_tensor().defined()) return std::nullopt;
  if (o->quantized_weight()) {  // all four projections quantized, one format
    const std::optional<StackedQuantized> qkv = stacked_quantized(
        {self_attn->q_proj.get(), self_attn->k_proj.get(), self_attn->v_proj.get()});
    const std::optional<StackedQuantized> gate_up =
        stacked_quantized({mlp.gate_proj.get(), mlp.up_proj.get()});
    const std::optional<StackedQuantized> od = stacked_quantized({o}), dd = stacked_quantized({down});
    if (!qkv || !gate_up || !od || !dd || gate_up->bias.defined()) return std::nullopt;
    for (const QuantizedWeight* q : {&gate_up->weight, &od->weight, &dd->weight}) {
      if (q->bits != qkv->weight.bits || q->group_size != qkv->weight.group_size ||
          q->symmetric != qkv->weight.symmetric) {
        return std::nullopt;
      }
    }
    w.q_qkv = qkv->weight;
    w.qkv_bias = qkv->bias;
    w.q_o = od->weight;
    w.q_gate_up = gate_up->weight;
    w.q_down = dd->weight;
    return w;
  }
  const auto* od = dynamic_cast<const Linear*>(o);
  const auto* dd = dynamic_cast<const Linear*>(down);
  const std::optional<StackedWeights> qkv = stacked_weights(
      {self_attn->q_proj.get(), self_attn->k_proj.get(), self_attn->v_proj.get()});
  const std::optional<StackedWeights> gate_up =
      stacked_weights({mlp.gate_proj.get(), mlp.up_proj.get()});
  if (!od || !dd || !qkv || !gate_up || !gate_up->biases.empty()) return std::nullopt;
  w.qkv = ops::stacked_view(qkv->weights);
  if (!qkv->biases.empty()) w.qkv_bias = ops::stacked_view(qkv->biases);
  w.o = od->weight;
  w.gate_up = ops::stacked_view(gate_up->weights);
  w.down = dd->weight;
  return w;
}

void DecoderBlock::collect_parameters(const std::string& prefix, ParameterList& out) const {
  if (time_mix || time_mix6) {  // transformers' RwkvBlock names (RWKV-6: the same)
    if (pre_ln) pre_ln->collect_parameters(prefix + ".pre_ln", out);
    input_layernorm.collect_parameters(prefix + ".ln1", out);
    post_attention_layernorm.collect_parameters(prefix + ".ln2", out);
    if (time_mix6) {
      time_mix6->collect_parameters(prefix + ".attention", out);
      return channel_mix6->collect_parameters(prefix + ".feed_forward", out);
    }
    time_mix->collect_parameters(prefix + ".attention", out);
    return channel_mix->collect_parameters(prefix + ".feed_forward", out);
  }
  input_layernorm.collect_parameters(prefix + ".input_layernorm", out);
  if (mixer) return mixer->collect_parameters(prefix + ".mixer", out);
  if (mla_attn) mla_attn->collect_parameters(prefix + ".self_attn", out);
  if (nsa_attn) nsa_attn->collect_parameters(prefix + ".self_attn", out);
  if (self_attn) self_attn->collect_parameters(prefix + ".self_attn", out);
  post_attention_layernorm.collect_parameters(prefix + ".post_attention_layernorm", out);
  if (moe) {
    moe->collect_parameters(prefix + ".mlp", out);
  } else {
    mlp.collect_parameters(prefix + ".mlp", out);
  }
}

void DecoderBlock::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  if (time_mix) {
    time_mix->for_each_linear(prefix + ".attention", visit);
    return channel_mix->for_each_linear(prefix + ".feed_forward", visit);
  }
  if (time_mix6) {
    time_mix6->for_each_linear(prefix + ".attention", visit);
    return channel_mix6->for_each_linear(prefix + ".feed_forward", visit);
  }
  if (mixer) return mixer->for_each_linear(prefix + ".mixer", visit);
  if (mla_attn) mla_attn->for_each_linear(prefix + ".self_attn", visit);
  if (nsa_attn) nsa_attn->for_each_linear(prefix + ".self_attn", visit);
  if (self_attn) self_attn->for_each_linear(prefix + ".self_attn", visit);
  if (moe) {
    moe->for_each_linear(prefix + ".mlp", visit);
  } else {
    mlp.for_each_linear(prefix + ".mlp", visit);
  }
}

void DecoderBlock::for_each_grouped(const std::string& prefix, const GroupedVisitor& visit) {
  if (moe) moe->for_each_grouped(prefix + ".mlp", visit);
}

}  // namespace el
