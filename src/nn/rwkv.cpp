#include "nn/rwkv.h"

#include <cmath>
#include <vector>

#include "ops/backend.h"

namespace el {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

double rwkv_ratio_0_to_1(const ModelCard& c, int layer) {
  return c.n_layer > 1 ? static_cast<double>(layer) / (c.n_layer - 1) : 0.0;
}
double rwkv_ratio_1_to_almost0(const ModelCard& c, int layer) {
  return 1.0 - static_cast<double>(layer) / c.n_layer;
}

std::vector<float> rwkv_channel_ramp(int64_t c, double p, double add) {
  std::vector<float> out(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) {
    out[static_cast<size_t>(i)] =
        static_cast<float>(std::pow(static_cast<double>(i) / c, p) + add);
  }
  return out;
}

Tensor rwkv_init_param(const std::vector<float>& v, const Shape& shape, Device device, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.copy_from(Tensor::from_floats(v, shape));
  t.set_requires_grad(true);
  return t;
}

// x's last token per row into the cache's shift rows: x itself when T == 1
// (no host transfer, so a decode step stays graph-capturable), else the
// rows b T + last[b] (a prefill). Backend::copy converts to the cache's dtype.
void rwkv_keep_last_rows(const Tensor& x, const RwkvCachedStep& step) {
  const int64_t B = x.dim(0), T = x.dim(1), C = x.dim(2);
  if (T == 1 && !step.last.defined()) {
    backend_for(x.device()).copy(x, *step.shift);
    return;
  }
  const Tensor last = step.last.defined() ? step.last.to(Device::cpu()) : Tensor();
  std::vector<int32_t> rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t t = last.defined() ? last.data<int32_t>()[b] : T - 1;
    EL_ENSURE(t >= 0 && t < T, "rwkv: row {}'s last token {} outside [0, {})", b, t, T);
    rows[static_cast<size_t>(b)] = static_cast<int32_t>(b * T + t);
  }
  const Tensor idx = Tensor::from_ints(rows, {B}).to(x.device());
  backend_for(x.device()).copy(ops::embedding(idx, x.view({B * T, C})), *step.shift);
}

// The shift rows in x's dtype (the cache may hold another).
Tensor rwkv_shift_as(const Tensor& shift, const Tensor& x) {
  if (shift.dtype() == x.dtype()) return shift;
  Tensor t = Tensor::empty(shift.shape(), x.dtype(), x.device());
  backend_for(x.device()).copy(shift, t);
  return t;
}

int rwkv_attention_size(const ModelCard& card) {
  return card.rwkv_attention_hidden_size > 0 ? card.rwkv_attention_hidden_size : card.d_model;
}

float rwkv_layer_eps_scale(const ModelCard& card, int layer) {
  const int k = card.rwkv_rescale_every;
  return k > 0 ? std::pow(4.0f, static_cast<float>(layer / k)) : 1.0f;
}

float rwkv_final_eps_scale(const ModelCard& card) {
  return rwkv_layer_eps_scale(card, card.n_layer);
}

bool rwkv_keeps_init(const std::string& name) {
  return name.find(".time_") != std::string::npos || name.find(".ln1.") != std::string::npos ||
         name.find(".ln2.") != std::string::npos || name.find(".pre_ln.") != std::string::npos ||
         name.find(".ln_x.") != std::string::npos;
}

bool rwkv_residual_projection(const std::string& name) {
  return ends_with(name, ".attention.output.weight") ||
         ends_with(name, ".feed_forward.value.weight");
}

