#include "models/decoder_lm.h"

#include <cmath>

#include "autograd/tape.h"
#include "nn/mla.h"
#include "nn/nsa.h"
#include "nn/pos_encoding.h"
#include "nn/rwkv.h"
#include "nn/rwkv6.h"
#include "nn/rope_scaling.h"
#include "ops/ops.h"

namespace el {

DecoderLM::DecoderLM(const ModelCard& card, Device device, DType param_dtype)
    : card_(card), device_(device), param_dtype_(param_dtype) {}

Result<std::unique_ptr<DecoderLM>> DecoderLM::create(const ModelCard& card, Device device,
                                                     uint64_t seed, DType param_dtype,
                                                     bool init_weights) {
  EL_TRY(validate_model_card(card));
  EL_TRY(check_mla_for_device(card, device));  // MLA head dims the device's kernels take
  if (!dtype_is_float(param_dtype)) {
    return make_error(fmt::format("parameter dtype {} is not a float dtype", dtype_name(param_dtype)),
                      "model card '" + card.name + "'", "use f32, bf16 or f16");
  }
  std::unique_ptr<DecoderLM> m(new DecoderLM(card, device, param_dtype));
  const int64_t C = card.d_model, V = card.vocab_size;
  auto emb = Tensor::try_empty({V, C}, param_dtype, device);
  if (!emb.ok()) return emb.error();
  m->embed_tokens_ = emb.value();
  m->embed_tokens_.set_requires_grad(true);
  if (card.pos_encoding == ModelCard::PosEncoding::learned) {
    auto pos = Tensor::try_empty({card.max_seq_len, C}, param_dtype, device);
    if (!pos.ok()) return pos.error();
    m->embed_positions_ = pos.value();  // initialised below with the other weights
    m->embed_positions_.set_requires_grad(true);
  } else if (card.pos_encoding == ModelCard::PosEncoding::sinusoidal) {
    m->embed_positions_ = sinusoidal_table(card.max_seq_len, C, param_dtype, device,
                                           sinusoidal_amplitude(card.init_std));
  }
  for (int i = 0; i < card.n_layer; ++i) {
    m->layers_.push_back(std::make_unique<DecoderBlock>(card, device, param_dtype, i));
  }
  // block: rwkv: ln_out has transformers' fixed eps, times the rescale factor (nn/rwkv.h).
  const float final_eps = card.block == ModelCard::Block::rwkv
                              ? kRwkvFinalNormEps * rwkv_final_eps_scale(card)
                              : card.norm_eps;
  m->norm_ = std::make_unique<Norm>(C, card.norm, final_eps, device, param_dtype);
  if (!card.tied_embeddings) m->lm_head_ = std::make_unique<Linear>(C, V, false, device, param_dtype);
  // (MLA keeps its own tables over qk_rope_head_dim dims: nn/mla.h)
  if (card.pos_encoding == ModelCard::PosEncoding::rope &&
      card.attention != ModelCard::Attention::mla) {
    m->rope_inv_freq_ = rope_inv_freq_for(card, device);  // with the card's rope_scaling
  }
  m->refresh_parameters();
  if (!init_weights) return m;  // the caller overwrites every parameter (a checkpoint)

  // Initialisation: N(0, init_std) for embeddings and projections; the
  // projections that write into the residual stream (o_proj, down_proj) are
  // scaled by 1/sqrt(2L) as in GPT-2 / Megatron, so the residual variance
  // does not grow with depth. Norm weights 1, biases 0 (set by constructors).
  // init_normal draws in f32 and rounds to the parameter dtype.
  Rng rng(seed);
  const float residual_std = card.init_std / std::sqrt(2.0f * static_cast<float>(card.n_layer));
  for (auto& p : m->params_) {
    const std::string& n = p.name;
    const bool is_bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    if (is_bias || n.find("norm") != std::string::npos || rwkv_keeps_init(n)) continue;
    const bool residual = n.find("o_proj") != std::string::npos ||
                          n.find("down_proj") != std::string::npos || rwkv_residual_projection(n);
    init_normal(p.tensor, rng, residual ? residual_std : card.init_std);
  }
  for (auto& layer : m->layers_) {  // block: mamba: A_log, D, dt and conv as Mamba does (nn/mamba.h)
    if (layer->mixer) layer->mixer->init_weights(rng, card.init_std, card.n_layer);
  }
  return m;
}

void DecoderLM::refresh_parameters() {
  params_.clear();
  params_.push_back({"model.embed_tokens.weight", embed_tokens_});
  if (card_.pos_encoding == ModelCard::PosEncoding::learned) {
    params_.push_back({"model.embed_positions.weight", embed_positions_});
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->collect_parameters("model.layers." + std::to_string(i), params_);
  }
  norm_->collect_parameters("model.norm", params_);
  if (lm_head_) lm_head_->collect_parameters("lm_head", params_);
  for (auto& p : params_) p.tensor.set_name(p.name);
}

void DecoderLM::for_each_linear(const LinearVisitor& visit) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->for_each_linear("model.layers." + std::to_string(i), visit);
  }
  if (lm_head_) visit("lm_head", lm_head_);
}

