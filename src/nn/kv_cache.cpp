#include "nn/kv_cache.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/allocator.h"
#include "nn/mla.h"
#include "ops/backend.h"

namespace el {
namespace {

bool is_mla(const ModelCard& c) { return c.attention == ModelCard::Attention::mla; }
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
  for (const auto& t : k) n += static_cast<int64_t>(t.nbytes());
  for (size_t l = 0; l < v.size(); ++l) {
    if (l >= k.size() || !v[l].same(k[l])) n += static_cast<int64_t>(v[l].nbytes());  // MLA: v is k
  }
  return n;
}

}  // namespace el
