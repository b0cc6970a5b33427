// mla.h — multi-head latent attention (DeepSeek-V2/V3), the card's `attention: mla`.
//
// Per token x[C] (H heads, n = qk_nope_head_dim, r = qk_rope_head_dim,
// v = v_head_dim, L = kv_lora_rank; parameter names as transformers'
// DeepseekV3Attention):
//   q        = q_proj(x)                                  q_lora_rank == 0
//            = q_b_proj(q_a_layernorm(q_a_proj(x)))       q_lora_rank > 0     [H, n + r]
//   [c, k_r] = kv_a_proj_with_mqa(x)                      [L + r]: latent and shared RoPE key
//   [k_n, v] = kv_b_proj(kv_a_layernorm(c))               [H, n + v]
//   q_h = [q_n, rope(q_r)], k_h = [k_n, rope(k_r)] (k_r shared by every head)
//   out = o_proj(softmax(q_h . k_h / sqrt(n + r)) v_h over heads)
// The two latent norms are RMSNorms with eps 1e-6 (DeepseekV3RMSNorm's
// default; the config's rms_norm_eps applies to the block norms only). RoPE
// rotates DeepSeek's interleaved pairs (x[2i], x[2i+1]) of the r dims by
// frequency i of theta^(-2i/r) (transformers' rope_interleave, its default),
// only with pos_encoding: rope; no yarn mscale (rope_scaling none or the
// card's linear/llama3 frequencies).
//
// Built only from ops/ops.h (autograd and every backend for free). The q/k/v
// layouts (slices of the projections, the shared RoPE key copied to every
// head, the concatenation of nope and RoPE parts) are ops::gather_columns
// maps, one pass each, with zeros in unmapped columns, so k is the sum of its
// nope and RoPE gathers. Inside the attention the q/k head dims are permuted
// (the scores are sums over dims, so a permutation applied to q and k alike
// changes nothing): the RoPE pairs sit at (i, D/2 + i) where ops::rope
// rotates them, with zero frequencies for the non-RoPE pairs (an exact
// identity). ops::attention takes one head dim D for q, k and v, so D =
// max(n + r, v) (rounded up to even) and the shorter side is padded with
// zero columns (v's are dropped by the output gather), so scores are exact;
// the scale is passed explicitly as 1/sqrt(n + r). The paper's cards give
// D = 128 + 64 = 192, a tensor-core shape on the GPU.
//
// Inference (forward_cached) uses the absorbed form of the DeepSeek-V2
// paper: a cache row per token is [rope(k_r) | c normed] (cache_dim =
// L + r, rounded up to even; the RoPE pairs at (i, r/2 + i), rope_at's
// partial rotation of the first r columns), one "KV head" shared by every
// query head. W_UK (the k rows of kv_b_proj) is folded into the query
// projection and W_UV (its v rows) into o_proj, so a step computes
//   q_abs = rope(W_qabs q_in)    [H, cache_dim]   (q_in = x or the normed q_a)
//   y     = attention_cached(q_abs, cache, cache, values = the latent columns)
//   out   = W_oabs y (+ o_proj bias)
// and never rebuilds per-head K/V. Without query compression (q_lora_rank 0)
// W_qabs and kv_a_proj_with_mqa share their input, so a decode step runs them
// as one GEMV and ops::mla_decode_prologue turns its output into the rotated
// queries and the cache row in one call (the latent's RMSNorm, the column
// layout, RoPE, the cache write); with q_lora_rank > 0 the same arithmetic
// runs as separate ops. The cache tensor is passed as both k and
// v, with the latent columns [r, r + L) as the values: the attention's
// output is softmax . c, [H, L], and W_oabs is [C, H L] (no columns for the
// RoPE key: before the [rope | latent] layout the output also carried the
// RoPE columns, which W_oabs multiplied by zeros). The absorbed weights are read
// from the slots themselves (forward of an identity), so LoRA or quantized
// slots are absorbed as they compute. They are computed on first use and
// again at a prefill from position 0 when the layer's parameters changed
// since (a sum-of-squares fingerprint per parameter: training between
// generations), so repeated generations with fixed weights pay for it once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/model_card.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el {

// Columns of one cache row of an MLA layer: kv_lora_rank + qk_rope_head_dim,
// rounded up to even (the RoPE op rotates pairs (i, D/2 + i)).
int64_t mla_cache_dim(const ModelCard& card);
// Head dim of the training-form attention: max(nope + rope, v), rounded up to even.
int64_t mla_attention_dim(const ModelCard& card);

// The largest head dims the CUDA attention kernels take (src/cuda/attention.cuh:
// training attention D <= 256; src/cuda/cuda_infer.cu: cached attention
// D <= 576, DeepSeek-V2/V3's 512 + 64). The CPU kernels have no limit.
inline constexpr int64_t kMlaCudaMaxAttentionDim = 256;
inline constexpr int64_t kMlaCudaMaxCacheDim = 576;
// Ok unless an MLA card's attention dims exceed what `device`'s kernels take:
// the error names the card field to shrink (qk_nope_head_dim / v_head_dim
// for mla_attention_dim, kv_lora_rank for mla_cache_dim). Standard cards: Ok.
// DecoderLM::create calls it, so a card that cannot run fails at model build.
Status check_mla_for_device(const ModelCard& card, Device device);