void DecoderLM::for_each_grouped(const GroupedVisitor& visit) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->for_each_grouped("model.layers." + std::to_string(i), visit);
  }
}

Tensor DecoderLM::forward(const Tensor& ids) const { return forward_logits(ids, nullptr); }

Tensor DecoderLM::forward_logits(const Tensor& ids, AuxLosses* aux) const {
  EL_ENSURE(ids.ndim() == 2 && ids.dtype() == DType::i32, "DecoderLM::forward wants i32 ids [B, T], got {} {}",
            dtype_name(ids.dtype()), shape_str(ids.shape()));
  EL_ENSURE(ids.dim(1) <= card_.max_seq_len, "sequence length {} exceeds the card's max_seq_len {}",
            ids.dim(1), card_.max_seq_len);
  EL_ENSURE(card_.sliding_window <= 0 || ids.dim(1) <= card_.sliding_window,
            "sequence length {} exceeds the card's sliding_window {} (no windowed attention)",
            ids.dim(1), card_.sliding_window);
  Tensor x = ops::embedding(ids, embed_tokens_);  // [B, T, C], the residual stream
  if (!layers_.empty() && layers_.front()->pre_ln) x = layers_.front()->pre_ln->forward(x);  // rwkv
  if (embed_positions_.defined()) {  // sinusoidal / learned: positions 0..T-1 of every row
    const std::vector<int32_t> start(static_cast<size_t>(ids.dim(0)), 0);
    x = add_position_embedding(x, embed_positions_, position_ids(start, ids.dim(1), device_));
  }
  if (layers_.empty()) {
    x = norm_->forward(x);
  } else {
    // Each block returns the stream and the next norm of it (fused with the add).
    Tensor normed = layers_.front()->input_layernorm.forward(x);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Norm& next = i + 1 < layers_.size() ? layers_[i + 1]->input_layernorm : *norm_;
      ops::ResidualNorm out = layers_[i]->forward(x, normed, next, rope_inv_freq_, aux);
      x = out.sum;
      normed = out.normed;
    }
    x = normed;
  }
  return lm_head_ ? lm_head_->forward(x) : ops::linear(x, embed_tokens_);  // [B, T, V]
}

bool DecoderLM::decode_layers_fused(const Tensor& x, const KvCache& cache) const {
  // ALiBi adds a per-head bias inside attention, which the fused kernel lacks.
  if (layers_.empty() || card_.pos_encoding == ModelCard::PosEncoding::alibi) return false;
  // A partial rotary (GPT-NeoX) is not in the fused kernel's RoPE either.
  if (card_.effective_rotary_dims() != card_.effective_head_dim()) return false;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::optional<DecodeLayerWeights> w = layers_[i]->decode_weights();
    if (!w || !ops::decode_layer_is_fused(x, *w, rope_inv_freq_, cache.k[i], cache.v[i])) {
      return false;
    }
  }
  return true;
}

