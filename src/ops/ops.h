// ops.h — differentiable operations on Tensors.
//
// Each op checks its inputs (EL_ENSURE: a mismatch is a bug in the caller),
// allocates its output on the inputs' device, runs the device's kernel
// (ops/backend.h) and, when an input requires grad, records its backward on
// the tape (autograd/tape.h). Models (nn/, models/) are built only from these.
// Shapes: B batch, T time, C channels, H heads, Hkv KV heads, D head dim, V vocab.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "ops/backend.h"
#include "ops/quant_layout.h"

namespace el::ops {

// y[..., out] = alpha * x[..., in] @ w[out, in]^T (+ bias[out]). y has x's
// dtype; w may be any float dtype, bias has x's or w's. alpha (LoRA's scaling)
// costs nothing: it is the GEMM's own factor.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), float alpha = 1.0f);

// Several projections of one input as ONE GEMM: y[..., sum(out_i)] holds
// x @ w_i^T (+ b_i) side by side, in the order given. The weights must be
// consecutive row blocks of one buffer (rows_are_stacked), so the GEMM reads
// them as one [sum(out_i), in] matrix with no copy; each w_i (and b_i) gets
// its own gradient, a row block of one dW. biases: empty, or one per weight,
// stacked the same way. Used for q/k/v and gate/up (nn/blocks.cpp).
Tensor linear_stacked(const Tensor& x, const std::vector<Tensor>& weights,
                      const std::vector<Tensor>& biases = {});
// True when the tensors are defined, contiguous, of one dtype and device, 2-D
// with one column count (1-D: any length), and each starts where the previous
// ends in the same storage.
bool rows_are_stacked(const std::vector<Tensor>& parts);
// One tensor over parts that rows_are_stacked: the first part's storage as
// [sum of rows, cols] (or [sum] for 1-D parts). No copy, no autograd.
Tensor stacked_view(const std::vector<Tensor>& parts);

// out[B, T, C] = table[ids[B, T]] ; ids i32; out has the table's dtype.
Tensor embedding(const Tensor& ids, const Tensor& table);

// Normalise over the last dimension.
Tensor rmsnorm(const Tensor& x, const Tensor& w, float eps);
Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps);

// The pre-norm residual step: sum = x + branch (the new residual stream,
// rounded to x's dtype), normed = rmsnorm(sum, w). One pass over the rows on
// a GPU instead of an add and a norm; the gradient of both outputs flows
// back to x and branch. x and branch share dtype and shape.
struct ResidualNorm {
  Tensor sum;
  Tensor normed;
};
ResidualNorm add_rmsnorm(const Tensor& x, const Tensor& branch, const Tensor& w, float eps);

// Rotary embedding of x[B, T, H, D]; inv_freq[R/2] f32 (see rope_inv_freq)
// with R <= D even: the first R dims of each head rotate in pairs (i, i + R/2)
// (R = D: the whole head, Llama; R < D: GPT-NeoX's partial rotary), dims
// [R, D) pass unchanged. The same holds for every rope op below.
Tensor rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset = 0);
// q, k and v from the packed output of one q/k/v projection (linear_stacked):
// packed[B, T, H + 2 * Hkv, D] -> q[B, T, H, D] and k[B, T, Hkv, D] rotated
// (inv_freq undefined: not rotated), v[B, T, Hkv, D] copied. One op so that
// the split costs no extra pass: the rotation writes q and k anyway.
struct QKV {
  Tensor q, k, v;
};
QKV split_qkv_rope(const Tensor& packed, int64_t n_head, int64_t n_kv_head, const Tensor& inv_freq,
                   int64_t pos_offset = 0);
// inv_freq[i] = theta^(-2i/D), i < D/2, on the given device.
Tensor rope_inv_freq(int64_t head_dim, float theta, Device device);