RwkvTimeMix::RwkvTimeMix(const ModelCard& card, int layer, Device device, DType dtype) {
  const int64_t C = card.d_model, A = rwkv_attention_size(card);
  const double r01 = rwkv_ratio_0_to_1(card, layer), r10 = rwkv_ratio_1_to_almost0(card, layer);
  // Decay speeds from -5 (slow channels) to 3; the bonus log(0.3) with a
  // +-0.5 zigzag (RWKV-LM's init; transformers wraps it in ones_like, which
  // makes every time_first 1, so we keep the authors' values).
  std::vector<float> decay(static_cast<size_t>(A)), first(static_cast<size_t>(A));
  for (int64_t h = 0; h < A; ++h) {
    const double f = A > 1 ? static_cast<double>(h) / (A - 1) : 0.0;
    decay[h] = static_cast<float>(-5.0 + 8.0 * std::pow(f, 0.7 + 1.3 * r01));
    first[h] = static_cast<float>(std::log(0.3) + ((h + 1) % 3 - 1) * 0.5);
  }
  time_decay = rwkv_init_param(decay, {A}, device, dtype);
  time_first = rwkv_init_param(first, {A}, device, dtype);
  time_mix_key = rwkv_init_param(rwkv_channel_ramp(C, r10), {1, 1, C}, device, dtype);
  time_mix_value = rwkv_init_param(rwkv_channel_ramp(C, r10, 0.3 * r01), {1, 1, C}, device, dtype);
  time_mix_receptance = rwkv_init_param(rwkv_channel_ramp(C, 0.5 * r10), {1, 1, C}, device, dtype);
  key = std::make_unique<Linear>(C, A, false, device, dtype);
  value = std::make_unique<Linear>(C, A, false, device, dtype);
  receptance = std::make_unique<Linear>(C, A, false, device, dtype);
  output = std::make_unique<Linear>(A, C, false, device, dtype);
}

Tensor RwkvTimeMix::forward(const Tensor& x, const RwkvCachedStep* step) const {
  const Tensor prev = step ? rwkv_shift_as(*step->shift, x) : Tensor();
  const std::vector<Tensor> mixed =
      ops::rwkv_time_mix(x, prev, {time_mix_key, time_mix_value, time_mix_receptance});
  if (step) rwkv_keep_last_rows(x, *step);  // after the mix has read the old rows
  const Tensor k = key->forward(mixed[0]);
  const Tensor v = value->forward(mixed[1]);
  const Tensor r = receptance->forward(mixed[2]);
  const Tensor y = step ? ops::rwkv_wkv(time_decay, time_first, k, v, step->wkv, step->last)
                        : ops::rwkv_wkv(time_decay, time_first, k, v);
  return output->forward(ops::sigmoid_mul(r, y));
}

void RwkvTimeMix::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".time_decay", time_decay});
  out.push_back({prefix + ".time_first", time_first});
  out.push_back({prefix + ".time_mix_key", time_mix_key});
  out.push_back({prefix + ".time_mix_value", time_mix_value});
  out.push_back({prefix + ".time_mix_receptance", time_mix_receptance});
  key->collect_parameters(prefix + ".key", out);
  value->collect_parameters(prefix + ".value", out);
  receptance->collect_parameters(prefix + ".receptance", out);
  output->collect_parameters(prefix + ".output", out);
}

void RwkvTimeMix::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".key", key);
  visit(prefix + ".value", value);
  visit(prefix + ".receptance", receptance);
  visit(prefix + ".output", output);
}

RwkvChannelMix::RwkvChannelMix(const ModelCard& card, int layer, Device device, DType dtype) {
  const int64_t C = card.d_model, F = card.d_ff;
  const double r10 = rwkv_ratio_1_to_almost0(card, layer);
  time_mix_key = rwkv_init_param(rwkv_channel_ramp(C, r10), {1, 1, C}, device, dtype);
  time_mix_receptance = rwkv_init_param(rwkv_channel_ramp(C, r10), {1, 1, C}, device, dtype);
  key = std::make_unique<Linear>(C, F, false, device, dtype);
  receptance = std::make_unique<Linear>(C, C, false, device, dtype);
  value = std::make_unique<Linear>(F, C, false, device, dtype);
}

Tensor RwkvChannelMix::forward(const Tensor& x, const RwkvCachedStep* step) const {
  const Tensor prev = step ? rwkv_shift_as(*step->shift, x) : Tensor();
  const std::vector<Tensor> mixed =
      ops::rwkv_time_mix(x, prev, {time_mix_key, time_mix_receptance});
  if (step) rwkv_keep_last_rows(x, *step);
  const Tensor k = ops::relu_square(key->forward(mixed[0]));
  return ops::sigmoid_mul(receptance->forward(mixed[1]), value->forward(k));
}

void RwkvChannelMix::collect_parameters(const std::string& prefix, ParameterList& out) const {
  out.push_back({prefix + ".time_mix_key", time_mix_key});
  out.push_back({prefix + ".time_mix_receptance", time_mix_receptance});
  key->collect_parameters(prefix + ".key", out);
  receptance->collect_parameters(prefix + ".receptance", out);
  value->collect_parameters(prefix + ".value", out);
}

void RwkvChannelMix::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".key", key);
  visit(prefix + ".receptance", receptance);
  visit(prefix + ".value", value);
}

}  // namespace el