Tensor DecoderLM::forward_cached(const Tensor& ids, KvCache& cache,
                                 const std::vector<int32_t>& last_index) const {
  EL_ENSURE(ids.ndim() == 2 && ids.dtype() == DType::i32, "DecoderLM::forward_cached wants i32 ids [B, T], got {} {}",
            dtype_name(ids.dtype()), shape_str(ids.shape()));
  const int64_t B = ids.dim(0), T = ids.dim(1);
  EL_ENSURE(cache.batch == B && static_cast<int64_t>(cache.k.size()) == card_.n_layer,
            "DecoderLM::forward_cached: cache of batch {} and {} layers for ids {} and {} layers",
            cache.batch, cache.k.size(), shape_str(ids.shape()), card_.n_layer);
  for (int32_t p : cache.host_positions) {
    EL_ENSURE(p + T <= cache.max_len, "DecoderLM::forward_cached: {} tokens at position {} pass the cache's {}",
              T, p, cache.max_len);
  }
  Tensor x = ops::embedding(ids, embed_tokens_);  // [B, T, C]
  if (!layers_.empty() && layers_.front()->pre_ln) x = layers_.front()->pre_ln->forward(x);  // rwkv
  if (embed_positions_.defined()) {
    // Row b's tokens sit at cache positions positions[b] + t. A decode step
    // (T = 1) reads them from the device tensor itself, so a captured step
    // stays valid as the rows advance (infer/decode_graph.h).
    for (int32_t p : cache.host_positions) {
      EL_ENSURE(p + T <= card_.max_seq_len,
                "DecoderLM::forward_cached: {} tokens at position {} pass max_seq_len {} (the {} "
                "position table)",
                T, p, card_.max_seq_len, pos_encoding_name(card_.pos_encoding));
    }
    const Tensor pos_ids = T == 1 ? cache.positions.view({B, 1})
                                  : position_ids(cache.host_positions, T, ids.device());
    x = add_position_embedding(x, embed_positions_, pos_ids);
  }
  // block: mamba: the recurrent states stop at each row's last real token.
  Tensor state_last;
  if (card_.block != ModelCard::Block::transformer && !last_index.empty()) {
    state_last = Tensor::from_ints(last_index, {B}).to(ids.device());
  }
  Tensor normed;
  if (T == 1 && !cache.empty() && decode_layers_fused(x, cache)) {
    // A decode step on a backend with a one-kernel decoder layer
    // (ops::decode_layers): the same arithmetic, one launch for the stack.
    std::vector<DecodeLayerWeights> w;
    w.reserve(layers_.size());
    for (const auto& layer : layers_) w.push_back(*layer->decode_weights());
    x = ops::decode_layers(x, w, rope_inv_freq_, cache.positions, cache.k, cache.v);
    normed = norm_->forward(x);
  } else if (layers_.empty()) {
    normed = norm_->forward(x);
  } else {
    normed = layers_.front()->input_layernorm.forward(x);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Norm& next = i + 1 < layers_.size() ? layers_[i + 1]->input_layernorm : *norm_;
      ops::ResidualNorm out = layers_[i]->forward_cached(x, normed, next, rope_inv_freq_, cache,
                                                         static_cast<int64_t>(i), state_last);
      x = out.sum;
      normed = out.normed;
    }
  }
  if (!last_index.empty()) {
    // Gather row b's position last_index[b]: a row lookup into [B * T, C].
    EL_ENSURE(static_cast<int64_t>(last_index.size()) == B, "DecoderLM::forward_cached: {} last_index entries for batch {}",
              last_index.size(), B);
    std::vector<int32_t> host(last_index);
    for (int64_t b = 0; b < B; ++b) {
      EL_ENSURE(host[b] >= 0 && host[b] < T, "DecoderLM::forward_cached: last_index {} outside [0, {})", host[b], T);
      host[b] += static_cast<int32_t>(b * T);
    }
    Tensor flat = Tensor::from_ints(host, {B, 1}).to(ids.device());
    normed = ops::embedding(flat, normed.view({B * T, normed.dim(-1)}));  // [B, 1, C]
  }
  return lm_head_ ? lm_head_->forward(normed) : ops::linear(normed, embed_tokens_);
}