// Scaled dot-product attention, q[B, T, H, D], k/v[B, S, Hkv, D] -> [B, T, H, D].
// MHA (Hkv == H), GQA (1 < Hkv < H) and MQA (Hkv == 1) are this one op.
// scale <= 0 means 1/sqrt(D). alibi_slopes: undefined, or f32 [H] on q's
// device (alibi_slopes below): ALiBi adds slopes[h] * (s - i) to the scaled
// score of query position i = t + S - T and key s, inside the kernels (no
// T x S bias tensor); differentiable in q, k, v as without it.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = true,
                 float scale = 0.0f, const Tensor& alibi_slopes = Tensor());
// ALiBi's per-head slopes (Press et al. 2022): H a power of two gives the
// geometric sequence 2^(-8 h / H), h = 1..H; otherwise the slopes of the
// largest power of two below H followed by every other slope of twice that
// (the authors' and BLOOM's rule). Host values, and as f32 [H] on a device.
std::vector<float> alibi_slope_values(int64_t n_head);
Tensor alibi_slopes(int64_t n_head, Device device);

// ---- NSA, native sparse attention (ops_nsa.cpp; the layer is nn/nsa.h) ------
// Query t sits at position q_offset + t (training: 0). scale <= 0 means
// 1/sqrt(D). Differentiable in every float input unless noted.
//
// x[B, T, Hkv, D] -> [B, Nc, Hkv, block * D], out[b, i, h, j D + d] =
// x[b, i stride + j, h, d] for j < block: the raw rows of each complete
// compression block, Nc = T >= block ? (T - block) / stride + 1 : 0
// (undefined when Nc == 0). A row gather (ops::embedding), so exact.
Tensor nsa_block_unfold(const Tensor& x, int64_t block, int64_t stride);
// Compressed branch: q[B, T, H, D] over kc/vc[B, Nc, Hkv, D], compressed
// token i (raw positions [i stride, i stride + block)) visible to query t
// iff i stride + block - 1 <= q_offset + t. A query that sees none gets
// out = 0 and lse = -inf (so does every query when kc is undefined or
// empty). lse is f32 [B, H, T], not differentiable (selection reads it).
struct NsaCompressed {
  Tensor out;
  Tensor lse;
};
NsaCompressed nsa_compressed_attention(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                       float scale, int64_t block, int64_t stride,
                                       int64_t q_offset = 0);
// Block selection, no gradient: i32 [B, Hkv, T, select_count], per kv group
// the select blocks (of select_block positions) with the largest summed
// compressed-branch probability (recomputed from lse) of the group's heads
// over the compressed tokens inside the block; the query's own block always,
// later blocks never, ties to the lower index; ascending, -1 padded
// (contract: Backend::nsa_select_blocks). kc undefined (no compressed token
// yet): each query gets its own block only, with one row per q head (the
// kv-head count is unknown then; nn/nsa.h does not call it in that case).
Tensor nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                         int64_t compress_block, int64_t compress_stride, int64_t select_block,
                         int64_t select_count, int64_t q_offset = 0);
// Sparse branch: q[B, T, H, D] over k/v[B, S, Hkv, D] (q_offset + T <= S),
// query t attending to keys s <= q_offset + t that lie in one of its kv
// group's blocks (blocks i32 [B, Hkv, T, n], entries < 0 unused; undefined:
// none) or in the window s > q_offset + t - window (0: none). blocks +
// window 0 is NSA's selection branch, no blocks + window w its sliding window.
Tensor nsa_sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& blocks, int64_t select_block, int64_t window,
                            float scale, int64_t q_offset = 0);
// gates[B, T, 3H] logits (per head h: cmp, slc, win at 3h, 3h + 1, 3h + 2)
// -> [B, T, H, D] = sum over branches of sigmoid(gate) * o_branch.
Tensor nsa_gate_combine(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                        const Tensor& o_win);

