// kv_cache.h — the key/value cache of generation and one step's positions.
//
// One pair of tensors per decoder layer, k/v[B, Smax, Hkv, D] in the cache
// dtype (the model's activation dtype by default), allocated once for the
// longest sequence a batch will reach, so decoding never reallocates and a
// decode step keeps fixed shapes (a GPU can replay it as a graph). Row b of
// the batch is one sequence; `positions` (i32 [B] on the model's device)
// says how many of its tokens are cached, which is where the next step's
// tokens go. Rows may sit at different positions (prompts of different
// lengths share a batch).
//
//   auto cache = KvCache::create(model.card(), B, prompt + new_tokens, DType::bf16, dev);
//   logits = model.forward_cached(prompt_ids, *cache, last_index);   // prefill
//   logits = model.forward_cached(next_ids, *cache, Tensor());        // decode
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "nn/model_card.h"

namespace el {

// attention: mla (nn/mla.h) caches one row per token, [c_kv normed |
// rotated k_rope] of mla_cache_dim(card) columns: k[l] is [B, Smax, 1,
// mla_cache_dim] and v[l] is the same tensor (counted once in bytes()).
// block: mamba (nn/mamba.h) has no keys and values: k/v hold undefined
// tensors and each layer keeps two fixed-size f32 states per row instead,
// conv_state [B, d_conv - 1, I] (the conv's last inputs) and ssm_state
// [B, I, N]. bytes_per_sequence then does not grow with max_len (the
// states are the same at any length); max_len and positions still bound
// and count the tokens, and reset(0) zeroes the states.
// block: rwkv (nn/rwkv.h) likewise: k/v undefined, and per layer the
// token-shift rows rwkv_att_shift / rwkv_ffn_shift [B, C] (the ln1 / ln2
// output of each row's last token, in the cache dtype) and the WKV state
// rwkv_wkv f32 [B, 3, A] (num, den, max; the empty state is 0, 0, -1e38).
// block: rwkv6 (nn/rwkv6.h) the same with rwkv_wkv f32 [B, H, N, N] (zeros).
struct KvCache {
  std::vector<Tensor> k, v;  // per layer [B, Smax, Hkv, D]
  std::vector<Tensor> conv_state, ssm_state;  // per layer, block: mamba only
  std::vector<Tensor> rwkv_att_shift, rwkv_ffn_shift, rwkv_wkv;  // per layer, block: rwkv only
  Tensor positions;          // i32 [B] on the device: tokens cached per row
  std::vector<int32_t> host_positions;  // the same, as the host last set it
  int64_t batch = 0;
  int64_t max_len = 0;  // Smax
  // True while every row is empty: the next forward is a prefill from 0 and
  // may run ordinary causal attention over its own keys.
  bool empty() const;

  // Bytes of one sequence's cache of `max_len` tokens (all layers, k and v).
  static int64_t bytes_per_sequence(const ModelCard& card, int64_t max_len, DType dtype);
  // Allocates the cache (zeroed) with every row at position 0. When it cannot
  // fit, the Error says how many bytes it needs, how many are free on the
  // device, and the largest batch (at this length) and length (at this
  // batch) that would fit.
  // The same check without allocating (callers that would first build B
  // prompts): an Error when the device cannot hold the cache now.
  static Status check_fits(const ModelCard& card, int64_t batch, int64_t max_len, DType dtype,
                           Device device);
  static Result<KvCache> create(const ModelCard& card, int64_t batch, int64_t max_len, DType dtype,
                                Device device);

  // Sets every row's position (host and device), e.g. 0 to start over.
  void reset(int32_t position = 0);
  // Sets row b's position to positions[b] (B entries), e.g. each prompt's
  // length after a right-padded prefill.
  void set_positions(const std::vector<int32_t>& positions);
  // Advances every row by n after a forward of n new tokens per row.
  void advance(int32_t n);
  int64_t bytes() const;
};

}  // namespace el