Tensor DecoderLM::loss(const Tensor& ids, const Tensor& targets, AuxLosses* aux_out) const {
  // The router losses are collected only while gradients are recorded.
  AuxLosses aux;
  Tensor logits = forward_logits(ids, grad_enabled() ? &aux : nullptr);
  const int64_t n = ids.numel();
  Tensor total = ops::cross_entropy(ops::reshape(logits, {n, card_.vocab_size}), targets.view({n}));
  for (const AuxLoss& a : aux) total = ops::add_scaled(total, a.value, a.weight);
  if (aux_out) *aux_out = std::move(aux);
  return total;
}

int64_t DecoderLM::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.tensor.numel();
  return n;
}

int64_t DecoderLM::num_embedding_parameters() const {
  int64_t n = embed_tokens_.numel();
  if (lm_head_) n += lm_head_->in_features() * lm_head_->out_features();
  if (card_.pos_encoding == ModelCard::PosEncoding::learned) n += embed_positions_.numel();
  return n;
}

FlopsPerToken DecoderLM::flops_per_token(int64_t T) const { return el::flops_per_token(card_, T); }

static double head_dim_of(const ModelCard& c) {
  return c.head_dim > 0 ? c.head_dim : static_cast<double>(c.d_model) / c.n_head;
}

// attention: mla (nn/mla.h): the projection weights' elements (= MACs per
// token) and the parameter count with the latent norms and biases.
struct MlaShape {
  int64_t weights = 0, params = 0;
};
static MlaShape mla_shape(const ModelCard& c) {
  const int64_t C = c.d_model, H = c.n_head, Q = c.q_lora_rank, L = c.kv_lora_rank;
  const int64_t qk = int64_t{c.qk_nope_head_dim} + c.qk_rope_head_dim;
  const int64_t nv = int64_t{c.qk_nope_head_dim} + c.v_head_dim;
  MlaShape s;
  s.weights = (Q > 0 ? C * Q + Q * H * qk : C * H * qk) + C * (L + c.qk_rope_head_dim) +
              L * H * nv + H * c.v_head_dim * C;
  s.params = s.weights + (Q > 0 ? Q : 0) + L;  // q_a_layernorm, kv_a_layernorm
  if (c.qkv_bias) s.params += (Q > 0 ? Q : 0) + L + c.qk_rope_head_dim;  // q_a, kv_a biases
  if (c.o_bias) s.params += C;
  return s;
}

