// cuda_kernels.h — internal to src/cuda: the host launchers behind CudaBackend.
//
// Each function has the contract of the Backend virtual of the same name
// (ops/backend.h): contiguous tensors on the registered GPU, outputs and
// backward gradients overwritten. Float tensors may be stored as f32, bf16 or
// f16 independently; arithmetic is f32 (statistics such as rstd, mean, lse
// and losses are f32 tensors). Everything is queued on ctx().stream and
// returns without waiting, except the functions that return a host value.
// One family per file: cuda_memory.cu, cuda_gemm.cpp, cuda_elementwise.cu,
// cuda_embedding_rope.cu, cuda_norm.cu, cuda_loss.cu, cuda_adamw.cu.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "ops/backend.h"

namespace el::cuda {

// ---- cuda_memory.cu
void fill(Tensor& dst, float value);
void copy(const Tensor& src, Tensor& dst);  // host<->device, device<->device, any dtypes

// ---- cuda_gemm.cpp
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta);

// ---- cuda_elementwise.cu
void add(const Tensor& a, const Tensor& b, Tensor& out);
void axpy(float alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, float s);
double sum_squares(const Tensor& x);
bool all_finite(const Tensor& x);
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup);
// gate_up[N, 2F] = [gate | up] per row (one packed projection).
void swiglu_packed_forward(const Tensor& gate_up, Tensor& out);
void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up);
void gelu_forward(const Tensor& x, Tensor& out);
void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx);
void gelu_exact_forward(const Tensor& x, Tensor& out);
void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx);
// RWKV-4's sigmoid(r) * y and max(x, 0)^2 (ops/backend.h "RWKV-4").
void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out);
void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y, Tensor& dr,
                          Tensor& dy);
void relu_square_forward(const Tensor& x, Tensor& out);
void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx);
// Sum of squares over several tensors with one wait (global gradient norm).
double sum_squares_many(const std::vector<Tensor>& xs);

// ---- cuda_adapter.cu (LoRA/DoRA arithmetic, dropout; mul in cuda_elementwise.cu)
void mul(const Tensor& a, const Tensor& b, Tensor& out);
void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out);
void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv);
void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out);
void inv_row_norms(const Tensor& x, Tensor& out);

// ---- cuda_infer.cu (KV cache, decode attention, argmax); the per-row rotary
// offsets (split_qkv_rope_at, rope_at) share the RoPE kernel in cuda_embedding_rope.cu
void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                       Tensor& q, Tensor& k, Tensor& v);
void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions, Tensor& y);
void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                    Tensor& v_cache);
// cuda_kv_cache.cu: MLA's latent cache row + query RoPE in one kernel (Backend::mla_decode_prologue).
void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                         const Tensor& norm_w, float eps, const Tensor& inv_freq,
                         const Tensor& positions, Tensor& q, Tensor& k_cache, Tensor& v_cache);
// cuda_kv_cache.cu (with kv_cache_write): split + RoPE + cache write in one kernel.
void qkv_rope_cache_write(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                          Tensor& q, Tensor& k_cache, Tensor& v_cache);
// alibi_slopes: undefined or f32 [H] (ALiBi, ops/backend.h); values are the
// cache columns [value_offset, value_offset + out.dim(3)).
void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& positions, float scale, Tensor& out,
                      const Tensor& alibi_slopes = Tensor(), int64_t value_offset = 0);
void argmax_rows(const Tensor& x, Tensor& out);
void increment_i32(Tensor& x, int32_t delta);
// cuda_decode_layer.cu: one decoder layer of a batch-1 decode step as one
// persistent kernel (Backend::decode_layer), dense or weight-only quantized
// weights. decode_layer_enabled: whether the backend uses it. On by
// default: in generate at batch 1 it measured 1.044 ms a token against the
// layered kernels' 1.407 for bf16, 0.998 against 1.266 for int8 and 0.835
// against 0.991 for int4 (docs/PERFORMANCE.md, sessions 20-21);
// EL_DECODE_LAYER=0 turns it off, set_decode_layer_enabled (1 / 0, -1 back to
// the environment) overrides both for tests. decode_layer_takes /
// decode_layer ignore it.
bool decode_layer_enabled();
void set_decode_layer_enabled(int enabled);
bool decode_layer_takes(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                        const Tensor& k_cache, const Tensor& v_cache);
void decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                  const Tensor& positions, Tensor& k_cache, Tensor& v_cache, Tensor& out);
// The layers w[0..n) of a decode step in one launch of the same kernel
// (Backend::decode_layers): the residual stream passes from layer to layer
// inside the kernel, so the weight stream runs on through the layer
// boundaries. Every layer must pass decode_layer_takes; consecutive layers of
// one format (shapes, bits, cache length) share a launch, up to 32 a launch.
void decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w, const Tensor& inv_freq,
                   const Tensor& positions, std::span<Tensor> k_caches, std::span<Tensor> v_caches,
                   Tensor& out);
