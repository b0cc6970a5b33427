#include "nn/mamba.h"

#include <cmath>
#include <vector>

namespace el {
namespace {

Tensor parameter(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = Tensor::full(shape, value, dtype, device);
  t.set_requires_grad(true);
  return t;
}

// Host values into t (rounded to its dtype, copied to its device).
void assign(Tensor& t, const std::vector<float>& host) {
  t.copy_from(Tensor::from_floats(host, t.shape()));
}

void init_uniform(Tensor& t, Rng& rng, float bound) {
  std::vector<float> host(static_cast<size_t>(t.numel()));
  for (float& v : host) v = (2.0f * rng.uniform() - 1.0f) * bound;
  assign(t, host);
}

// slot(x) cut into column parts of `sizes`. A dense Linear computes each part
// by its own GEMM over its rows of the weight (ops::linear_split: no copies
// forward or backward); any other slot (LoRA, quantized) runs its forward and
// the output is split.
std::vector<Tensor> project_split(const LinearLayer& slot, const Tensor& x,
                                  const std::vector<int64_t>& sizes) {
  if (const auto* dense = dynamic_cast<const Linear*>(&slot)) {
    return ops::linear_split(x, dense->weight, sizes, dense->bias);
  }
  return ops::split_columns(slot.forward(x), sizes);
}

}  // namespace

MambaMixer::MambaMixer(const ModelCard& card, Device device, DType dtype)
    : d_inner(card.mamba_d_inner()),
      d_state(card.mamba_d_state),
      d_conv(card.mamba_d_conv),
      dt_rank(card.mamba_effective_dt_rank()) {
  const int64_t C = card.d_model, I = d_inner;
  in_proj = std::make_unique<Linear>(C, 2 * I, card.mamba_proj_bias, device, dtype);
  x_proj = std::make_unique<Linear>(I, dt_rank + 2 * d_state, false, device, dtype);
  dt_proj = std::make_unique<Linear>(dt_rank, I, false, device, dtype);  // bias: dt_bias
  out_proj = std::make_unique<Linear>(I, C, card.mamba_proj_bias, device, dtype);
  conv_weight = parameter({I, 1, d_conv}, 0.0f, dtype, device);
  if (card.mamba_conv_bias) conv_bias = parameter({I}, 0.0f, dtype, device);
  dt_bias = parameter({I}, 0.0f, dtype, device);
  A_log = parameter({I, d_state}, 0.0f, dtype, device);
  D = parameter({I}, 1.0f, dtype, device);
}

MambaMixer::Ssm MambaMixer::ssm_inputs(const Tensor& u) const {
  // One GEMM and small copies: x_proj's parts are narrow (dt_rank, N, N
  // columns), so a GEMM per part would read u [T, d_inner] three times
  // forward and backward, far more bytes than the copies it saves.
  const std::vector<Tensor> p = ops::split_columns(x_proj->forward(u), {dt_rank, d_state, d_state});
  return {dt_proj->forward(p[0]), p[1], p[2]};
}

Tensor MambaMixer::forward(const Tensor& h) const {
  const std::vector<Tensor> xz = project_split(*in_proj, h, {d_inner, d_inner});
  const Tensor u = ops::mamba_conv1d(xz[0], conv_weight, conv_bias);
  const Ssm s = ssm_inputs(u);
  return out_proj->forward(ops::mamba_scan(u, s.dt, A_log, s.B, s.C, D, xz[1], dt_bias));
}

Tensor MambaMixer::forward_cached(const Tensor& h, Tensor& conv_state, Tensor& ssm_state,
                                  const Tensor& last) const {
  const std::vector<Tensor> xz = project_split(*in_proj, h, {d_inner, d_inner});
  const Tensor u = ops::mamba_conv1d_cached(xz[0], conv_weight, conv_bias, conv_state, last);
  const Ssm s = ssm_inputs(u);
  return out_proj->forward(ops::mamba_scan_cached(u, s.dt, A_log, s.B, s.C, D, xz[1], dt_bias,
                                                  ssm_state, last));
}

void MambaMixer::init_weights(Rng& rng, float init_std, int n_layer) {
  const int64_t I = d_inner, N = d_state;
  // S4D-real: A[d, n] = -(n + 1), stored as its log.
  std::vector<float> a(static_cast<size_t>(I * N));
  for (int64_t d = 0; d < I; ++d)
    for (int64_t n = 0; n < N; ++n) a[static_cast<size_t>(d * N + n)] = std::log(float(n + 1));
  assign(A_log, a);
  assign(D, std::vector<float>(static_cast<size_t>(I), 1.0f));
  // dt log-uniform in [1e-3, 1e-1], floored at 1e-4; the bias is its softplus
  // inverse, dt + log(-expm1(-dt)), so softplus(bias) = dt at init.
  std::vector<float> bias(static_cast<size_t>(I));
  const double lo = std::log(1e-3), hi = std::log(1e-1);
  for (float& b : bias) {
    const double dt = std::max(std::exp(rng.uniform() * (hi - lo) + lo), 1e-4);
    b = static_cast<float>(dt + std::log(-std::expm1(-dt)));
  }
  assign(dt_bias, bias);
  if (auto* dt = dynamic_cast<Linear*>(dt_proj.get())) {
    init_uniform(dt->weight, rng, 1.0f / std::sqrt(static_cast<float>(dt_rank)));
  }
  init_uniform(conv_weight, rng, 1.0f / std::sqrt(static_cast<float>(d_conv)));
  if (conv_bias.defined()) assign(conv_bias, std::vector<float>(static_cast<size_t>(I), 0.0f));
  if (auto* out = dynamic_cast<Linear*>(out_proj.get())) {
    init_normal(out->weight, rng, init_std / std::sqrt(static_cast<float>(n_layer)));
  }
}

void MambaMixer::collect_parameters(const std::string& prefix, ParameterList& out) const {
  in_proj->collect_parameters(prefix + ".in_proj", out);
  out.push_back({prefix + ".conv1d.weight", conv_weight});
  if (conv_bias.defined()) out.push_back({prefix + ".conv1d.bias", conv_bias});
  x_proj->collect_parameters(prefix + ".x_proj", out);
  dt_proj->collect_parameters(prefix + ".dt_proj", out);
  out.push_back({prefix + ".dt_proj.bias", dt_bias});
  out.push_back({prefix + ".A_log", A_log});
  out.push_back({prefix + ".D", D});
  out_proj->collect_parameters(prefix + ".out_proj", out);
}

void MambaMixer::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  visit(prefix + ".in_proj", in_proj);
  visit(prefix + ".x_proj", x_proj);
  visit(prefix + ".dt_proj", dt_proj);
  visit(prefix + ".out_proj", out_proj);
}

int64_t mamba_layer_matmul_macs(const ModelCard& c) {
  const int64_t C = c.d_model, I = c.mamba_d_inner(), N = c.mamba_d_state,
                R = c.mamba_effective_dt_rank();
  return C * 2 * I + I * (R + 2 * N) + R * I + I * C;  // in, x, dt, out projections
}

int64_t mamba_layer_parameters(const ModelCard& c) {
  const int64_t C = c.d_model, I = c.mamba_d_inner(), N = c.mamba_d_state;
  int64_t p = mamba_layer_matmul_macs(c);
  p += I * c.mamba_d_conv + (c.mamba_conv_bias ? I : 0);  // conv1d
  p += I + I * N + I;                                     // dt_proj.bias, A_log, D
  if (c.mamba_proj_bias) p += 2 * I + C;                  // in_proj, out_proj biases
  p += c.norm == ModelCard::Norm::layernorm ? 2 * C : C;  // the layer's norm
  return p;
}

}  // namespace el