ParameterCounts count_parameters(const ModelCard& c) {
  if (c.block == ModelCard::Block::rwkv6) {  // nn/rwkv6.h: embeddings, pre_ln, L layers, ln_out
    ParameterCounts p;
    p.embedding = int64_t{c.vocab_size} * c.d_model * (c.tied_embeddings ? 1 : 2);
    p.total = p.embedding + 2 * c.d_model + c.n_layer * rwkv6_layer_parameters(c) + 2 * c.d_model;
    p.active = p.total;
    return p;
  }
  if (c.block == ModelCard::Block::rwkv) {  // nn/rwkv.h: embeddings, pre_ln, L layers, ln_out
    ParameterCounts p;
    const int64_t C = c.d_model, A = rwkv_attention_size(c), F = c.d_ff;
    p.embedding = int64_t{c.vocab_size} * C * (c.tied_embeddings ? 1 : 2);
    const int64_t layer = 2 * 2 * C                      // ln1, ln2
                          + 2 * A + 3 * C + 4 * A * C    // time mix
                          + 2 * C + 2 * F * C + C * C;   // channel mix
    p.total = p.embedding + 2 * C + c.n_layer * layer + 2 * C;
    p.active = p.total;
    return p;
  }
  if (c.block == ModelCard::Block::mamba) {  // nn/mamba.h: embeddings, L Mamba layers, norm_f
    ParameterCounts p;
    p.embedding = int64_t{c.vocab_size} * c.d_model * (c.tied_embeddings ? 1 : 2);
    const int64_t norm = c.norm == ModelCard::Norm::layernorm ? 2 * c.d_model : c.d_model;
    p.total = p.embedding + c.n_layer * mamba_layer_parameters(c) + norm;
    p.active = p.total;
    return p;
  }
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff;
  const int64_t D = static_cast<int64_t>(head_dim_of(c));
  const int64_t H = c.n_head, Hkv = c.n_kv_head;
  const int64_t norm = c.norm == ModelCard::Norm::layernorm ? 2 * C : C;
  int64_t attn = C * H * D + 2 * C * Hkv * D + H * D * C;
  if (c.qkv_bias) attn += H * D + 2 * Hkv * D;
  if (c.o_bias) attn += C;
  if (c.attention == ModelCard::Attention::mla) attn = mla_shape(c).params;
  if (c.attention == ModelCard::Attention::nsa) {
    // gate_proj [3H, C] and the two compressions (weight [D, l D], pos [l, D]).
    const int64_t l = c.nsa_compress_block;
    attn += 3 * H * C + 2 * (D * l * D + l * D);
  }
  int64_t mlp = C * F * (c.mlp == ModelCard::Mlp::swiglu ? 3 : 2);
  if (c.mlp_bias) mlp += F * (c.mlp == ModelCard::Mlp::swiglu ? 2 : 1) + C;
  int64_t mlp_active = mlp;
  if (c.moe_experts > 0) {  // nn/moe.h: router, E SwiGLU experts, the gated shared expert
    const int64_t E = c.moe_experts, expert = 3 * C * c.moe_expert_d_ff();
    const int64_t shared = c.moe_shared_experts > 0 ? 3 * C * c.moe_shared_width() + C : 0;
    mlp = E * C + E * expert + shared;
    mlp_active = E * C + c.moe_top_k * expert + shared;
  }
  ParameterCounts p;
  p.embedding = V * C * (c.tied_embeddings ? 1 : 2);
  if (c.pos_encoding == ModelCard::PosEncoding::learned) p.embedding += int64_t{c.max_seq_len} * C;
  p.total = p.embedding + c.n_layer * (2 * norm + attn + mlp) + norm;
  p.active = p.total - c.n_layer * (mlp - mlp_active);
  return p;
}

