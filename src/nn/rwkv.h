// rwkv.h — the two mixers of an RWKV-4 layer (block: rwkv), as transformers'
// RwkvForCausalLM computes them (Peng et al. 2023, "RWKV: Reinventing RNNs
// for the Transformer Era").
//
// A layer (nn/blocks.h DecoderBlock with block: rwkv) is
//   h = x + time_mix(ln1(x)),  out = h + channel_mix(ln2(h))
// (layer 0 first applies pre_ln to the embedding). Both mixers read their
// input and the same input one token back (the token shift), interpolated per
// channel by learned time_mix_* vectors (ops::rwkv_time_mix):
//   time mix:    r, k, v = receptance/key/value(mix_r/k/v(x, x_prev)),
//                out = output(sigmoid(r) * wkv(time_decay, time_first, k, v))
//   channel mix: k, r = key/receptance(mix_k/r(x, x_prev)),
//                out = sigmoid(receptance) * value(relu(k)^2)
// WKV (ops::rwkv_wkv) is a per-channel linear recurrence with decay
// exp(-exp(time_decay)) and a bonus time_first for the current token, so a
// layer carries O(C) state instead of a KV cache: generation keeps, per layer,
// the last token's ln1 and ln2 outputs and the WKV state (num, den, max).
//
// Shapes: C = d_model, A = attention_hidden_size (the card's
// rwkv_attention_hidden_size, default C), F = d_ff (the intermediate size;
// transformers' default 4 C). Parameter names are transformers' under the
// layer prefix ("<p>.attention.time_decay", "<p>.feed_forward.key.weight"),
// time_mix_* stored [1, 1, C] as transformers stores them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/model_card.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el {

// A cached (generation) call's view of one layer's recurrent state in the
// KvCache (nn/kv_cache.h) and of where each row's last real token is.
struct RwkvCachedStep {
  Tensor* shift = nullptr;  // [B, C] the mixer input of each row's last token so far
  Tensor* wkv = nullptr;    // f32 [B, 3, A] (time mix only)
  Tensor last;  // i32 [B] on the device: row b's last real token of this call; undefined: T - 1
};

// Shared with RWKV-6 (nn/rwkv6.h): x's last token per row into step.shift
// (the rows b T + last[b]; x itself when T == 1 and no last), and the cached
// shift rows in x's dtype.
void rwkv_keep_last_rows(const Tensor& x, const RwkvCachedStep& step);
Tensor rwkv_shift_as(const Tensor& shift, const Tensor& x);

// transformers' RwkvSelfAttention.
struct RwkvTimeMix {
  RwkvTimeMix(const ModelCard& card, int layer, Device device, DType dtype = DType::f32);
  // x[B, T, C] (ln1's output) -> [B, T, C]. Training: no step (zero state,
  // zero token before the first). Generation: the state is read, then
  // replaced by the state after each row's last token.
  Tensor forward(const Tensor& x, const RwkvCachedStep* step = nullptr) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  Tensor time_decay, time_first;                             // [A]
  Tensor time_mix_key, time_mix_value, time_mix_receptance;  // [1, 1, C]
  std::unique_ptr<LinearLayer> key, value, receptance;       // [A, C]
  std::unique_ptr<LinearLayer> output;                       // [C, A]
};

// transformers' RwkvFeedForward.
struct RwkvChannelMix {
  RwkvChannelMix(const ModelCard& card, int layer, Device device, DType dtype = DType::f32);
  // x[B, T, C] (ln2's output) -> [B, T, C]; step as for RwkvTimeMix (its wkv unused).
  Tensor forward(const Tensor& x, const RwkvCachedStep* step = nullptr) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  Tensor time_mix_key, time_mix_receptance;  // [1, 1, C]
  std::unique_ptr<LinearLayer> key;          // [F, C]
  std::unique_ptr<LinearLayer> receptance;   // [C, C]
  std::unique_ptr<LinearLayer> value;        // [C, F]
};

// A = rwkv_attention_hidden_size, or d_model when 0.
int rwkv_attention_size(const ModelCard& card);

// The init schedule RWKV-4 (transformers' _init_weights) and RWKV-6 (the
// authors' trainer) share; no random draws. Ratios of layer `layer`:
// layer / (L - 1) and 1 - layer / L.
double rwkv_ratio_0_to_1(const ModelCard& card, int layer);
double rwkv_ratio_1_to_almost0(const ModelCard& card, int layer);
// (i / c)^p + add for channels i < c: the ramp the token-mix inits use.
std::vector<float> rwkv_channel_ramp(int64_t c, double p, double add = 0.0);
// A trainable parameter of `shape` holding host values v.
Tensor rwkv_init_param(const std::vector<float>& v, const Shape& shape, Device device, DType dtype);

// transformers' rescale_every = k > 0 halves the residual stream after every
// k-th layer at inference and divides the output/value weights of layer i by
// 2^(i / k) to match. LayerNorm ignores a common scale except through its
// eps, so this equals the unscaled model with the eps of layer i's ln1/ln2
// multiplied by 4^(i / k) and ln_out's by 4^(L / k): the factor these return
// (1 for k = 0). ln_out's base eps is transformers' fixed 1e-5.
float rwkv_layer_eps_scale(const ModelCard& card, int layer);
float rwkv_final_eps_scale(const ModelCard& card);
inline constexpr float kRwkvFinalNormEps = 1e-5f;

// Parameters the layers initialise themselves (time_decay, time_first and
// the time_mix_* vectors: transformers' _init_weights schedule, no random
// draws; RWKV-6's time_* likewise) or whose constructors' values stay (the
// ln weights 1 and biases 0, RWKV-6's ln_x):
// DecoderLM's normal init skips them.
bool rwkv_keeps_init(const std::string& name);
// The projections that write into the residual stream (attention.output,
// feed_forward.value): initialised with the residual std like o_proj.
bool rwkv_residual_projection(const std::string& name);

}  // namespace el
