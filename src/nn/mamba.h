// mamba.h — the Mamba-1 mixer (Gu & Dao 2023), the card's `block: mamba`,
// computed as transformers' MambaMixer (slow_forward path) computes it.
//
// Per layer (C = d_model, I = mamba_expand * C, N = mamba_d_state,
// K = mamba_d_conv, R = dt rank):
//   x, z   = split(in_proj(h))            in_proj [2I, C] (+ bias with mamba_proj_bias)
//   u      = silu(conv1d(x))              causal depthwise conv over time, weight
//                                          [I, 1, K] (+ bias [I] with mamba_conv_bias)
//   ts,B,C = split(x_proj(u))             x_proj [R + 2N, I], no bias
//   dt     = dt_proj(ts)                  dt_proj.weight [I, R]; its bias [I] is
//                                          added inside the scan, as transformers'
//                                          forward passes it (delta_bias)
//   y      = scan(u, dt, A_log, B, C, D, z, dt_proj.bias)     ops::mamba_scan:
//            delta = softplus(dt + bias), A = -exp(A_log) [I, N],
//            h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,
//            y_t = (C_t . h_t + D u_t) * silu(z_t)
//   out    = out_proj(y)                  out_proj [C, I] (+ bias with mamba_proj_bias)
// The block around it (nn/blocks.h DecoderBlock) is x + mixer(RMSNorm(x)),
// with no MLP. The in_proj split costs no copy while the slot holds a dense
// Linear: ops::linear_split computes x and z by their own GEMMs over the
// weight's row blocks (a LoRA or quantized slot: its forward, then
// ops::split_columns). x_proj's narrow parts are one GEMM and split_columns. Parameter names (internal; models/hf_model.cpp maps
// them to transformers' backbone.layers.{i}.mixer.*): mixer.in_proj, mixer.x_proj,
// mixer.dt_proj, mixer.out_proj (LinearLayer slots, so LoRA and quantization
// see them; dt_proj's slot has no bias), mixer.dt_proj.bias, mixer.conv1d.weight,
// mixer.conv1d.bias, mixer.A_log, mixer.D.
//
// Initialisation (init_weights; the values only shape training from
// scratch, a checkpoint overwrites them), as mamba_ssm / transformers do:
// A_log[d, n] = log(n + 1), D = 1, dt_proj.bias = softplus^-1(dt) with dt
// log-uniform in [1e-3, 1e-1] floored at 1e-4, dt_proj.weight uniform in
// +-R^-0.5, conv1d.weight uniform in +-K^-0.5 (PyTorch's Conv1d default),
// conv1d.bias 0; in_proj and x_proj N(0, init_std) as our other projections,
// out_proj N(0, init_std / sqrt(n_layer)) (mamba_ssm's
// rescale_prenorm_residual with one residual per layer).
//
// Generation: the layer keeps two fixed-size states per sequence (KvCache
// conv_state [B, K - 1, I] and ssm_state [B, I, N], both f32), so the
// cache does not grow with the length. forward_cached runs the same ops from
// those states and leaves the states after each row's last real token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nn/model_card.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el {

struct MambaMixer {
  MambaMixer(const ModelCard& card, Device device, DType dtype = DType::f32);
  // h[B, T, C] (the normed stream) -> [B, T, C], states starting from zero.
  Tensor forward(const Tensor& h) const;
  // Generation: continues from conv_state / ssm_state (the layer's cache
  // entries) and updates them in place. last: undefined (all T tokens are
  // real) or i32 [B] on the device, row b's last real token (a right-padded
  // prefill): the states stop after it. No gradient.
  Tensor forward_cached(const Tensor& h, Tensor& conv_state, Tensor& ssm_state,
                        const Tensor& last) const;
  // Mamba's initialisation (see the file comment); `rng` continues the
  // model's stream.
  void init_weights(Rng& rng, float init_std, int n_layer);
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  int64_t d_inner, d_state, d_conv, dt_rank;
  std::unique_ptr<LinearLayer> in_proj, x_proj, dt_proj, out_proj;
  Tensor conv_weight;  // [I, 1, K]
  Tensor conv_bias;    // [I], undefined without mamba_conv_bias
  Tensor dt_bias;      // [I] (dt_proj.bias)
  Tensor A_log;        // [I, N]
  Tensor D;            // [I]

 private:
  // x_proj(u) split into ts / B / C, then dt_proj(ts).
  struct Ssm {
    Tensor dt, B, C;
  };
  Ssm ssm_inputs(const Tensor& u) const;
};

// Parameters of one Mamba layer (mixer + its norm) and the multiply-adds of
// its projections per token, from the card alone (models/decoder_lm.cpp
// count_parameters / flops_per_token).
int64_t mamba_layer_parameters(const ModelCard& card);
int64_t mamba_layer_matmul_macs(const ModelCard& card);

}  // namespace el