// A fixed column layout out[..., m] = x[..., src[m]] (src[m] < 0: zero) as
// ONE differentiable ops::gather_columns. Its index tensors are built on
// first use on a device and kept (rebuilt only if the device changes): a
// decode step then copies nothing from the host, and a captured step
// (infer/decode_graph.h) keeps reading live indices.
class ColumnGather {
 public:
  ColumnGather() = default;
  ColumnGather(int64_t in_width, const std::vector<int64_t>& src);
  // x[..., in_width] -> [..., out_width].
  Tensor apply(const Tensor& x) const;

 private:
  int64_t in_ = 0;
  std::vector<int64_t> src_;
  mutable ops::ColumnMap map_;  // on the device of the last apply
};

struct MlaAttention {
  MlaAttention(const ModelCard& card, Device device, DType dtype = DType::f32);
  // x[B, T, C] -> [B, T, C]. rope_inv_freq is not used: the layer keeps its
  // own RoPE tables (qk_rope_head_dim wide, the card's rope_scaling applied).
  Tensor forward(const Tensor& x, const Tensor& rope_inv_freq) const;
  // Generation (absorbed form; see the file comment). k_cache: [B, Smax, 1,
  // cache_dim] (KvCache makes it for an MLA card); v_cache is the same tensor
  // (or a second one of that shape, written alike and never read). from_zero:
  // a prefill of rows all at position 0 runs the training-form attention over
  // its own tokens (and refreshes the absorbed weights).
  Tensor forward_cached(const Tensor& x, const Tensor& rope_inv_freq, Tensor& k_cache,
                        Tensor& v_cache, const Tensor& positions, bool from_zero) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  int64_t n_head, q_lora_rank, kv_lora_rank, nope_dim, rope_dim, v_dim;
  int64_t attn_dim;                       // D of the training-form attention (mla_attention_dim)
  int64_t cache_dim;                      // D of the absorbed attention (mla_cache_dim)
  float scale;                            // 1 / sqrt(nope_dim + rope_dim)
  bool rotate;                            // pos_encoding: rope
  std::unique_ptr<LinearLayer> q_proj;    // [H (n + r), C]; q_lora_rank == 0
  std::unique_ptr<LinearLayer> q_a_proj;  // [q_lora_rank, C]; q_lora_rank > 0
  Tensor q_a_layernorm;                   // [q_lora_rank] RMSNorm weight
  std::unique_ptr<LinearLayer> q_b_proj;  // [H (n + r), q_lora_rank]
  std::unique_ptr<LinearLayer> kv_a_proj_with_mqa;  // [L + r, C]
  Tensor kv_a_layernorm;                            // [L] RMSNorm weight
  std::unique_ptr<LinearLayer> kv_b_proj;           // [H (n + v), L]
  std::unique_ptr<LinearLayer> o_proj;              // [C, H v]
  Tensor alibi_slopes;                              // pos_encoding: alibi, f32 [H]

 private:
  Tensor query(
      const Tensor& x) const;  // q_proj(x) or q_b_proj(norm(q_a_proj(x))): [B, T, H (n + r)]
  Tensor query_input(const Tensor& x) const;  // x, or norm(q_a_proj(x))
  // Training-form attention given kv_a's output kva[B, T, L + r] and the
  // normed latent c[B, T, L].
  Tensor attend(const Tensor& x, const Tensor& kva, const Tensor& c) const;
  // Cache rows [B, T, 1, cache_dim] (unrotated) from kva and c.
  Tensor cache_rows(const Tensor& kva, const Tensor& c) const;
  void absorb(DType dtype) const;  // fills w_qabs_, w_oabs_, b_oabs_
  // Sum of squares of each parameter: a change since the last absorb (a
  // training step) triggers a new one, at the cost of one read of the weights.
  std::vector<double> weights_fingerprint() const;

  ColumnGather gather_q_, gather_c_, gather_k_nope_, gather_k_rope_, gather_v_, gather_out_;
  ColumnGather gather_row_latent_, gather_row_rope_;
  Tensor inv_freq_attn_, inv_freq_cache_;   // f32 [attn_dim / 2], [cache_dim / 2]
  mutable Tensor w_qabs_;                   // [H cache_dim, q input width]
  mutable Tensor w_oabs_;                   // [C, H cache_dim]
  mutable Tensor b_oabs_;                   // [C] (o_bias) or undefined
  // q_lora_rank == 0: [w_qabs_; kv_a_proj_with_mqa's effective weight], one
  // GEMV for both inputs of ops::mla_decode_prologue, and its bias (kv_a's,
  // zeros for the query rows) or undefined.
  mutable Tensor w_dec_, b_dec_;
  mutable Tensor row_map_;                  // i32 [cache_dim]: cache column -> kv_a column (or -1)
  mutable std::vector<double> absorbed_fingerprint_;
};

}  // namespace el
