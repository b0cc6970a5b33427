// rwkv6.h — the two mixers of an RWKV-6 "Finch" layer (block: rwkv6), as the
// paper (Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States
// and Dynamic Recurrence") and the authors' reference trainer (x060) define
// them. transformers has no RWKV-6 class (RWKV-6 checkpoints on the Hub run
// as remote code), so there is no golden test: tests check the ops and the
// layers against the equations, and HF import / export is refused.
//
// The layer is RWKV-4's (nn/rwkv.h; DecoderBlock, block: rwkv6):
//   h = x + time_mix(ln1(x)),  out = h + channel_mix(ln2(h))
// (layer 0 first applies pre_ln to the embedding; every LayerNorm has the
// card's norm_eps). With xx = shift(x) - x (shift: the token before; the
// first token's is the cached last token in generation, else zero):
//   time mix:
//     xxx = x + xx * maa_x
//     m_s = maa_s + tanh(xxx @ W1)[part s] @ W2_s   for s in w, k, v, r, g
//           (five rank-D LoRAs, D = rwkv6_time_mix_extra_dim, sharing W1)
//     x_s = x + xx * m_s                            (ddlerp)
//     r, k, v = receptance/key/value(x_r/k/v), g = silu(gate(x_g))
//     w = time_decay + tanh(x_w @ Wd1) @ Wd2  (rank rwkv6_time_decay_extra_dim)
//     y = WKV6(r, k, v, w, u = time_faaaa)    (ops::rwkv6_wkv: per head of
//         N = rwkv6_head_size channels a matrix state, decay exp(-exp(w)))
//     out = output(GroupNorm_H(y) * g)
//   GroupNorm over each head's N channels with eps kRwkv6GroupNormEps
//   (the reference's 1e-5 * head_size_divisor^2, divisor 8) and a per-channel
//   affine ln_x.weight / ln_x.bias [C].
//   channel mix:
//     x_k = x + xx * maa_k, x_r = x + xx * maa_r
//     out = sigmoid(receptance(x_r)) * value(relu(key(x_k))^2)
// Generation keeps per layer both mixers' last input row ([B, C], as RWKV-4)
// and the WKV matrix state f32 [B, H, N, N] (RwkvCachedStep::wkv).
//
// Parameters (names under "<layer>.attention." / ".feed_forward.", the
// reference's names; Linear weights [out, in] as everywhere in the engine,
// so W1 / W2 are the reference's matrices transposed): time_maa_x/w/k/v/r/g
// [C]; time_maa_w1 [5 D, C] (parts in the order w, k, v, r, g);
// time_maa_w2_w/k/v/r/g [C, D]; time_decay [C]; time_decay_w1 [Dd, C];
// time_decay_w2 [C, Dd]; time_faaaa [C]; receptance, key, value, gate,
// output [C, C]; ln_x [C]. Channel mix: time_maa_k/r [C], key [F, C],
// receptance [C, C], value [C, F].
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/model_card.h"
#include "nn/module.h"
#include "nn/rwkv.h"
#include "ops/ops.h"

namespace el {

inline constexpr float kRwkv6GroupNormEps = 64e-5f;

struct Rwkv6TimeMix {
  Rwkv6TimeMix(const ModelCard& card, int layer, Device device, DType dtype = DType::f32);
  // x[B, T, C] (ln1's output) -> [B, T, C]; step as for RwkvTimeMix (wkv:
  // the f32 [B, H, N, N] state).
  Tensor forward(const Tensor& x, const RwkvCachedStep* step = nullptr) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  int64_t head_size = 64, mix_dim = 32;
  Tensor time_maa_x;
  std::vector<Tensor> time_maa;     // [C] each, order w, k, v, r, g
  Tensor time_maa_w1;               // [5 D, C]
  std::vector<Tensor> time_maa_w2;  // [C, D] each, order w, k, v, r, g
  Tensor time_decay, time_decay_w1, time_decay_w2, time_faaaa;
  std::unique_ptr<LinearLayer> receptance, key, value, gate, output;  // [C, C]
  Tensor ln_x_weight, ln_x_bias;                                       // [C]

 private:
  Tensor zero_mix_;            // [1, 1, C] zeros: rwkv_time_mix as a pure token shift
  Tensor gn_ones_, gn_zeros_;  // [N]: the GroupNorm's unit affine (ln_x applies the real one)
};

struct Rwkv6ChannelMix {
  Rwkv6ChannelMix(const ModelCard& card, int layer, Device device, DType dtype = DType::f32);
  Tensor forward(const Tensor& x, const RwkvCachedStep* step = nullptr) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  Tensor time_maa_k, time_maa_r;            // [C]
  std::unique_ptr<LinearLayer> key;         // [F, C]
  std::unique_ptr<LinearLayer> receptance;  // [C, C]
  std::unique_ptr<LinearLayer> value;       // [C, F]

 private:
  Tensor zero_mix_;
};

// One layer's parameter count (ln1, ln2 and both mixers) and the multiply-
// adds of its projections per token (the LoRAs included), for
// count_parameters / flops_per_token (models/decoder_lm.h).
int64_t rwkv6_layer_parameters(const ModelCard& card);
int64_t rwkv6_layer_matmul_macs(const ModelCard& card);

}  // namespace el