FlopsPerToken flops_per_token(const ModelCard& card, int64_t T) {
  FlopsPerToken f;
  if (card.block == ModelCard::Block::rwkv6) {
    // As RWKV-4 below: the projections (LoRAs included) and the head; the
    // WKV-6 recurrence is attention_forward, per channel and token 3 N
    // multiply-adds (bonus, readout, state update), independent of T.
    const double L = card.n_layer, C = card.d_model, N = card.rwkv6_head_size;
    f.matmul_forward = L * 2.0 * static_cast<double>(rwkv6_layer_matmul_macs(card)) +
                       2.0 * C * card.vocab_size;
    f.matmul_forward_total = f.matmul_forward;
    f.attention_forward = L * 2.0 * 3.0 * N * C;
    f.formula_train = 6.0 * static_cast<double>(count_parameters(card).total);
    return f;
  }
  if (card.block == ModelCard::Block::rwkv) {
    // Projections (key/value/receptance/output, key/receptance/value) and
    // the head; the sequence mixing (attention_forward) is the WKV
    // recurrence, 6 multiply-adds per channel and token (its exps and the
    // elementwise time mixes not counted, as norms are not), independent of T.
    const double L = card.n_layer, C = card.d_model, A = rwkv_attention_size(card);
    const double F = card.d_ff;
    f.matmul_forward = L * 2.0 * (4.0 * A * C + 2.0 * F * C + C * C) + 2.0 * C * card.vocab_size;
    f.matmul_forward_total = f.matmul_forward;
    f.attention_forward = L * 2.0 * 6.0 * A;
    f.formula_train = 6.0 * static_cast<double>(count_parameters(card).total);  // no attention term
    return f;
  }
  if (card.block == ModelCard::Block::mamba) {
    // Projections as for a transformer; the sequence mixing (counted in
    // attention_forward) is the conv (K multiply-adds per channel) and the
    // scan (per channel and state: exp(dt A) h + dt B u and C . h, 3
    // multiply-adds; the exp not counted), independent of T.
    const double L = card.n_layer, I = card.mamba_d_inner();
    f.matmul_forward = L * 2.0 * static_cast<double>(mamba_layer_matmul_macs(card)) +
                       2.0 * static_cast<double>(card.d_model) * card.vocab_size;
    f.matmul_forward_total = f.matmul_forward;
    f.attention_forward = L * 2.0 * I * (card.mamba_d_conv + 3.0 * card.mamba_d_state);
    f.formula_train = 6.0 * static_cast<double>(count_parameters(card).total);  // no attention term
    return f;
  }
  const double C = card.d_model, V = card.vocab_size, L = card.n_layer;
  const double D = head_dim_of(card);
  const double H = card.n_head, Hkv = card.n_kv_head, F = card.d_ff;
  const bool mla = card.attention == ModelCard::Attention::mla;
  const double qkvo = mla ? 2.0 * static_cast<double>(mla_shape(card).weights)
                          : 2.0 * (C * H * D + 2.0 * C * Hkv * D + H * D * C);
  double mlp = 2.0 * C * F * (card.mlp == ModelCard::Mlp::swiglu ? 3.0 : 2.0);
  double mlp_total = mlp;
  if (card.moe_experts > 0) {  // the router, k (or all E) experts, the gated shared expert
    const double E = card.moe_experts, expert = 2.0 * 3.0 * C * card.moe_expert_d_ff();
    const double shared =
        card.moe_shared_experts > 0 ? 2.0 * (3.0 * C * card.moe_shared_width() + C) : 0.0;
    mlp = 2.0 * C * E + card.moe_top_k * expert + shared;
    mlp_total = 2.0 * C * E + E * expert + shared;
  }
  f.matmul_forward = L * (qkvo + mlp) + 2.0 * C * V;
  const double mean_keys = (static_cast<double>(T) + 1.0) / 2.0;
  // QK^T and PV: 2 H (Dqk + Dv) per key; MLA's q/k heads have nope + rope
  // dims and its v heads v_head_dim (the padding to one D is not counted).
  const double dqk_dv = mla ? static_cast<double>(card.qk_nope_head_dim) + card.qk_rope_head_dim +
                                  card.v_head_dim
                            : 2.0 * D;
  f.attention_forward = L * 2.0 * H * dqk_dv * mean_keys;
  if (card.attention == ModelCard::Attention::nsa) {
    // The three branches' keys (nn/nsa.h nsa_mean_keys), the gate
    // projection, and the compression GEMMs of k and v ([D, l D] per
    // compressed token and kv head) spread over the T tokens.
    const NsaKeyCounts keys = nsa_mean_keys(card, T);
    f.attention_forward = L * 2.0 * H * dqk_dv * (keys.compressed + keys.selected + keys.window);
    const double l = card.nsa_compress_block, Tn = static_cast<double>(std::max<int64_t>(T, 1));
    const double nc = static_cast<double>(nsa_compressed_tokens(card, T));
    f.matmul_forward += L * (2.0 * 3.0 * H * C + 2.0 * 2.0 * Hkv * l * D * D * nc / Tn);
  }
  f.matmul_forward_total = f.matmul_forward + L * (mlp_total - mlp);
  f.formula_train = 6.0 * static_cast<double>(count_parameters(card).active) +
                    12.0 * L * C * static_cast<double>(T);
  return f;
}

}  // namespace el
