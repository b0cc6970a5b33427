// nsa.h — native sparse attention (Yuan et al. 2025, "Native Sparse
// Attention"), the card's `attention: nsa`.
//
// Per layer (H query heads, Hkv kv heads, head dim D; the card's nsa_* keys
// l = nsa_compress_block, d = nsa_compress_stride, l' = nsa_select_block,
// n = nsa_select_count, w = nsa_window):
//   q, k, v = q_proj(x), k_proj(x), v_proj(x)   GQA, RoPE on q and k as the
//            card says; ONE k/v shared by the three branches (the paper
//            allows separate ones per branch; the EfficientLLM authors' code
//            shares them, which is also what makes NSA's KV cache a plain one)
//   k_cmp_i = W_ck flatten(k[i d .. i d + l) + pe_k)   W_ck [D, l D], pe_k [l, D]
//   v_cmp_i = W_cv flatten(v[i d .. i d + l) + pe_v)   shared over kv heads
//            (the paper's phi is "an MLP with intra-block position encoding";
//            one linear layer here, UNVERIFIED against the authors' weights).
//            With a linear phi, pe_k adds the same vector W_ck flatten(pe_k)
//            to every compressed key, which shifts a query's compressed
//            scores by a constant: softmax ignores it, so pe_k gets no
//            gradient and does nothing (pe_v shifts o_cmp by a constant and
//            does train). Kept so an MLP phi can replace the linear one
//            without a checkpoint change; a known limitation, not a feature.
//            Only complete blocks: Nc = T >= l ? (T - l) / d + 1 : 0. The
//            compressed keys are built from the RoPE-rotated k (UNVERIFIED:
//            the paper does not say; sharing one rotated k is the simplest).
//   o_cmp  = attention of q_t over the compressed tokens i with
//            i d + l - 1 <= t (the whole block in the past); a query that
//            sees none (t < l - 1) gets o_cmp = 0.
//   blocks = per kv group and query, the n select blocks of l' positions
//            with the largest importance: the sum, over the group's heads, of
//            the compressed branch's softmax probabilities of the compressed
//            tokens lying inside the block (i d >= j l' and i d + l <=
//            (j + 1) l', i.e. i in [j l'/d, (j + 1) l'/d - l/d]). The
//            query's own block always counts (score +inf), later ones never,
//            ties go to the lower index; no gradient flows through the choice.
//            Paper eq. 9 instead sums p_cmp over the overlapping tokens
//            j l'/d - m - n (m < l'/d, n < l/d) with multiplicity; with the
//            default l = l' = d both reduce to p_slc[j] = p_cmp[j]. Where they
//            differ (l > d or l' > l) ours ignores tokens straddling two
//            blocks (UNVERIFIED which one the authors' code used there).
//   o_slc  = attention of q_t over keys s <= t in the selected blocks
//   o_win  = attention of q_t over keys (t - w, t]
//   o_t    = sig(g_cmp) o_cmp + sig(g_slc) o_slc + sig(g_win) o_win per head,
//            g = gate_proj(x) [3 H] (no bias, as fla's g_proj; per head the
//            three logits at 3h, 3h + 1, 3h + 2)
//   out    = o_proj(o)
// Parameters: self_attn.{q,k,v,o}_proj, self_attn.gate_proj (LinearLayers,
// so LoRA and quantization see them), self_attn.compress_k.weight [D, l D],
// self_attn.compress_k.pos [l, D], self_attn.compress_v.{weight,pos} (plain
// tensors).
//
// Generation (forward_cached) keeps a plain GQA KV cache (rotated k and v of
// every position) and RECOMPUTES each step: the compressed keys of the whole
// prefix, the selection and the three branches for the new queries, row by
// row (rows may sit at different positions). Correct and simple; its cost
// per step grows with the prefix (O(S) compression work per layer), which a
// cache of compressed tokens would avoid.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/model_card.h"
#include "nn/module.h"
#include "ops/ops.h"

namespace el {

// Compressed tokens of a T-long sequence: T >= l ? (T - l) / d + 1 : 0.
int64_t nsa_compressed_tokens(const ModelCard& card, int64_t T);
// Keys each branch reads, averaged over the positions t < T of a training
// sequence (FLOP counts, models/decoder_lm.h flops_per_token):
//   compressed: t >= l - 1 ? (t - l + 1) / d + 1 : 0 (capped by Nc)
//   selected:   (t mod l' + 1) + min(n - 1, t / l') l'  (own block's past
//               part, the other n - 1 blocks full once they exist)
//   window:     min(w, t + 1)
// The selection's rescoring of the compressed tokens is not counted (a fused
// kernel takes the probabilities from the compressed pass).
struct NsaKeyCounts {
  double compressed = 0, selected = 0, window = 0;
};
NsaKeyCounts nsa_mean_keys(const ModelCard& card, int64_t T);

struct NsaAttention {
  NsaAttention(const ModelCard& card, Device device, DType dtype = DType::f32);
  // x[B, T, C] -> [B, T, C]; rope_inv_freq undefined when the card has no RoPE.
  Tensor forward(const Tensor& x, const Tensor& rope_inv_freq) const;
  // Generation over a standard cache k/v_cache[B, Smax, Hkv, D]: x's T new
  // tokens of row b go to cache rows host_positions[b] + t (positions is the
  // same on the device) and attend to all the row has cached, recomputing
  // the compressed tokens from the raw cache (see the file comment).
  Tensor forward_cached(const Tensor& x, const Tensor& rope_inv_freq, Tensor& k_cache,
                        Tensor& v_cache, const Tensor& positions,
                        const std::vector<int32_t>& host_positions) const;
  void collect_parameters(const std::string& prefix, ParameterList& out) const;
  void for_each_linear(const std::string& prefix, const LinearVisitor& visit);

  int64_t n_head, n_kv_head, head_dim;
  int64_t window, compress_block, compress_stride, select_block, select_count;
  float scale;  // 1 / sqrt(head_dim), every branch
  std::unique_ptr<LinearLayer> q_proj, k_proj, v_proj, o_proj;
  std::unique_ptr<LinearLayer> gate_proj;  // [3 H, C]
  Tensor compress_k_weight, compress_v_weight;  // [D, l D]
  Tensor compress_k_pos, compress_v_pos;        // [l, D]

  // The three branches and the gate for q[B, T, H, D] at positions
  // q_offset + t over k/v[B, S, Hkv, D] (S = q_offset + T), gates[B, T, 3H]
  // logits: the gated sum [B, T, H, D] before o_proj.
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gates,
                int64_t q_offset) const;

 private:
  // k or v [B, S, Hkv, D] -> compressed [B, Nc, Hkv, D] (undefined if Nc == 0).
  Tensor compress(const Tensor& x, const Tensor& weight, const Tensor& pos) const;
  Tensor ones_;  // [l D], the parameters' dtype: mul_lastdim's unit scale
};

}  // namespace el