// ---- Mamba-1 (ops_mamba.cpp; the layer is nn/mamba.h) -----------------------
// x[..., sum(sizes)] -> one tensor per part, x[..., the part's columns]
// (Mamba's in_proj output into x | z, x_proj's into dt | B | C).
// Differentiable; the backward writes every part's gradient into one buffer.
std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& sizes);
// split_columns(linear(x, w, bias), sizes) without the copies (ops_linear.cpp):
// part i = x @ w[r_i : r_i + sizes[i]]^T (+ bias[r_i : ...]), one GEMM per
// contiguous row block of w. The backward writes each part's dW rows into
// one dW (zeros for a part nothing flowed into) and sums the parts' dx in
// one buffer (GEMMs with beta = 1). Argument rules as linear's.
std::vector<Tensor> linear_split(const Tensor& x, const Tensor& w,
                                 const std::vector<int64_t>& sizes,
                                 const Tensor& bias = Tensor());
// silu(causal depthwise conv over time): x[B, T, I], w [I, K] or [I, 1, K],
// bias [I] or undefined; out[b, t, d] = silu(bias[d] + sum_k w[d, k]
// x[b, t - K + 1 + k, d]), zeros before t = 0. Differentiable (the SiLU is
// fused: transformers' act(conv1d(x)), hidden_act silu).
Tensor mamba_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias);
// The selective scan (Backend::mamba_scan_forward has the equations) from a
// zero state: u, delta, z [B, T, I], A_log [I, N], B/C [B, T, N], D and
// delta_bias [I]; returns y [B, T, I]. delta is dt_proj's output WITHOUT its
// bias: the bias add and the softplus are fused into the scan (as
// transformers' forward passes delta_bias), as are the D skip and the
// silu(z) gate. Differentiable in every input; the backward recomputes the
// states (from the backend's per-chunk checkpoints), no [B, T, I, N] tensor.
Tensor mamba_scan(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                  const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias);
// Generation (no gradient): the same ops continuing from cached states that
// they update in place. conv state f32 [B, K - 1, I] (the last inputs), ssm
// state f32 [B, I, N]; last: undefined (all T tokens are real), or i32 [B]
// on the device, row b's last real token: the states stop after it.
Tensor mamba_conv1d_cached(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& state,
                           const Tensor& last);
Tensor mamba_scan_cached(const Tensor& u, const Tensor& delta, const Tensor& A_log,
                         const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                         const Tensor& delta_bias, Tensor& state, const Tensor& last);

// ---- RWKV-4 (ops_rwkv.cpp; the layers are nn/rwkv.h) -----------------------------
// Token shift and time mix in one pass: x[B, T, C] and 1 to 3 mix vectors
// (C values each, any shape such as transformers' [1, 1, C], x's dtype) ->
// one [B, T, C] per mix, x * m + xs * (1 - m), where xs is x one token back
// along T and prev[B, C] (undefined: zeros) stands before the first token
// (the cached last token of the previous call in generation). Differentiable
// in x and the mixes; prev gets no gradient.
std::vector<Tensor> rwkv_time_mix(const Tensor& x, const Tensor& prev,
                                  const std::vector<Tensor>& mix);
// WKV-4 (Backend::rwkv_wkv_forward has the equations): time_decay and
// time_first (C values, w = -exp(time_decay)), k/v[B, T, C] -> y[B, T, C], in
// transformers' numerically stable running-maximum form. state: nullptr (the
// zero state; training) or f32 [B, 3, C] (num, den, max per batch row): read
// as the initial state and overwritten with the state after step last[b]
// (last: i32 [B] on the device, each < T; undefined: T - 1 — a right-padded
// prefill keeps each row's state at its own last token). Differentiable in
// time_decay, time_first, k and v (the initial state's decay included); the
// state gets no gradient.
Tensor rwkv_wkv(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                const Tensor& v, Tensor* state = nullptr, const Tensor& last = Tensor());
// sigmoid(r) * y, r and y of one shape (RWKV's receptance gate).
Tensor sigmoid_mul(const Tensor& r, const Tensor& y);
// max(x, 0)^2 (RWKV-4's channel-mix activation).
Tensor relu_square(const Tensor& x);

