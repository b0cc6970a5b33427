// cpu_kernels.h — internal to src/cpu: the CPU kernels behind CpuBackend.
//
// Each function has the signature and contract of the Backend virtual of the
// same name (ops/backend.h): contiguous CPU tensors, f32 unless stated,
// outputs and backward gradients overwritten. CpuBackend (cpu_backend.cpp)
// only forwards to these (widening bf16/f16 arguments to f32 through its
// F32Stage, cpu_f32_stage.h), so a family of kernels lives in one file
// (cpu_memory, cpu_gemm, cpu_elementwise, cpu_norm, cpu_attention, cpu_loss,
// cpu_adamw) and can be read and tested on its own.
//
// Threading: one pool for everything, OpenMP's. Kernels parallelise over rows
// once the work is large enough (kParallelMinWork); GEMM runs OpenBLAS pinned
// to one thread inside each OpenMP thread (cpu_gemm.cpp has the measurements
// behind this: the Debian OpenBLAS's own pthread pool and libgomp's spinning
// workers halve each other's speed on 2 cores). Parallel regions are never
// nested, and every reduction has a fixed order for a given thread count, so
// results are reproducible run to run.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/backend.h"

namespace el::cpu {

// Below this many scalar operations a loop runs on one thread: an OpenMP
// fork/join costs a few microseconds, more than the work itself.
inline constexpr int64_t kParallelMinWork = 1 << 15;

// Throws el::Exception (a bug in the op layer) unless t is a contiguous CPU
// tensor of dtype `want`; `what` names the kernel and argument for the message.
void expect_f32(const Tensor& t, const char* what);
void expect_dtype(const Tensor& t, DType want, const char* what);

// ---- cpu_memory.cpp
void fill(Tensor& dst, float value);
void copy(const Tensor& src, Tensor& dst);

// ---- cpu_gemm.cpp
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta);

// ---- cpu_adapter.cpp (LoRA/DoRA arithmetic, dropout)
void mul(const Tensor& a, const Tensor& b, Tensor& out);
void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out);
// Backend::sum_columns (cpu_columns.cpp).
void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx, Tensor& out);
void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv);
void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out);
void inv_row_norms(const Tensor& x, Tensor& out);

// ---- cpu_elementwise.cpp (add/axpy/scale/sum_squares, embedding, rope, activations)
void add(const Tensor& a, const Tensor& b, Tensor& out);
void axpy(float alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, float s);
double sum_squares(const Tensor& x);
bool all_finite(const Tensor& x);  // any dtype (integers are always finite)
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable);
void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse, Tensor& y);
// The rotation behind rope on raw f32 rows: `rows` positions (position r is
// r % t, plus pos_offset), `heads` heads of dim d each; position r's heads
// start at x + r * x_pos_stride (y likewise), so packed layouts work too.
// sign -1 rotates back (the backward). inv_freq holds n_freq <= d / 2
// values: pairs (i, i + n_freq) rotate, dims [2 n_freq, d) are copied (when
// y is not x), the partial rotary of GPT-NeoX.
void rope_rows(const float* x, int64_t x_pos_stride, float* y, int64_t y_pos_stride, int64_t rows,
               int64_t t, int64_t heads, int64_t d, const float* inv_freq, int64_t pos_offset,
               float sign, int64_t n_freq);
void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset, Tensor& q,
                    Tensor& k, Tensor& v);
void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                         const Tensor& inv_freq, int64_t pos_offset, Tensor& dpacked);
void swiglu_packed_forward(const Tensor& gate_up, Tensor& out);
void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up);
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup);
void gelu_forward(const Tensor& x, Tensor& out);
void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx);
void gelu_exact_forward(const Tensor& x, Tensor& out);
void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx);

// ---- cpu_norm.cpp
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw);
void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                       Tensor& mean, Tensor& rstd);
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db);

