#include "nn/rwkv6.h"

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "ops/backend.h"

namespace el {
namespace {

Tensor constant(float value, int64_t n, const Shape& shape, Device device, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.copy_from(Tensor::from_floats(std::vector<float>(static_cast<size_t>(n), value), shape));
  return t;
}

// 1 - ((i / C)^p + add): the reference's time_maa ramps (RWKV-4's time_mix
// ramps mirrored: its mix weights the current token, RWKV-6's maa the shift).
std::vector<float> maa_ramp(int64_t c, double p, double add = 0.0) {
  std::vector<float> out = rwkv_channel_ramp(c, p, add);
  for (float& v : out) v = 1.0f - v;
  return out;
}

// Uniform(-scale, scale) values for the LoRAs' up-projections, as the
// reference draws them (its down-projections start at zero, ours too). The
// constructors get no model Rng, so each slot draws from its own fixed
// stream (layer, slot): deterministic, and independent across slots.
std::vector<float> small_uniform(int64_t n, int layer, int slot, double scale) {
  Rng rng(0x72776b76365f6c6fULL ^ (static_cast<uint64_t>(layer) << 8) ^ static_cast<uint64_t>(slot));
  std::vector<float> out(static_cast<size_t>(n));
  for (float& v : out) v = static_cast<float>(scale * (2.0 * rng.uniform() - 1.0));
  return out;
}

// The stream one token back: rwkv_time_mix with a zero mix is a pure token
// shift (x * 0 + shifted * 1), its backward routes each gradient to the
// token before. prev: the cached last row, or undefined (zeros).
Tensor token_shift(const Tensor& x, const Tensor& prev, const Tensor& zero_mix) {
  return ops::rwkv_time_mix(x, prev, {zero_mix})[0];
}

// x + xx * mu, mu [C] broadcast over the rows.
Tensor lerp_static(const Tensor& x, const Tensor& xx, const Tensor& mu) {
  return ops::add(x, ops::mul_lastdim(xx, mu));
}

}  // namespace

Rwkv6TimeMix::Rwkv6TimeMix(const ModelCard& card, int layer, Device device, DType dtype)
    : head_size(card.rwkv6_head_size), mix_dim(card.rwkv6_time_mix_extra_dim) {
  const int64_t C = card.d_model, D = mix_dim, Dd = card.rwkv6_time_decay_extra_dim;
  const double r01 = rwkv_ratio_0_to_1(card, layer), r10 = rwkv_ratio_1_to_almost0(card, layer);
  time_maa_x = rwkv_init_param(maa_ramp(C, r10), {C}, device, dtype);
  time_maa = {rwkv_init_param(maa_ramp(C, r10), {C}, device, dtype),              // w
              rwkv_init_param(maa_ramp(C, r10), {C}, device, dtype),              // k
              rwkv_init_param(maa_ramp(C, r10, 0.3 * r01), {C}, device, dtype),   // v
              rwkv_init_param(maa_ramp(C, 0.5 * r10), {C}, device, dtype),        // r
              rwkv_init_param(maa_ramp(C, 0.5 * r10), {C}, device, dtype)};       // g
  time_maa_w1 = rwkv_init_param(std::vector<float>(static_cast<size_t>(5 * D * C), 0.0f), {5 * D, C},
                           device, dtype);
  for (int s = 0; s < 5; ++s) {
    time_maa_w2.push_back(
        rwkv_init_param(small_uniform(C * D, layer, s, 0.01), {C, D}, device, dtype));
  }
  // Decay speeds from -6 (slow channels) to -1; the bonus a per-layer ramp
  // with a +-0.1 zigzag (the reference's x060 init).
  std::vector<float> decay(static_cast<size_t>(C)), bonus(static_cast<size_t>(C));
  for (int64_t n = 0; n < C; ++n) {
    const double f = C > 1 ? static_cast<double>(n) / (C - 1) : 0.0;
    decay[static_cast<size_t>(n)] = static_cast<float>(-6.0 + 5.0 * std::pow(f, 0.7 + 1.3 * r01));
    bonus[static_cast<size_t>(n)] =
        static_cast<float>(r01 * (1.0 - f) + static_cast<double>((n + 1) % 3 - 1) * 0.1);
  }
  time_decay = rwkv_init_param(decay, {C}, device, dtype);
  time_decay_w1 = rwkv_init_param(std::vector<float>(static_cast<size_t>(Dd * C), 0.0f), {Dd, C},
                             device, dtype);
  time_decay_w2 = rwkv_init_param(small_uniform(C * Dd, layer, 5, 0.01), {C, Dd}, device, dtype);
  time_faaaa = rwkv_init_param(bonus, {C}, device, dtype);
  receptance = std::make_unique<Linear>(C, C, false, device, dtype);
  key = std::make_unique<Linear>(C, C, false, device, dtype);
  value = std::make_unique<Linear>(C, C, false, device, dtype);
  gate = std::make_unique<Linear>(C, C, false, device, dtype);
  output = std::make_unique<Linear>(C, C, false, device, dtype);
  ln_x_weight = rwkv_init_param(std::vector<float>(static_cast<size_t>(C), 1.0f), {C}, device, dtype);
  ln_x_bias = rwkv_init_param(std::vector<float>(static_cast<size_t>(C), 0.0f), {C}, device, dtype);
  zero_mix_ = constant(0.0f, C, {1, 1, C}, device, dtype);
  gn_ones_ = constant(1.0f, head_size, {head_size}, device, dtype);
  gn_zeros_ = constant(0.0f, head_size, {head_size}, device, dtype);
}

Tensor Rwkv6TimeMix::forward(const Tensor& x, const RwkvCachedStep* step) const {
  const int64_t B = x.dim(0), T = x.dim(1), C = x.dim(2), H = C / head_size;
  const Tensor prev = step ? rwkv_shift_as(*step->shift, x) : Tensor();
  const Tensor shifted = token_shift(x, prev, zero_mix_);
  if (step) rwkv_keep_last_rows(x, *step);  // after the shift has read the old rows
  const Tensor xx = ops::add_scaled(shifted, x, -1.0f);  // shift(x) - x
  // ddlerp: the five data-dependent mixes from one shared down-projection.
  const Tensor lora = ops::tanh_act(ops::linear(lerp_static(x, xx, time_maa_x), time_maa_w1));
  const std::vector<Tensor> parts = ops::split_columns(lora, std::vector<int64_t>(5, mix_dim));
  std::vector<Tensor> mixed;
  for (size_t s = 0; s < 5; ++s) {
    // maa_s + LoRA_s(.) as the up-projection's bias.
    mixed.push_back(ops::add(x, ops::mul(xx, ops::linear(parts[s], time_maa_w2[s], time_maa[s]))));
  }
  const Tensor w = ops::linear(ops::tanh_act(ops::linear(mixed[0], time_decay_w1)), time_decay_w2,
                               time_decay);
  const Tensor k = key->forward(mixed[1]);
  const Tensor v = value->forward(mixed[2]);
  const Tensor r = receptance->forward(mixed[3]);
  const Tensor g = gate->forward(mixed[4]);
  const Tensor y = step ? ops::rwkv6_wkv(r, k, v, w, time_faaaa, head_size, step->wkv, step->last)
                        : ops::rwkv6_wkv(r, k, v, w, time_faaaa, head_size);
  // GroupNorm with H groups: LayerNorm over each head's N channels, then the
  // per-channel affine of ln_x.
  const Tensor normed = ops::layernorm(ops::reshape(y, {B, T, H, head_size}), gn_ones_, gn_zeros_,
                                       kRwkv6GroupNormEps);
  const Tensor yn = ops::mul_lastdim(ops::reshape(normed, {B, T, C}), ln_x_weight, ln_x_bias);
  return output->forward(ops::swiglu(g, yn));  // silu(g) * GroupNorm(y)
}

void Rwkv6TimeMix::collect_parameters(const std::string& prefix, ParameterList& out) const {
  static const char* kParts[] = {"w", "k", "v", "r", "g"};
  out.push_back({prefix + ".time_maa_x", time_maa_x});
  for (size_t s = 0; s < 5; ++s) out.push_back({prefix + ".time_maa_" + kParts[s], time_maa[s]});
  out.push_back({prefix + ".time_maa_w1", time_maa_w1});
  for (size_t s = 0; s < 5; ++s) {
    out.push_back({prefix + ".time_maa_w2_" + kParts[s], time_maa_w2[s]});
  }
  out.push_back({prefix + ".time_decay", time_decay});
  out.push_back({prefix + ".time_decay_w1", time_decay_w1});
  out.push_back({prefix + ".time_decay_w2", time_decay_w2});
  out.push_back({prefix + ".time_faaaa", time_faaaa});
  receptance->collect_parameters(prefix + ".receptance", out);
  key->collect_parameters(prefix + ".key", out);
  value->collect_parameters(prefix + ".value", out);
  gate->collect_parameters(prefix + ".gate", out);
  output->collect_parameters(prefix + ".output", out);
  out.push_back({prefix + ".ln_x.weight", ln_x_weight});
  out.push_back({prefix + ".ln_x.bias", ln_x_bias});
}

void Rwkv6TimeMix::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".receptance", receptance);
  visit(prefix + ".key", key);
  visit(prefix + ".value", value);
  visit(prefix + ".gate", gate);
  visit(prefix + ".output", output);
}