// ---- RWKV-6 (ops_rwkv6.cpp; the layers are nn/rwkv6.h) -----------------------
// tanh(x), elementwise (the LoRA nonlinearity of RWKV-6's token shift and
// decay). Named tanh_act so it does not hide std::tanh in this namespace.
Tensor tanh_act(const Tensor& x);
// WKV-6 (Backend::rwkv6_wkv_forward has the equations): r, k, v and the raw
// decay w [B, T, C] (C = H head_size, the decay applied as exp(-exp(w))),
// bonus u [C] -> y [B, T, C]. state: nullptr (the zero state; training) or
// f32 [B, H, N, N], read as the initial state and overwritten with the state
// after step last[b] (last: i32 [B] on the device; undefined: T - 1).
// Differentiable in r, k, v, w and u (the initial state's decay included);
// the state gets no gradient.
Tensor rwkv6_wkv(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                 const Tensor& u, int64_t head_size, Tensor* state = nullptr,
                 const Tensor& last = Tensor());

// ---- mixture of experts (ops_moe.cpp; the layer is nn/moe.h) ----------------
// N tokens, E experts, k choices per token; slot s = n k + j is token n's
// j-th choice, M = N k slots; the expert-sorted row buffers have M rows
// (contracts in ops/backend.h, "mixture of experts").
//
// logits[N, E] (any float dtype) -> ids i32 [N, k] (descending score, ties to
// the lower index) and weights f32 [N, k]: softmax probabilities or sigmoid
// scores of the chosen experts, divided by their sum when normalize (then
// softmax weights are a softmax over the k chosen logits). Differentiable
// w.r.t. logits through the weights; the choice itself has no gradient.
struct MoeRouting {
  Tensor ids;      // i32 [N, k]
  Tensor weights;  // f32 [N, k]
};
MoeRouting moe_router(const Tensor& logits, int64_t k, MoeScore score, bool normalize);
// The token-slot permutation sorted by expert (no gradient): capacity 0 =
// dropless; > 0 keeps at most `capacity` slots per expert in priority order
// (first choices first, then earlier tokens; the rest are dropped).
struct MoeGrouping {
  Tensor sorted_slot;  // i32 [M]: the slot of each row; -1: unused row
  Tensor slot_row;     // i32 [M]: the row of each slot; -1: dropped
  Tensor offsets;      // i32 [E + 1]: expert e's rows [offsets[e], offsets[e + 1])
  int64_t k = 0;
};
MoeGrouping moe_group(const Tensor& ids, int64_t n_experts, int64_t capacity = 0);
// x[N, C] -> [M, C]: the token of each row (unused rows 0); differentiable.
Tensor moe_gather(const Tensor& x, const MoeGrouping& g);
// x[M, K] rows grouped by `offsets` (i32 [E + 1]) -> y[M, O]: the rows of
// expert e times w_e^T, where the weights are one [E, O, K] buffer: a single
// tensor of that shape, or parts that are consecutive row blocks of one
// buffer in expert-major order (rows_are_stacked; each part gets its rows of
// dW). Unused rows give 0. Differentiable in x and the weights. One grouped
// GEMM per call on every backend, whatever the token counts.
Tensor grouped_linear(const Tensor& x, const std::vector<Tensor>& weights, const Tensor& offsets);
// The weight-only quantized grouped_linear (inference only, no gradient):
// x[M, K] rows grouped by offsets (i32 [E + 1]) -> y[M, N] in x's dtype,
// expert e's rows times dequant(w rows [e N, (e + 1) N))^T, where `w` holds
// the E experts' [N, K] weights stacked as one [E N, K] QuantizedWeight
// (ops/quant_layout.h). Unused rows give 0. No host read of the counts on a
// GPU; experts without rows read no weights.
Tensor grouped_quant_linear(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets);
// ys[M, C] (the experts' outputs by row) and weights [N, k] (f32, the
// router's, or ys's dtype) -> [N, C]:
// out[n] = sum over kept j of weights[n, j] ys[row of n k + j], plus
// sigmoid(shared_gate[n]) shared[n] when shared (a shared expert's output
// [N, C], gate logits [N, 1]) is given. Differentiable in all float inputs.
Tensor moe_combine(const Tensor& ys, const Tensor& weights, const MoeGrouping& g,
                   const Tensor& shared = Tensor(), const Tensor& shared_gate = Tensor());