// ---- cpu_attention.cpp
// alibi_slopes: undefined or f32 [H] (ALiBi bias, see ops/backend.h).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       Tensor& out, Tensor& lse, const Tensor& alibi_slopes = Tensor());
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float scale, bool causal, Tensor& dq,
                        Tensor& dk, Tensor& dv, const Tensor& alibi_slopes = Tensor());

// ---- cpu_mamba.cpp (Mamba-1; contracts in ops/backend.h, "Mamba-1")
void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& last,
                          Tensor& state, Tensor& out);
void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                           const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias);
void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                        const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                        const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints);
void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A_log,
                         const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                         const Tensor& delta_bias, const Tensor& checkpoints, Tensor& du,
                         Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC, Tensor& dD,
                         Tensor& dz, Tensor& ddelta_bias);
void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t cols);

// ---- cpu_nsa.cpp (NSA branches; contracts in ops/backend.h, "NSA")
void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                      float scale, int64_t block, int64_t stride,
                                      int64_t q_offset, Tensor& out, Tensor& lse);
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

// ---- cpu_rwkv.cpp (RWKV-4; contracts in ops/backend.h, "RWKV-4"). The WKV
// state and `last` pass unstaged (f32 / i32 already).
void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev, const std::vector<Tensor>& mix,
                           std::vector<Tensor>& outs);
void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x, const Tensor& prev,
                            const std::vector<Tensor>& mix, Tensor& dx, std::vector<Tensor>& dmix);
void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                      const Tensor& v, const Tensor& last, Tensor& state, Tensor& y);
void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                       const Tensor& v, const Tensor& y, const Tensor& dy, const Tensor& state0,
                       Tensor& dtime_decay, Tensor& dtime_first, Tensor& dk, Tensor& dv);
void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out);
void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y, Tensor& dr,
                          Tensor& dy);
void relu_square_forward(const Tensor& x, Tensor& out);
void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx);

// ---- cpu_rwkv6.cpp (RWKV-6; contracts in ops/backend.h, "RWKV-6"). The
// state and `last` pass unstaged (f32 / i32 already).
void tanh_forward(const Tensor& x, Tensor& out);
void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx);
void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                       const Tensor& u, int64_t head_size, const Tensor& last, Tensor& state,
                       Tensor& y);
void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                        const Tensor& u, int64_t head_size, const Tensor& dy,
                        const Tensor& state0, Tensor& dr, Tensor& dk, Tensor& dv, Tensor& dw,
                        Tensor& du);

// ---- cpu_moe.cpp (mixture of experts; contracts in ops/backend.h, "mixture of experts")
// Index tensors (ids, sorted_slot, slot_row, offsets) are i32; the rest f32.
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
                     bool accumulate);
// Quantized experts stacked [E N, K] (ops::grouped_quant_linear): quant_matmul
// on each expert's row block of w (cpu_moe.cpp); x, y f32.
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

// ---- cpu_infer.cpp (KV cache, per-row rotary offsets, argmax, quantized matmul)
// The cache and quantized weights are read in their stored dtype; q, x, y,
// out and packed are f32 (staged by the backend).
void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions, Tensor& y);
void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                       Tensor& q, Tensor& k, Tensor& v);
// Backend::mla_decode_prologue: any float dtypes, rounding as the ops it fuses.
void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                         const Tensor& norm_w, float eps, const Tensor& inv_freq,
                         const Tensor& positions, Tensor& q, Tensor& k_cache, Tensor& v_cache);
void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                    Tensor& v_cache);
void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& positions, float scale, Tensor& out,
                      const Tensor& alibi_slopes = Tensor(), int64_t value_offset = 0);
void argmax_rows(const Tensor& x, Tensor& out);  // x any float dtype
void increment_i32(Tensor& x, int32_t delta);
void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor& y);

// ---- cpu_loss.cpp
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                           Tensor& lse);
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            float dloss, Tensor& dlogits);

// ---- cpu_adamw.cpp
void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& step);
void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m, Tensor& v,
                         const AdamWStep& step);

}  // namespace el::cpu