// Benchmark hook: later decode_layer / decode_layers launches write per-block
// phase timestamps (%globaltimer ns) to `buffer`, a device array of
// [layers of the launch, grid, slots] (returned: slots per block; the slot
// meanings are in cuda_decode_layer.cuh); nullptr turns it off. Not for
// production paths (each launch overwrites the last).
int decode_layer_trace(unsigned long long* buffer);

// cuda_stream_probe.cu (benchmark hook, cuda_stream_bench): the decode layer
// kernel's weight stream alone over w, whole rows of row_bytes: one block per
// SM, its rows in windows of `rows` rows x `span` bytes through a ring of
// `stages` shared-memory slots. mode 0: a bulk copy per row of a window (the
// layer kernel's pattern); 1: one contiguous copy per window (a tiled
// layout); 2: plain 16-byte loads, no ring (the yardstick).
struct StreamProbe {
  int mode = 0, rows = 16, span = 1024, stages = 8;
};
void stream_probe(const Tensor& w, int64_t row_bytes, const StreamProbe& p);

// ---- cuda_quant_gemv.cu + cuda_quant_gemm.cu (weight-only int4/int8 GEMV for decode, GEMM for
// prefill; device pieces in cuda_quant.cuh)
void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor& y);
// The kernel families behind quant_matmul: simt takes any
// operands; gemv / gemm (tensor cores) need bf16/f16 x, K and group size
// multiples of 32 (int4) / 16 (int8) and 16-byte aligned x and qweight;
// stream (one token, large weights: cuda_stream_gemv.cu) the same and rows
// of whole 64-byte k-blocks. quant_matmul_path() is the one `automatic`
// picks (benchmarks report it);
// quant_matmul_with() forces one (tests compare them; a tensor-core path on
// operands it cannot take throws).
enum class QuantPath { automatic, simt, gemv, gemm, stream };
const char* quant_path_name(QuantPath path);
QuantPath quant_matmul_path(const Tensor& x, const QuantizedWeight& w);
void quant_matmul_with(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor& y,
                       QuantPath path);

// ---- cuda_moe.cu (router, grouping, gather, combine; E <= 256), cuda_moe_loss.cu (the
// router losses) and
// cuda_moe_gemm.cu (the grouped GEMMs: one launch per projection, tensor cores for
// bf16/f16 with dims that are multiples of 8, SIMT otherwise): the Backend
// "mixture of experts" virtuals
void moe_router_forward(const Tensor& logits, MoeScore score, bool normalize, Tensor& ids,
                        Tensor& weights);
void moe_router_backward(const Tensor& dweights, const Tensor& logits, const Tensor& ids,
                         const Tensor& weights, MoeScore score, bool normalize, Tensor& dlogits);
void moe_group(const Tensor& ids, int64_t capacity, Tensor& sorted_slot, Tensor& slot_row,
               Tensor& offsets);
void moe_gather_forward(const Tensor& x, const Tensor& sorted_slot, int64_t k, Tensor& out);
void moe_gather_backward(const Tensor& dout, const Tensor& slot_row, Tensor& dx);
void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& offsets,
                  Tensor& y);
void grouped_gemm_dw(const Tensor& dy, const Tensor& x, const Tensor& offsets, Tensor& dw,
                     bool accumulate = false);
// cuda_moe_quant.cu: quantized experts stacked [E N, K] (ops::grouped_quant_linear).
void grouped_quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets, Tensor& y);
void moe_combine_forward(const Tensor& ys, const Tensor& weights, const Tensor& slot_row,
                         const Tensor& shared, const Tensor& shared_gate, Tensor& out);
void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& weights,
                          const Tensor& sorted_slot, const Tensor& slot_row, const Tensor& shared,
                          const Tensor& shared_gate, Tensor& dys, Tensor& dweights,
                          Tensor& dshared, Tensor& dgate);
void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                              Tensor& loss);
void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits, const Tensor& ids,
                               MoeScore score, Tensor& dlogits);
void moe_z_loss_forward(const Tensor& logits, Tensor& loss);
void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits);

// ---- cuda_mamba_scan.cu + cuda_mamba.cu: Mamba-1 (Backend "Mamba-1" virtuals):
// the fused selective scan (states in registers; checkpoints every
// mamba_scan_chunk() steps for the backward); the conv with SiLU, the conv
// state update, the column copy
int64_t mamba_scan_chunk();
void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& last,
                          Tensor& state, Tensor& out);