// Load-balancing loss of one layer, f32 [1]: E * sum_e f_e P_e with f_e the
// share of tokens that chose e (count over ids / N: the k choices of a token
// all count, so sum_e f_e = k) and P_e the mean over tokens of the score
// distribution (softmax, or the sigmoid scores normalised per token).
// This is transformers' load_balancing_loss_func (Switch eq. 4-6 as Mixtral
// and Qwen2-MoE train with it) applied to one layer's router logits; for
// several layers transformers pools the counts and probabilities of all
// layers before multiplying, while DecoderLM averages the per-layer losses
// (one value per router, as in Switch / GShard; equal for one layer).
// Differentiable w.r.t. logits through P (f is a count).
Tensor moe_balance_loss(const Tensor& logits, const Tensor& ids, MoeScore score);
// Router z-loss (ST-MoE), f32 [1]: mean over tokens of logsumexp(logits)^2.
Tensor moe_z_loss(const Tensor& logits);
// a + alpha * b for tensors of one shape and dtype (the aux-loss sum of
// DecoderLM::loss); differentiable in both.
Tensor add_scaled(const Tensor& a, const Tensor& b, float alpha);

Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up
// The same from the packed output of one gate/up projection (linear_stacked):
// gate_up[..., 2F] holds gate in [0, F) and up in [F, 2F); returns [..., F].
Tensor swiglu_packed(const Tensor& gate_up);
Tensor gelu(const Tensor& x);                         // tanh approximation
Tensor gelu_exact(const Tensor& x);                   // 0.5 x (1 + erf(x / sqrt 2))
Tensor add(const Tensor& a, const Tensor& b);         // same shape (residual)
Tensor mul(const Tensor& a, const Tensor& b);         // same shape, elementwise
// x[..., C] * v[C] (+ b[C]), v and b broadcast over the leading dimensions
// (DoRA's magnitude scaling, then the frozen bias); differentiable in all.
Tensor mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b = Tensor());
// Inverted dropout: each element kept with probability 1 - p and scaled by
// 1 / (1 - p). The mask is a hash of (seed, element index) (ops/backend.h
// dropout_keep): the same on every backend, recomputed by the backward rather
// than stored. p = 0 returns x itself. Callers pass a new seed per step.
Tensor dropout(const Tensor& x, float p, uint64_t seed);

// Same data, new shape (differentiable). One dimension may be -1.
Tensor reshape(const Tensor& x, const Shape& shape);

// A fixed column layout of the last dimension (slices, concatenations,
// permutations, one column copied to several places): out[..., m] =
// x[..., cols[m]], or 0 where cols[m] < 0. Built once on the host
// (make_column_map), its index tensors live on the device, so applying it
// copies nothing from the host (a decode step can be captured). One kernel
// pass (Backend::sum_columns); the backward sums, for each column of x, the
// gradients of every output column it feeds (no atomics).
struct ColumnMap {
  int64_t in_cols = 0, out_cols = 0;
  Tensor fwd_offsets, fwd_idx;  // i32 [out_cols + 1], [nnz]: CSR of the gather
  Tensor bwd_offsets, bwd_idx;  // i32 [in_cols + 1], [nnz]: CSR of its transpose
};
// cols: out_cols entries, each < in_cols (negative: a zero column).
ColumnMap make_column_map(int64_t in_cols, const std::vector<int64_t>& cols, Device device);
// x[..., in_cols] -> [..., out_cols]; x on the map's device.
Tensor gather_columns(const Tensor& x, const ColumnMap& map);

// Mean cross-entropy of logits[N, V] against targets[N] (i32); targets < 0
// are ignored (not counted in the mean). logits of any float dtype; returns
// a one-element f32 tensor.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

// ---- inference only (ops_infer.cpp): no backward is recorded ----------------
// positions: i32 [B] on the inputs' device, row b's cache position of its
// first new token (ops/backend.h, "inference with a KV cache").
Tensor rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions);
QKV split_qkv_rope_at(const Tensor& packed, int64_t n_head, int64_t n_kv_head,
                      const Tensor& inv_freq, const Tensor& positions);
