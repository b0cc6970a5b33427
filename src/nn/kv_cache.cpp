#include "nn/kv_cache.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/allocator.h"
#include "nn/mla.h"
#include "nn/rwkv.h"
#include "ops/backend.h"

namespace el {
namespace {

bool is_mla(const ModelCard& c) { return c.attention == ModelCard::Attention::mla; }
bool is_mamba(const ModelCard& c) { return c.block == ModelCard::Block::mamba; }
// block: mamba: one row's f32 states of one layer, conv [K - 1, I] + ssm [I, N].
int64_t mamba_state_floats(const ModelCard& c) {
  return int64_t{c.mamba_d_conv - 1} * c.mamba_d_inner() +
         int64_t{c.mamba_d_inner()} * c.mamba_d_state;
}
bool is_rwkv(const ModelCard& c) {
  return c.block == ModelCard::Block::rwkv || c.block == ModelCard::Block::rwkv6;
}
// The WKV state of one row and layer: RWKV-4's [3, A] (nn/rwkv.h), RWKV-6's
// [H, N, N] (nn/rwkv6.h).
Shape rwkv_wkv_row_shape(const ModelCard& c) {
  if (c.block == ModelCard::Block::rwkv6) {
    const int64_t n = c.rwkv6_head_size;
    return {c.d_model / n, n, n};
  }
  return {3, rwkv_attention_size(c)};
}
// block: rwkv / rwkv6: one row's states of all layers, two shift rows [C]
// in the cache dtype and the f32 WKV state per layer.
int64_t rwkv_state_bytes(const ModelCard& c, DType dtype) {
  int64_t wkv = 1;
  for (int64_t d : rwkv_wkv_row_shape(c)) wkv *= d;
  return c.n_layer * (2 * int64_t{c.d_model} * static_cast<int64_t>(dtype_size(dtype)) + wkv * 4);
}
// The empty WKV state: num = den = 0, max = -1e38 (transformers' start);
// RWKV-6's [B, H, N, N] matrix state: zeros.
void rwkv_clear(Tensor& wkv) {
  if (wkv.ndim() == 4) return backend_for(wkv.device()).fill(wkv, 0.0f);
  const int64_t b = wkv.dim(0), a = wkv.dim(2);
  std::vector<float> host(static_cast<size_t>(b * 3 * a), 0.0f);
  for (int64_t r = 0; r < b; ++r) std::fill_n(host.begin() + (r * 3 + 2) * a, a, -1e38f);
  wkv.copy_from(Tensor::from_floats(host, wkv.shape()));
}
// Per layer and token: KV heads x dims, and how many such tensors (k and v,
// or MLA's one latent row [c_kv | k_rope] that serves as both).
int64_t kv_heads_of(const ModelCard& c) { return is_mla(c) ? 1 : c.n_kv_head; }
int64_t head_dim_of(const ModelCard& c) {
  if (is_mla(c)) return mla_cache_dim(c);
  return c.head_dim > 0 ? c.head_dim : c.d_model / c.n_head;
}
int64_t sides_of(const ModelCard& c) { return is_mla(c) ? 1 : 2; }

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / (1024.0 * 1024.0 * 1024.0)); }