Rwkv6ChannelMix::Rwkv6ChannelMix(const ModelCard& card, int layer, Device device, DType dtype) {
  const int64_t C = card.d_model, F = card.d_ff;
  const double r10 = rwkv_ratio_1_to_almost0(card, layer);
  time_maa_k = rwkv_init_param(maa_ramp(C, r10), {C}, device, dtype);
  time_maa_r = rwkv_init_param(maa_ramp(C, r10), {C}, device, dtype);
  key = std::make_unique<Linear>(C, F, false, device, dtype);
  receptance = std::make_unique<Linear>(C, C, false, device, dtype);
  value = std::make_unique<Linear>(F, C, false, device, dtype);
  zero_mix_ = constant(0.0f, C, {1, 1, C}, device, dtype);
}

Tensor Rwkv6ChannelMix::forward(const Tensor& x, const RwkvCachedStep* step) const {
  const Tensor prev = step ? rwkv_shift_as(*step->shift, x) : Tensor();
  const Tensor shifted = token_shift(x, prev, zero_mix_);
  if (step) rwkv_keep_last_rows(x, *step);
  const Tensor xx = ops::add_scaled(shifted, x, -1.0f);
  const Tensor k = ops::relu_square(key->forward(lerp_static(x, xx, time_maa_k)));
  return ops::sigmoid_mul(receptance->forward(lerp_static(x, xx, time_maa_r)), value->forward(k));
}