// split_qkv_rope_at + kv_cache_write in one backend call (one kernel on the
// GPU): the rotated k and the v of packed go to the caches at positions[b] + t;
// returns the rotated q [B, T, H, D].
Tensor qkv_rope_cache_write(const Tensor& packed, int64_t n_head, int64_t n_kv_head,
                            const Tensor& inv_freq, const Tensor& positions, Tensor& k_cache,
                            Tensor& v_cache);
// MLA's absorbed decode prologue (nn/mla.h) in one backend call, one kernel
// on the GPU instead of eight. packed[B, T, H * D + S]: per token the H
// absorbed query heads of D cache columns (already in the cache's column
// layout), then the S outputs of kv_a_proj_with_mqa (`latent` latent values,
// then the RoPE key). row_map: i32 [D] on packed's device, cache column m <-
// source row_map[m] of those S (< 0: zero). A latent source is RMSNorm'd
// over the `latent` values (norm_w [latent], eps; rounded to packed's dtype
// as ops::rmsnorm stores it); then the row and each query head get rope_at's
// rotation (inv_freq f32 [R], R <= D / 2: pairs (i, R + i), angle
// (positions[b] + t) * inv_freq[i], the columns from 2 R on unrotated; none
// when undefined). The row goes to k_cache [B, Smax, 1, D] at
// positions[b] + t (and to v_cache when it is another tensor); returns the
// rotated queries [B, T, H, D].
Tensor mla_decode_prologue(const Tensor& packed, int64_t n_head, int64_t latent,
                           const Tensor& row_map, const Tensor& norm_w, float eps,
                           const Tensor& inv_freq, const Tensor& positions, Tensor& k_cache,
                           Tensor& v_cache);
// Writes k/v[B, T, Hkv, D] into caches [B, Smax, Hkv, D] at positions[b] + t.
void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                    Tensor& v_cache);
// q[B, T, H, D] over the cache: query t of row b sees rows <= positions[b] + t.
// alibi_slopes as in attention (query position positions[b] + t). The values
// are columns [value_offset, value_offset + value_cols) of the v_cache rows
// (value_cols 0: to the row's end), the output [B, T, H, value_cols]: MLA's
// absorbed decode passes its latent cache as k and v and takes only the
// latent columns as values (nn/mla.h), so no output column is wasted on the
// RoPE key.
Tensor attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& positions, float scale = 0.0f,
                        const Tensor& alibi_slopes = Tensor(), int64_t value_offset = 0,
                        int64_t value_cols = 0);
// One decoder layer of a decode step (T = 1) over its caches: the new
// residual stream x + attn(norm1(x)) + mlp(norm2(.)) of x[B, 1, C], as
// DecoderBlock::forward_cached computes it (the new k/v go to cache rows
// positions[b]). One backend call when the backend has a kernel for the
// shapes (Backend::decode_layer_takes; the GPU's batch-1 persistent kernel),
// else the separate ops; fused = false forces the separate ops (the
// reference the tests compare the kernel with).
Tensor decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                    const Tensor& positions, Tensor& k_cache, Tensor& v_cache, bool fused = true);
// The layers of a decode step (layer i: w[i] over caches k_caches[i] /
// v_caches[i]) applied in order to x: one backend call when every layer is
// fused (Backend::decode_layers: on the GPU one kernel launch for the whole
// stack), else decode_layer a layer at a time.
Tensor decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w, const Tensor& inv_freq,
                     const Tensor& positions, std::span<Tensor> k_caches,
                     std::span<Tensor> v_caches);
// Whether decode_layer would take the one-call path for these operands.
bool decode_layer_is_fused(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                           const Tensor& k_cache, const Tensor& v_cache);
// i32 [rows] index of each row's maximum over the last dimension.
Tensor argmax_rows(const Tensor& x);
void increment_i32(Tensor& x, int32_t delta);
// y[..., N] = x[..., K] @ dequant(w)^T (+ bias[N]); y has x's dtype.
Tensor quant_linear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias = Tensor());

}  // namespace el::ops
