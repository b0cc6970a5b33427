#include "nn/nsa.h"

#include <algorithm>
#include <cmath>

#include "autograd/tape.h"

namespace el {

int64_t nsa_compressed_tokens(const ModelCard& c, int64_t T) {
  return T >= c.nsa_compress_block ? (T - c.nsa_compress_block) / c.nsa_compress_stride + 1 : 0;
}

NsaKeyCounts nsa_mean_keys(const ModelCard& c, int64_t T) {
  NsaKeyCounts k;
  if (T <= 0) return k;
  const int64_t l = c.nsa_compress_block, d = c.nsa_compress_stride, sb = c.nsa_select_block;
  const int64_t n = c.nsa_select_count, w = c.nsa_window, nc = nsa_compressed_tokens(c, T);
  for (int64_t t = 0; t < T; ++t) {
    k.compressed += static_cast<double>(t >= l - 1 ? std::min(nc, (t - l + 1) / d + 1) : 0);
    k.selected += static_cast<double>(t % sb + 1 + std::min(n - 1, t / sb) * sb);
    k.window += static_cast<double>(std::min(w, t + 1));
  }
  const double inv = 1.0 / static_cast<double>(T);
  k.compressed *= inv;
  k.selected *= inv;
  k.window *= inv;
  return k;
}

NsaAttention::NsaAttention(const ModelCard& card, Device device, DType dtype)
    : n_head(card.n_head),
      n_kv_head(card.n_kv_head),
      head_dim(card.effective_head_dim()),
      window(card.nsa_window),
      compress_block(card.nsa_compress_block),
      compress_stride(card.nsa_compress_stride),
      select_block(card.nsa_select_block),
      select_count(card.nsa_select_count),
      scale(1.0f / std::sqrt(static_cast<float>(card.effective_head_dim()))) {
  EL_ENSURE(card.attention == ModelCard::Attention::nsa && validate_model_card(card).ok(),
            "NsaAttention: card '{}' is not a valid NSA card (validate_model_card first)",
            card.name);
  const int64_t C = card.d_model, H = n_head, Hkv = n_kv_head, D = head_dim, l = compress_block;
  auto qkv = make_stacked_linears(C, {H * D, Hkv * D, Hkv * D}, card.qkv_bias, device, dtype);
  q_proj = std::move(qkv[0]);
  k_proj = std::move(qkv[1]);
  v_proj = std::move(qkv[2]);
  o_proj = std::make_unique<Linear>(H * D, C, card.o_bias, device, dtype);
  gate_proj = std::make_unique<Linear>(C, 3 * H, false, device, dtype);
  auto param = [&](const Shape& shape) {
    Tensor t = Tensor::zeros(shape, dtype, device);  // DecoderLM::create draws the init
    t.set_requires_grad(true);
    return t;
  };
  compress_k_weight = param({D, l * D});
  compress_v_weight = param({D, l * D});
  compress_k_pos = param({l, D});
  compress_v_pos = param({l, D});
  ones_ = Tensor::full({l * D}, 1.0f, dtype, device);
}

Tensor NsaAttention::compress(const Tensor& x, const Tensor& weight, const Tensor& pos) const {
  const Tensor blocks = ops::nsa_block_unfold(x, compress_block, compress_stride);  // [B,Nc,Hkv,lD]
  if (!blocks.defined()) return Tensor();
  Tensor ones = ones_;
  if (ones.dtype() != x.dtype()) {  // a cache of another dtype (forward_cached)
    ones = Tensor::empty(ones_.shape(), x.dtype(), x.device());
    ones.copy_from(ones_);
  }
  // + pe (the intra-block position embedding, broadcast over blocks and heads)
  Tensor pe = ops::reshape(pos, {compress_block * head_dim});
  const Tensor with_pos = ops::mul_lastdim(blocks, ones, pe);
  return ops::linear(with_pos, weight);  // [B, Nc, Hkv, D]
}

Tensor NsaAttention::attend(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& gates, int64_t q_offset) const {
  const Tensor kc = compress(k, compress_k_weight, compress_k_pos);
  const Tensor vc = compress(v, compress_v_weight, compress_v_pos);
  const ops::NsaCompressed cmp = ops::nsa_compressed_attention(
      q, kc, vc, scale, compress_block, compress_stride, q_offset);
  Tensor o_slc;
  if (kc.defined()) {
    Tensor blocks;
    {
      NoGrad no_grad;  // the choice is not differentiated (paper §3.3.2)
      blocks = ops::nsa_select_blocks(q, kc, cmp.lse, scale, compress_block, compress_stride,
                                      select_block, select_count, q_offset);
    }
    o_slc = ops::nsa_sparse_attention(q, k, v, blocks, select_block, 0, scale, q_offset);
  } else {
    // No compressed token yet (S < l): every position p < S < l <= l' is in
    // block 0, and the selection branch reads the query's own block only,
    // [0, p] = the window (p - l', p]. Exactly that, without a block table.
    o_slc = ops::nsa_sparse_attention(q, k, v, Tensor(), select_block, select_block, scale,
                                      q_offset);
  }
  const Tensor o_win =
      ops::nsa_sparse_attention(q, k, v, Tensor(), select_block, window, scale, q_offset);
  return ops::nsa_gate_combine(gates, cmp.out, o_slc, o_win);
}

Tensor NsaAttention::forward(const Tensor& x, const Tensor& rope_inv_freq) const {
  const int64_t B = x.dim(0), T = x.dim(1), H = n_head, Hkv = n_kv_head, D = head_dim;
  ops::QKV h;
  const Tensor packed = q_proj->forward_stacked(x, {k_proj.get(), v_proj.get()});
  if (packed.defined()) {
    h = ops::split_qkv_rope(packed, H, Hkv, rope_inv_freq);
  } else {  // a transform replaced a projection (LoRA, quantization)
    h.q = ops::reshape(q_proj->forward(x), {B, T, H, D});
    h.k = ops::reshape(k_proj->forward(x), {B, T, Hkv, D});
    h.v = ops::reshape(v_proj->forward(x), {B, T, Hkv, D});
    if (rope_inv_freq.defined()) {
      h.q = ops::rope(h.q, rope_inv_freq);
      h.k = ops::rope(h.k, rope_inv_freq);
    }
  }
  const Tensor o = attend(h.q, h.k, h.v, gate_proj->forward(x), 0);
  return o_proj->forward(ops::reshape(o, {B, T, H * D}));
}

Tensor NsaAttention::forward_cached(const Tensor& x, const Tensor& rope_inv_freq, Tensor& k_cache,
                                    Tensor& v_cache, const Tensor& positions,
                                    const std::vector<int32_t>& host_positions) const {
  const int64_t B = x.dim(0), T = x.dim(1), H = n_head, Hkv = n_kv_head, D = head_dim;
  EL_ENSURE(static_cast<int64_t>(host_positions.size()) == B && k_cache.ndim() == 4 &&
                k_cache.dim(0) == B && k_cache.dim(2) == Hkv && k_cache.dim(3) == D,
            "NsaAttention::forward_cached: cache {} and {} positions for x {} (expected a "
            "[B, Smax, {}, {}] cache)",
            shape_str(k_cache.shape()), host_positions.size(), shape_str(x.shape()), Hkv, D);
  ops::QKV h;
  h.q = ops::reshape(q_proj->forward(x), {B, T, H, D});
  h.k = ops::reshape(k_proj->forward(x), {B, T, Hkv, D});
  h.v = ops::reshape(v_proj->forward(x), {B, T, Hkv, D});
  if (rope_inv_freq.defined()) {
    h.q = ops::rope_at(h.q, rope_inv_freq, positions);
    h.k = ops::rope_at(h.k, rope_inv_freq, positions);
  }
  ops::kv_cache_write(h.k, h.v, positions, k_cache, v_cache);
  const Tensor gates = gate_proj->forward(x);  // [B, T, 3H]
  Tensor o = Tensor::empty({B, T, H, D}, x.dtype(), x.device());
  const int64_t smax = k_cache.dim(1);
  // Row by row: each row's prefix is its own sequence of length P + T.
  auto prefix = [&](const Tensor& cache, int64_t b, int64_t len) {
    Tensor rows = cache.slice0(b, b + 1).view({smax, Hkv, D}).slice0(0, len).view({1, len, Hkv, D});
    if (rows.dtype() == x.dtype()) return rows;
    Tensor conv = Tensor::empty(rows.shape(), x.dtype(), x.device());
    conv.copy_from(rows);
    return conv;
  };
  for (int64_t b = 0; b < B; ++b) {
    const int64_t p = host_positions[static_cast<size_t>(b)];
    EL_ENSURE(p >= 0 && p + T <= smax, "NsaAttention::forward_cached: {} tokens at position {} pass the cache's {}",
              T, p, smax);
    const Tensor qb = B == 1 ? h.q : h.q.slice0(b, b + 1);
    const Tensor gb = B == 1 ? gates : gates.slice0(b, b + 1);
    const Tensor ob = attend(qb, prefix(k_cache, b, p + T), prefix(v_cache, b, p + T), gb, p);
    if (B == 1) {
      o = ob;
    } else {
      Tensor dst = o.slice0(b, b + 1);
      dst.copy_from(ob);
    }
  }
  return o_proj->forward(ops::reshape(o, {B, T, H * D}));
}

void NsaAttention::collect_parameters(const std::string& prefix, ParameterList& out) const {
  q_proj->collect_parameters(prefix + ".q_proj", out);
  k_proj->collect_parameters(prefix + ".k_proj", out);
  v_proj->collect_parameters(prefix + ".v_proj", out);
  o_proj->collect_parameters(prefix + ".o_proj", out);
  gate_proj->collect_parameters(prefix + ".gate_proj", out);
  out.push_back({prefix + ".compress_k.weight", compress_k_weight});
  out.push_back({prefix + ".compress_k.pos", compress_k_pos});
  out.push_back({prefix + ".compress_v.weight", compress_v_weight});
  out.push_back({prefix + ".compress_v.pos", compress_v_pos});
}

void NsaAttention::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".q_proj", q_proj);
  visit(prefix + ".k_proj", k_proj);
  visit(prefix + ".v_proj", v_proj);
  visit(prefix + ".o_proj", o_proj);
  visit(prefix + ".gate_proj", gate_proj);
}

}  // namespace el