std::string fits_message(const ModelCard& card, int64_t batch, int64_t max_len, DType dtype, Device device,
                         int64_t available) {
  if (is_rwkv(card)) {
    const int64_t per_seq = KvCache::bytes_per_sequence(card, max_len, dtype);
    return fmt::format(
        "the RWKV state cache for batch {} needs {} ({} per sequence at any length: {} layers x "
        "two [{}] {} shift rows + f32 WKV state {}); {} is free on {}: at most batch {} "
        "would fit",
        batch, gib(static_cast<double>(per_seq) * static_cast<double>(batch)),
        gib(static_cast<double>(per_seq)), card.n_layer, card.d_model, dtype_name(dtype),
        shape_str(rwkv_wkv_row_shape(card)), gib(static_cast<double>(available)), device.str(),
        available > 0 ? available / per_seq : 0);
  }
  if (is_mamba(card)) {
    const int64_t per_seq = KvCache::bytes_per_sequence(card, max_len, dtype);
    return fmt::format(
        "the Mamba state cache for batch {} needs {} ({} per sequence at any length: {} layers x "
        "f32 conv [{}, {}] + ssm [{}, {}]); {} is free on {}: at most batch {} would fit",
        batch, gib(static_cast<double>(per_seq) * static_cast<double>(batch)),
        gib(static_cast<double>(per_seq)), card.n_layer, card.mamba_d_conv - 1,
        card.mamba_d_inner(), card.mamba_d_inner(), card.mamba_d_state,
        gib(static_cast<double>(available)), device.str(), available > 0 ? available / per_seq : 0);
  }
  const int64_t per_seq = KvCache::bytes_per_sequence(card, max_len, dtype);
  const int64_t per_token = KvCache::bytes_per_sequence(card, 1, dtype);
  const int64_t max_batch = available > 0 ? available / per_seq : 0;
  const int64_t max_tokens = available > 0 ? available / (per_token * batch) : 0;
  return fmt::format(
      "the KV cache for batch {} x {} tokens needs {} ({} per sequence, {} per token of {} layers "
      "x {} KV heads x {} dims x {} in {}); {} is free on {}: at most batch {} at {} tokens, or {} "
      "tokens at batch {} would fit",
      batch, max_len, gib(static_cast<double>(per_seq) * static_cast<double>(batch)),
      gib(static_cast<double>(per_seq)), per_token, card.n_layer, kv_heads_of(card), head_dim_of(card),
      sides_of(card), dtype_name(dtype), gib(static_cast<double>(available)), device.str(), max_batch, max_len,
      max_tokens, batch);
}

}  // namespace

bool KvCache::empty() const {
  return std::all_of(host_positions.begin(), host_positions.end(), [](int32_t p) { return p == 0; });
}

int64_t KvCache::bytes_per_sequence(const ModelCard& card, int64_t max_len, DType dtype) {
  if (is_mamba(card)) return card.n_layer * mamba_state_floats(card) * 4;  // f32, any length
  if (is_rwkv(card)) return rwkv_state_bytes(card, dtype);                    // any length
  return sides_of(card) * card.n_layer * max_len * kv_heads_of(card) * head_dim_of(card) *
         static_cast<int64_t>(dtype_size(dtype));
}

Status KvCache::check_fits(const ModelCard& card, int64_t batch, int64_t max_len, DType dtype,
                           Device device) {
  if (batch <= 0 || max_len <= 0) {
    return make_error(fmt::format("KV cache of batch {} and length {}: both must be positive", batch,
                                  max_len),
                      "kv cache");
  }
  Result<Allocator*> alloc = allocator_for(device);
  if (!alloc.ok()) return alloc.error();
  const int64_t available = (*alloc)->available_bytes();
  if (available >= 0 && bytes_per_sequence(card, max_len, dtype) * batch > available) {
    return make_error(fits_message(card, batch, max_len, dtype, device, available), "kv cache",
                      "lower the batch size or the prompt + generation length");
  }
  return Status();
}