void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                           const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias);
void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                        const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                        const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints);
void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                         const Tensor& A_log, const Tensor& B, const Tensor& C, const Tensor& D,
                         const Tensor& z, const Tensor& delta_bias, const Tensor& checkpoints,
                         Tensor& du, Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC,
                         Tensor& dD, Tensor& dz, Tensor& ddelta_bias);
void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t cols);

// ---- cuda_nsa.cu + cuda_nsa_tc.cu (+ cuda_nsa_gate.cu: the gated sum): NSA branches (Backend "NSA" virtuals; tensor cores for
// bf16/f16 at D 64 / 128, SIMT otherwise)
void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                      float scale, int64_t block, int64_t stride, int64_t q_offset,
                                      Tensor& out, Tensor& lse);
void nsa_compressed_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& kc,
                                       const Tensor& vc, const Tensor& out, const Tensor& lse,
                                       float scale, int64_t block, int64_t stride,
                                       int64_t q_offset, Tensor& dq, Tensor& dkc, Tensor& dvc);
void nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                       int64_t compress_block, int64_t compress_stride, int64_t select_block,
                       int64_t q_offset, Tensor& blocks);
void nsa_sparse_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& blocks, int64_t select_block, int64_t window,
                                  float scale, int64_t q_offset, Tensor& out, Tensor& lse);
void nsa_sparse_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& blocks, const Tensor& out,
                                   const Tensor& lse, int64_t select_block, int64_t window,
                                   float scale, int64_t q_offset, Tensor& dq, Tensor& dk,
                                   Tensor& dv);
void nsa_gate_combine_forward(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                              const Tensor& o_win, Tensor& out);
void nsa_gate_combine_backward(const Tensor& dout, const Tensor& gates, const Tensor& o_cmp,
                               const Tensor& o_slc, const Tensor& o_win, Tensor& dgates,
                               Tensor& do_cmp, Tensor& do_slc, Tensor& do_win);

// ---- cuda_rwkv.cu: RWKV-4 token shift + time mix and the WKV recurrence
// (Backend "RWKV-4" virtuals; one thread per (batch row, channel) sweeping T)
void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev, const std::vector<Tensor>& mix,
                           std::vector<Tensor>& outs);
void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x, const Tensor& prev,
                            const std::vector<Tensor>& mix, Tensor& dx, std::vector<Tensor>& dmix);
void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                      const Tensor& v, const Tensor& last, Tensor& state, Tensor& y);
void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                       const Tensor& v, const Tensor& y, const Tensor& dy, const Tensor& state0,
                       Tensor& dtime_decay, Tensor& dtime_first, Tensor& dk, Tensor& dv);

// ---- cuda_rwkv6.cu: RWKV-6 tanh and the WKV-6 recurrence (Backend "RWKV-6"
// virtuals; one block per (batch row, head), the state in registers)
void tanh_forward(const Tensor& x, Tensor& out);
void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx);
void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                       const Tensor& u, int64_t head_size, const Tensor& last, Tensor& state,
                       Tensor& y);
void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                        const Tensor& u, int64_t head_size, const Tensor& dy,
                        const Tensor& state0, Tensor& dr, Tensor& dk, Tensor& dv, Tensor& dw,
                        Tensor& du);

// ---- cuda_norm.cu, shared: out[j] = sum over b < g of partial[b * c + j]
// (f32 partials, fixed order), rounded into out's dtype.
void launch_column_sum(const float* partial, int64_t g, int64_t c, Tensor& out);

// ---- cuda_embedding_rope.cu
// packed[B, T, H + 2 Hkv, D] <-> q, k (rotated unless inv_freq is undefined), v.
void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset, Tensor& q,
                    Tensor& k, Tensor& v);
void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                         const Tensor& inv_freq, int64_t pos_offset, Tensor& dpacked);
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
// Backend::sum_columns (cuda_columns.cu).
void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx, Tensor& out);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable);
void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse, Tensor& y);

// ---- cuda_norm.cu
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd);
void add_rmsnorm_forward(const Tensor& x, const Tensor& branch, const Tensor& w, float eps,
                         Tensor& sum, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx_add, Tensor& dx, Tensor& dw);
void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                       Tensor& mean, Tensor& rstd);
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db);

// ---- cuda_loss.cu
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                           Tensor& lse);
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            float dloss, Tensor& dlogits);
// Forward and backward in one pass per row (the softmax is never stored);
// dlogits may be the logits tensor itself (overwritten in place).
void cross_entropy_fused(const Tensor& logits, const Tensor& targets, float dloss, Tensor& losses,
                         Tensor& lse, Tensor& dlogits);

// ---- cuda_adamw.cu
void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& step);
void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m, Tensor& v,
                         const AdamWStep& step);
void adamw_update_many(const std::vector<AdamWTensors>& slots, const AdamWStep& step);

}  // namespace el::cuda