void Rwkv6ChannelMix::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".time_maa_k", time_maa_k});
  out.push_back({prefix + ".time_maa_r", time_maa_r});
  key->collect_parameters(prefix + ".key", out);
  receptance->collect_parameters(prefix + ".receptance", out);
  value->collect_parameters(prefix + ".value", out);
}

void Rwkv6ChannelMix::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".key", key);
  visit(prefix + ".receptance", receptance);
  visit(prefix + ".value", value);
}

int64_t rwkv6_layer_parameters(const ModelCard& c) {
  const int64_t C = c.d_model, F = c.d_ff, D = c.rwkv6_time_mix_extra_dim;
  const int64_t Dd = c.rwkv6_time_decay_extra_dim;
  const int64_t time_mix = 6 * C + 5 * D * C + 5 * C * D + C + 2 * Dd * C + C + 5 * C * C + 2 * C;
  const int64_t channel_mix = 2 * C + 2 * F * C + C * C;
  return 2 * 2 * C + time_mix + channel_mix;  // ln1, ln2
}

int64_t rwkv6_layer_matmul_macs(const ModelCard& c) {
  const int64_t C = c.d_model, F = c.d_ff, D = c.rwkv6_time_mix_extra_dim;
  const int64_t Dd = c.rwkv6_time_decay_extra_dim;
  return 10 * D * C + 2 * Dd * C + 5 * C * C + 2 * F * C + C * C;
}

}  // namespace el