Result<KvCache> KvCache::create(const ModelCard& card, int64_t batch, int64_t max_len, DType dtype,
                                Device device) {
  EL_TRY(check_fits(card, batch, max_len, dtype, device));
  Allocator* alloc = allocator_for(device).value();
  KvCache c;
  c.batch = batch;
  c.max_len = max_len;
  if (is_rwkv(card)) {
    // Fixed-size states (nn/rwkv.h); check_fits above already counted them.
    for (int64_t l = 0; l < card.n_layer; ++l) {
      c.k.emplace_back();
      c.v.emplace_back();
      c.rwkv_att_shift.push_back(Tensor::zeros({batch, card.d_model}, dtype, device));
      c.rwkv_ffn_shift.push_back(Tensor::zeros({batch, card.d_model}, dtype, device));
      Shape wkv{batch};
      for (int64_t d : rwkv_wkv_row_shape(card)) wkv.push_back(d);
      c.rwkv_wkv.push_back(Tensor::empty(wkv, DType::f32, device));
      rwkv_clear(c.rwkv_wkv.back());
    }
    c.positions = Tensor::zeros({batch}, DType::i32, device);
    c.host_positions.assign(static_cast<size_t>(batch), 0);
    return c;
  }
  if (is_mamba(card)) {
    // Fixed-size states (nn/mamba.h); check_fits above already counted them.
    const int64_t I = card.mamba_d_inner();
    for (int64_t l = 0; l < card.n_layer; ++l) {
      c.k.emplace_back();
      c.v.emplace_back();
      c.conv_state.push_back(Tensor::zeros({batch, card.mamba_d_conv - 1, I}, DType::f32, device));
      c.ssm_state.push_back(Tensor::zeros({batch, I, card.mamba_d_state}, DType::f32, device));
    }
    c.positions = Tensor::zeros({batch}, DType::i32, device);
    c.host_positions.assign(static_cast<size_t>(batch), 0);
    return c;
  }
  const Shape shape{batch, max_len, kv_heads_of(card), head_dim_of(card)};
  for (int64_t l = 0; l < card.n_layer; ++l) {
    for (std::vector<Tensor>* side : {&c.k, &c.v}) {
      Result<Tensor> t = Tensor::try_empty(shape, dtype, device);
      if (!t.ok()) {
        Error e = t.error();
        e.what = fits_message(card, batch, max_len, dtype, device,
                              std::max<int64_t>(alloc->available_bytes(), 0)) +
                 "; " + e.what;
        return e;
      }
      backend_for(device).fill(*t, 0.0f);  // a row is only read once written; zeros keep NaN out
      side->push_back(std::move(*t));
      if (is_mla(card)) {  // one latent row per token serves as k and v (nn/mla.h)
        c.v.push_back(c.k.back());
        break;
      }
    }
  }
  c.positions = Tensor::zeros({batch}, DType::i32, device);
  c.host_positions.assign(static_cast<size_t>(batch), 0);
  return c;
}

void KvCache::reset(int32_t position) {
  EL_ENSURE(position == 0 || (conv_state.empty() && rwkv_wkv.empty()),
            "KvCache::reset({}): a recurrent (Mamba, RWKV) state cannot be rewound; reset to 0",
            position);
  for (std::vector<Tensor>* rows : {&rwkv_att_shift, &rwkv_ffn_shift}) {
    for (Tensor& t : *rows) backend_for(t.device()).fill(t, 0.0f);
  }
  for (Tensor& t : rwkv_wkv) rwkv_clear(t);
  for (Tensor& t : conv_state) backend_for(t.device()).fill(t, 0.0f);
  for (Tensor& t : ssm_state) backend_for(t.device()).fill(t, 0.0f);
  std::fill(host_positions.begin(), host_positions.end(), position);
  positions.copy_from(Tensor::from_ints(host_positions, {batch}));
}

void KvCache::set_positions(const std::vector<int32_t>& p) {
  EL_ENSURE(static_cast<int64_t>(p.size()) == batch, "KvCache::set_positions: {} entries for batch {}",
            p.size(), batch);
  host_positions = p;
  positions.copy_from(Tensor::from_ints(host_positions, {batch}));
}

void KvCache::advance(int32_t n) {
  for (int32_t& p : host_positions) p += n;
  backend_for(positions.device()).increment_i32(positions, n);
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (const auto* states : {&conv_state, &ssm_state, &rwkv_att_shift, &rwkv_ffn_shift, &rwkv_wkv}) {
    for (const auto& t : *states) n += static_cast<int64_t>(t.nbytes());
  }
  for (const auto& t : k) n += t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
  for (size_t l = 0; l < v.size(); ++l) {
    if (!v[l].defined()) continue;  // block: mamba
    if (l >= k.size() || !v[l].same(k[l])) n += static_cast<int64_t>(v[l].nbytes());  // MLA: v is k
  }
  return n;
}

}  // namespace el
