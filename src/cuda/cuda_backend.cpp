// cuda_backend.cpp — CudaBackend (the Backend of DeviceKind::cuda), its CUDA
// graphs, register_backend() and the device facts and messages around it.
// The GPU context it creates is cuda_context.cpp's.
//
// CudaBackend only forwards each virtual to its launcher in cuda_kernels.h
// (attention to attention.cuh), like CpuBackend does for cpu_kernels.h.
#include "cuda/cuda_backend.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <optional>

#include "cuda/attention.cuh"
#include "cuda/cuda_allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_kernels.h"
#include "cuda/nvml.h"
#include "ops/backend.h"

namespace el::cuda {

cudaError_t probe_kernel_image();  // cuda_memory.cu

namespace {

AttentionShape attention_shape(const Tensor& q, const Tensor& k, float scale, bool causal) {
  EL_ENSURE(q.ndim() == 4 && k.ndim() == 4, "cuda attention: q {} and k {} must be 4-D",
            shape_str(q.shape()), shape_str(k.shape()));
  return AttentionShape{static_cast<int>(q.dim(0)),
                        static_cast<int>(q.dim(1)),
                        static_cast<int>(k.dim(1)),
                        static_cast<int>(q.dim(2)),
                        static_cast<int>(k.dim(2)),
                        static_cast<int>(q.dim(3)),
                        scale,
                        causal};
}

// The ALiBi slope table of an attention call: nullptr, or f32 [H] on the GPU.
const float* alibi_pointer(const Tensor& slopes, const Tensor& q, const char* what) {
  if (!slopes.defined()) return nullptr;
  expect_cuda_dtype(slopes, DType::f32, what);
  EL_ENSURE(slopes.numel() == q.dim(2), "{}: {} ALiBi slopes for {} heads", what, slopes.numel(),
            q.dim(2));
  return slopes.data<float>();
}

void check_attention(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    throw Exception(cuda_error(rc, what, __FILE__, __LINE__));
  }
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  Device device() const override { return Device::cuda(device_); }
  const char* name() const override { return "cuda"; }

  void fill(Tensor& dst, float value) override { cuda::fill(dst, value); }
  void copy(const Tensor& src, Tensor& dst) override { cuda::copy(src, dst); }

  void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) override {
    cuda::gemm(a, trans_a, b, trans_b, c, alpha, beta);
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override { cuda::add(a, b, out); }
  void axpy(float alpha, const Tensor& x, Tensor& y) override { cuda::axpy(alpha, x, y); }
  void scale(Tensor& x, float s) override { cuda::scale(x, s); }
  double sum_squares(const Tensor& x) override { return cuda::sum_squares(x); }
  double sum_squares_many(const std::vector<Tensor>& xs) override { return cuda::sum_squares_many(xs); }
  bool all_finite(const Tensor& x) override { return cuda::all_finite(x); }

  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) override {
    cuda::embedding_forward(ids, table, out);
  }
  void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx,
                   Tensor& out) override {
    cuda::sum_columns(x, offsets, idx, out);
  }
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override {
    cuda::embedding_backward(ids, dout, dtable);
  }

  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                       Tensor& rstd) override {
    cuda::rmsnorm_forward(x, w, eps, y, rstd);
  }
  void add_rmsnorm_forward(const Tensor& x, const Tensor& branch, const Tensor& w, float eps,
                           Tensor& sum, Tensor& y, Tensor& rstd) override {
    cuda::add_rmsnorm_forward(x, branch, w, eps, sum, y, rstd);
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dx_add, Tensor& dx, Tensor& dw) override {
    cuda::rmsnorm_backward(dy, x, w, rstd, dx_add, dx, dw);
  }
  void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                         Tensor& mean, Tensor& rstd) override {
    cuda::layernorm_forward(x, w, b, eps, y, mean, rstd);
  }
  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                          const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) override {
    cuda::layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
  }

  void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse,
            Tensor& y) override {
    cuda::rope(x, inv_freq, pos_offset, inverse, y);
  }

  void mul(const Tensor& a, const Tensor& b, Tensor& out) override { cuda::mul(a, b, out); }
  void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out) override {
    cuda::mul_lastdim(x, v, b, out);
  }
  void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv) override {
    cuda::mul_lastdim_grad_v(dy, x, dv);
  }
  void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out) override {
    cuda::dropout(x, p, seed, out);
  }

  void inv_row_norms(const Tensor& x, Tensor& out) override { cuda::inv_row_norms(x, out); }
  void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset,
                      Tensor& q, Tensor& k, Tensor& v) override {
    cuda::split_qkv_rope(packed, inv_freq, pos_offset, q, k, v);
  }
  void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                           const Tensor& inv_freq, int64_t pos_offset, Tensor& dpacked) override {
    cuda::merge_qkv_rope_grad(dq, dk, dv, inv_freq, pos_offset, dpacked);
  }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         bool causal, Tensor& out, Tensor& lse,
                         const Tensor& alibi_slopes = Tensor()) override {
    for (const Tensor* t : TensorPtrs{&q, &k, &v, &out}) {
      expect_cuda_dtype(*t, q.dtype(), "attention_forward");
    }
    expect_cuda_dtype(lse, DType::f32, "attention_forward (lse)");
    AttentionShape s = attention_shape(q, k, scale, causal);
    s.alibi_slopes = alibi_pointer(alibi_slopes, q, "attention_forward (alibi_slopes)");
    check_attention(cuda::attention_forward(q.raw(), k.raw(), v.raw(), out.raw(), lse.data<float>(),
                                            s, q.dtype(), ctx().stream),
                    "cuda attention_forward");
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, float scale, bool causal,
                          Tensor& dq, Tensor& dk, Tensor& dv,
                          const Tensor& alibi_slopes = Tensor()) override {
    for (const Tensor* t : TensorPtrs{&dout, &q, &k, &v, &out, &dq, &dk, &dv}) {
      expect_cuda_dtype(*t, q.dtype(), "attention_backward");
    }
    expect_cuda_dtype(lse, DType::f32, "attention_backward (lse)");
    AttentionShape s = attention_shape(q, k, scale, causal);
    s.alibi_slopes = alibi_pointer(alibi_slopes, q, "attention_backward (alibi_slopes)");
    const size_t ws_bytes = cuda::attention_backward_workspace_bytes(s, q.dtype());
    Tensor ws = Tensor::empty({static_cast<int64_t>(ws_bytes)}, DType::u8, device());
    check_attention(cuda::attention_backward(dout.raw(), q.raw(), k.raw(), v.raw(), out.raw(),
                                             lse.data<float>(), dq.raw(), dk.raw(), dv.raw(),
                                             ws.raw(), s, q.dtype(), ctx().stream),
                    "cuda attention_backward");
  }

  void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                        float scale, int64_t block, int64_t stride,
                                        int64_t q_offset, Tensor& out, Tensor& lse) override {
    cuda::nsa_compressed_attention_forward(q, kc, vc, scale, block, stride, q_offset, out, lse);
  }
  void nsa_compressed_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& kc,
                                         const Tensor& vc, const Tensor& out, const Tensor& lse,
                                         float scale, int64_t block, int64_t stride,
                                         int64_t q_offset, Tensor& dq, Tensor& dkc,
                                         Tensor& dvc) override {
    cuda::nsa_compressed_attention_backward(dout, q, kc, vc, out, lse, scale, block, stride,
                                            q_offset, dq, dkc, dvc);
  }
  void nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                         int64_t compress_block, int64_t compress_stride, int64_t select_block,
                         int64_t q_offset, Tensor& blocks) override {
    cuda::nsa_select_blocks(q, kc, lse, scale, compress_block, compress_stride, select_block,
                            q_offset, blocks);
  }
  void nsa_sparse_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& blocks, int64_t select_block, int64_t window,
                                    float scale, int64_t q_offset, Tensor& out,
                                    Tensor& lse) override {
    cuda::nsa_sparse_attention_forward(q, k, v, blocks, select_block, window, scale, q_offset, out,
                                       lse);
  }
  void nsa_sparse_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& blocks, const Tensor& out,
                                     const Tensor& lse, int64_t select_block, int64_t window,
                                     float scale, int64_t q_offset, Tensor& dq, Tensor& dk,
                                     Tensor& dv) override {
    cuda::nsa_sparse_attention_backward(dout, q, k, v, blocks, out, lse, select_block, window,
                                        scale, q_offset, dq, dk, dv);
  }
  void nsa_gate_combine_forward(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                                const Tensor& o_win, Tensor& out) override {
    cuda::nsa_gate_combine_forward(gates, o_cmp, o_slc, o_win, out);
  }
  void nsa_gate_combine_backward(const Tensor& dout, const Tensor& gates, const Tensor& o_cmp,
                                 const Tensor& o_slc, const Tensor& o_win, Tensor& dgates,
                                 Tensor& do_cmp, Tensor& do_slc, Tensor& do_win) override {
    cuda::nsa_gate_combine_backward(dout, gates, o_cmp, o_slc, o_win, dgates, do_cmp, do_slc,
                                    do_win);
  }

  // ---- mixture of experts (cuda_moe.cu, cuda_moe_gemm.cu)
  void moe_router_forward(const Tensor& logits, MoeScore score, bool normalize, Tensor& ids,
                          Tensor& weights) override {
    cuda::moe_router_forward(logits, score, normalize, ids, weights);
  }
  void moe_router_backward(const Tensor& dweights, const Tensor& logits, const Tensor& ids,
                           const Tensor& weights, MoeScore score, bool normalize,
                           Tensor& dlogits) override {
    cuda::moe_router_backward(dweights, logits, ids, weights, score, normalize, dlogits);
  }
  void moe_group(const Tensor& ids, int64_t capacity, Tensor& sorted_slot, Tensor& slot_row,
                 Tensor& offsets) override {
    cuda::moe_group(ids, capacity, sorted_slot, slot_row, offsets);
  }
  void moe_gather_forward(const Tensor& x, const Tensor& sorted_slot, int64_t k,
                          Tensor& out) override {
    cuda::moe_gather_forward(x, sorted_slot, k, out);
  }
  void moe_gather_backward(const Tensor& dout, const Tensor& slot_row, Tensor& dx) override {
    cuda::moe_gather_backward(dout, slot_row, dx);
  }
  void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& offsets,
                    Tensor& y) override {
    cuda::grouped_gemm(x, w, trans_w, offsets, y);
  }
  void grouped_quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets,
                            Tensor& y) override {
    cuda::grouped_quant_matmul(x, w, offsets, y);
  }
  void grouped_gemm_dw(const Tensor& dy, const Tensor& x, const Tensor& offsets, Tensor& dw,
                       bool accumulate = false) override {
    cuda::grouped_gemm_dw(dy, x, offsets, dw, accumulate);
  }
  void moe_combine_forward(const Tensor& ys, const Tensor& weights, const Tensor& slot_row,
                           const Tensor& shared, const Tensor& shared_gate,
                           Tensor& out) override {
    cuda::moe_combine_forward(ys, weights, slot_row, shared, shared_gate, out);
  }
  void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& weights,
                            const Tensor& sorted_slot, const Tensor& slot_row,
                            const Tensor& shared, const Tensor& shared_gate, Tensor& dys,
                            Tensor& dweights, Tensor& dshared, Tensor& dgate) override {
    cuda::moe_combine_backward(dout, ys, weights, sorted_slot, slot_row, shared, shared_gate, dys,
                               dweights, dshared, dgate);
  }
  void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                                Tensor& loss) override {
    cuda::moe_balance_loss_forward(logits, ids, score, loss);
  }
  void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits, const Tensor& ids,
                                 MoeScore score, Tensor& dlogits) override {
    cuda::moe_balance_loss_backward(dloss, logits, ids, score, dlogits);
  }
  void moe_z_loss_forward(const Tensor& logits, Tensor& loss) override {
    cuda::moe_z_loss_forward(logits, loss);
  }
  void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits) override {
    cuda::moe_z_loss_backward(dloss, logits, dlogits);
  }

  void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                            const Tensor& last, Tensor& state, Tensor& out) override {
    cuda::mamba_conv1d_forward(x, w, bias, last, state, out);
  }
  void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                             const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias) override {
    cuda::mamba_conv1d_backward(dout, x, w, bias, dx, dw, dbias);
  }
  int64_t mamba_scan_chunk() const override { return cuda::mamba_scan_chunk(); }
  void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log,
                          const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                          const Tensor& delta_bias, const Tensor& last, Tensor& state, Tensor& y,
                          Tensor& checkpoints) override {
    cuda::mamba_scan_forward(u, delta, A_log, B, C, D, z, delta_bias, last, state, y,
                             checkpoints);
  }
  void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                           const Tensor& A_log, const Tensor& B, const Tensor& C, const Tensor& D,
                           const Tensor& z, const Tensor& delta_bias, const Tensor& checkpoints,
                           Tensor& du, Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC,
                           Tensor& dD, Tensor& dz, Tensor& ddelta_bias) override {
    cuda::mamba_scan_backward(dy, u, delta, A_log, B, C, D, z, delta_bias, checkpoints, du,
                              ddelta, dA_log, dB, dC, dD, dz, ddelta_bias);
  }
  void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                    int64_t cols) override {
    cuda::copy_columns(src, src_col, dst, dst_col, cols);
  }

  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cuda::swiglu_forward(gate, up, out);
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup) override {
    cuda::swiglu_backward(dout, gate, up, dgate, dup);
  }
  void swiglu_packed_forward(const Tensor& gate_up, Tensor& out) override {
    cuda::swiglu_packed_forward(gate_up, out);
  }
  void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up,
                              Tensor& dgate_up) override {
    cuda::swiglu_packed_backward(dout, gate_up, dgate_up);
  }
  void gelu_forward(const Tensor& x, Tensor& out) override { cuda::gelu_forward(x, out); }
  void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev, const std::vector<Tensor>& mix,
                             std::vector<Tensor>& outs) override {
    cuda::rwkv_time_mix_forward(x, prev, mix, outs);
  }
  void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x,
                              const Tensor& prev, const std::vector<Tensor>& mix, Tensor& dx,
                              std::vector<Tensor>& dmix) override {
    cuda::rwkv_time_mix_backward(douts, x, prev, mix, dx, dmix);
  }
  void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                        const Tensor& v, const Tensor& last, Tensor& state, Tensor& y) override {
    cuda::rwkv_wkv_forward(time_decay, time_first, k, v, last, state, y);
  }
  void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                         const Tensor& v, const Tensor& y, const Tensor& dy, const Tensor& state0,
                         Tensor& dtime_decay, Tensor& dtime_first, Tensor& dk,
                         Tensor& dv) override {
    cuda::rwkv_wkv_backward(time_decay, time_first, k, v, y, dy, state0, dtime_decay,
                            dtime_first, dk, dv);
  }
  void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out) override {
    cuda::sigmoid_mul_forward(r, y, out);
  }
  void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y, Tensor& dr,
                            Tensor& dy) override {
    cuda::sigmoid_mul_backward(dout, r, y, dr, dy);
  }
  void relu_square_forward(const Tensor& x, Tensor& out) override {
    cuda::relu_square_forward(x, out);
  }
  void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    cuda::relu_square_backward(dout, x, dx);
  }
  // RWKV-6 (cuda_rwkv6.cu)
  void tanh_forward(const Tensor& x, Tensor& out) override { cuda::tanh_forward(x, out); }
  void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx) override {
    cuda::tanh_backward(dout, out, dx);
  }
  void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                         const Tensor& u, int64_t head_size, const Tensor& last, Tensor& state,
                         Tensor& y) override {
    cuda::rwkv6_wkv_forward(r, k, v, w, u, head_size, last, state, y);
  }
  void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                          const Tensor& u, int64_t head_size, const Tensor& dy,
                          const Tensor& state0, Tensor& dr, Tensor& dk, Tensor& dv, Tensor& dw,
                          Tensor& du) override {
    cuda::rwkv6_wkv_backward(r, k, v, w, u, head_size, dy, state0, dr, dk, dv, dw, du);
  }
  void gelu_exact_forward(const Tensor& x, Tensor& out) override {
    cuda::gelu_exact_forward(x, out);
  }
  void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    cuda::gelu_exact_backward(dout, x, dx);
  }
  void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    cuda::gelu_backward(dout, x, dx);
  }

  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                             Tensor& lse) override {
    cuda::cross_entropy_forward(logits, targets, losses, lse);
  }
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              float dloss, Tensor& dlogits) override {
    cuda::cross_entropy_backward(logits, targets, lse, dloss, dlogits);
  }
  void cross_entropy_fused(const Tensor& logits, const Tensor& targets, float dloss,
                           Tensor& losses, Tensor& lse, Tensor& dlogits) override {
    cuda::cross_entropy_fused(logits, targets, dloss, losses, lse, dlogits);
  }

  void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                    const AdamWStep& step) override {
    cuda::adamw_update(param, grad, m, v, step);
  }
  void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m, Tensor& v,
                           const AdamWStep& step) override {
    cuda::adamw_update_master(param, grad, master, m, v, step);
  }
  void adamw_update_many(const std::vector<AdamWTensors>& slots, const AdamWStep& step) override {
    cuda::adamw_update_many(slots, step);
  }

  void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                         Tensor& q, Tensor& k, Tensor& v) override {
    cuda::split_qkv_rope_at(packed, inv_freq, positions, q, k, v);
  }
  void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                           const Tensor& norm_w, float eps, const Tensor& inv_freq,
                           const Tensor& positions, Tensor& q, Tensor& k_cache,
                           Tensor& v_cache) override {
    cuda::mla_decode_prologue(packed, latent, row_map, norm_w, eps, inv_freq, positions, q,
                              k_cache, v_cache);
  }
  void qkv_rope_cache_write(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                            Tensor& q, Tensor& k_cache, Tensor& v_cache) override {
    cuda::qkv_rope_cache_write(packed, inv_freq, positions, q, k_cache, v_cache);
  }
  void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
               Tensor& y) override {
    cuda::rope_at(x, inv_freq, positions, y);
  }
  void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                      Tensor& v_cache) override {
    cuda::kv_cache_write(k, v, positions, k_cache, v_cache);
  }
  void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& positions, float scale, Tensor& out,
                        const Tensor& alibi_slopes = Tensor(),
                        int64_t value_offset = 0) override {
    cuda::attention_cached(q, k_cache, v_cache, positions, scale, out, alibi_slopes,
                           value_offset);
  }
  void argmax_rows(const Tensor& x, Tensor& out) override { cuda::argmax_rows(x, out); }
  void increment_i32(Tensor& x, int32_t delta) override { cuda::increment_i32(x, delta); }
  bool decode_layer_takes(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                          const Tensor& k_cache, const Tensor& v_cache) const override {
    return cuda::decode_layer_enabled() &&
           cuda::decode_layer_takes(x, w, inv_freq, k_cache, v_cache);
  }
  void decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                    const Tensor& positions, Tensor& k_cache, Tensor& v_cache,
                    Tensor& out) override {
    cuda::decode_layer(x, w, inv_freq, positions, k_cache, v_cache, out);
  }
  void decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w,
                     const Tensor& inv_freq, const Tensor& positions, std::span<Tensor> k_caches,
                     std::span<Tensor> v_caches, Tensor& out) override {
    cuda::decode_layers(x, w, inv_freq, positions, k_caches, v_caches, out);
  }
  void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias,
                    Tensor& y) override {
    cuda::quant_matmul(x, w, bias, y);
  }
  bool supports_graphs() const override { return true; }
  Status graph_begin_capture() override;
  Result<GraphHandle> graph_end_capture() override;
  Status graph_replay(GraphHandle graph) override;
  void graph_destroy(GraphHandle graph) override;
  bool supports_read_later() const override { return true; }
  Result<int64_t> read_later(const Tensor& src) override { return cuda::read_later(src); }
  Result<std::vector<uint8_t>> read_wait(int64_t ticket) override {
    return cuda::read_wait(ticket);
  }

  void synchronize() override { check_device_errors(); }
  void profiler_range(bool begin) override {
    check_device_errors();
    if (begin) {
      cudaProfilerStart();
    } else {
      cudaProfilerStop();
    }
  }

 private:
  struct GraphEntry {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    int pool = -1;  // the allocator's private pool of the graph's blocks
  };

  int device_;
  std::mutex graph_mu_;
  std::map<GraphHandle, GraphEntry> graphs_;
  GraphHandle next_graph_ = 1;
  bool capturing_ = false;
  int capture_pool_ = -1;
};

// ---- graphs -----------------------------------------------------------------------
// One capture at a time, on the context's stream, in thread-local mode: a
// call that is not allowed in a capture (a wait for the device, a copy from
// pageable host memory, cudaMalloc outside the allocator's relaxed call) made
// by the capturing thread fails at once and invalidates the capture, which
// graph_end_capture then reports; other threads are unaffected.

constexpr const char* kCaptureHint =
    "nothing between graph_begin_capture and graph_end_capture may wait for the GPU or copy "
    "to or from the host (synchronize, Tensor::to(cpu), reading a result, a GEMM shape's "
    "first-call autotune): run one step eagerly first, then capture";

Status CudaBackend::graph_begin_capture() {
  std::lock_guard<std::mutex> lock(graph_mu_);
  if (capturing_) {
    return make_error("a graph capture is already under way (one at a time)",
                      "cuda graph_begin_capture", "end it with graph_end_capture first");
  }
  Context& c = ctx();
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  EL_CUDA_TRY(cudaStreamIsCapturing(c.stream, &status));
  if (status != cudaStreamCaptureStatusNone) {
    return make_error("the backend's stream is already being captured", "cuda graph_begin_capture");
  }
  const int pool = cuda_allocator().begin_private_pool();
  const cudaError_t rc = cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    cuda_allocator().release_private_pool(pool);
    Error e = cuda_error(rc, "cudaStreamBeginCapture", __FILE__, __LINE__);
    e.what = "could not start a graph capture: " + e.what;
    return e;
  }
  capturing_ = true;
  capture_pool_ = pool;
  return Status::Ok();
}

Result<GraphHandle> CudaBackend::graph_end_capture() {
  std::lock_guard<std::mutex> lock(graph_mu_);
  if (!capturing_) {
    return make_error("graph_end_capture without a capture under way", "cuda graph_end_capture",
                      "call graph_begin_capture first");
  }
  Context& c = ctx();
  cuda_allocator().end_private_pool();
  const int pool = capture_pool_;
  capturing_ = false;
  capture_pool_ = -1;
  cudaGraph_t graph = nullptr;
  cudaError_t rc = cudaStreamEndCapture(c.stream, &graph);
  if (rc != cudaSuccess || graph == nullptr) {
    (void)cudaGetLastError();
    if (graph) (void)cudaGraphDestroy(graph);
    cuda_allocator().release_private_pool(pool);
    Error e = rc != cudaSuccess ? cuda_error(rc, "cudaStreamEndCapture", __FILE__, __LINE__)
                                : make_error("cudaStreamEndCapture returned no graph");
    e.what = "the graph capture failed: " + e.what;
    e.hint = kCaptureHint;
    return e;
  }
  cudaGraphExec_t exec = nullptr;
  const char* call = "cudaGraphInstantiate";
  rc = cudaGraphInstantiate(&exec, graph, 0);
  if (rc == cudaSuccess) {
    // Moves the upload out of the first launch (which a caller times).
    call = "cudaGraphUpload";
    rc = cudaGraphUpload(exec, c.stream);
    if (rc != cudaSuccess) (void)cudaGraphExecDestroy(exec);
  }
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    (void)cudaGraphDestroy(graph);
    cuda_allocator().release_private_pool(pool);
    Error e = cuda_error(rc, call, __FILE__, __LINE__);
    e.what = "the captured graph could not be instantiated: " + e.what;
    return e;
  }
  const GraphHandle h = next_graph_++;
  graphs_[h] = GraphEntry{graph, exec, pool};
  return h;
}

Status CudaBackend::graph_replay(GraphHandle graph) {
  cudaGraphExec_t exec = nullptr;
  {
    std::lock_guard<std::mutex> lock(graph_mu_);
    auto it = graphs_.find(graph);
    if (it == graphs_.end()) {
      return make_error(fmt::format("no graph {} (destroyed, or never captured)", graph),
                        "cuda graph_replay");
    }
    if (capturing_) {
      return make_error(fmt::format("graph {} replayed during a capture", graph),
                        "cuda graph_replay", "end the capture first");
    }
    exec = it->second.exec;
  }
  const cudaError_t rc = cudaGraphLaunch(exec, ctx().stream);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    Error e = cuda_error(rc, "cudaGraphLaunch", __FILE__, __LINE__);
    e.what = fmt::format("replay of graph {} failed: {}", graph, e.what);
    return e;
  }
  return Status::Ok();
}

void CudaBackend::graph_destroy(GraphHandle graph) {
  GraphEntry entry;
  {
    std::lock_guard<std::mutex> lock(graph_mu_);
    auto it = graphs_.find(graph);
    if (it == graphs_.end()) return;
    entry = it->second;
    graphs_.erase(it);
  }
  // A replay still running finishes first (the exec graph is freed after it);
  // the pool's blocks go to the general cache, where only work queued after
  // that replay can get them (one stream).
  if (cudaGraphExecDestroy(entry.exec) != cudaSuccess) (void)cudaGetLastError();
  if (cudaGraphDestroy(entry.graph) != cudaSuccess) (void)cudaGetLastError();
  cuda_allocator().release_private_pool(entry.pool);
}

Status do_register(int device_index) {
  int runtime = 0, driver = 0;
  EL_CUDA_TRY(cudaRuntimeGetVersion(&runtime));
  if (cudaDriverGetVersion(&driver) != cudaSuccess) {
    (void)cudaGetLastError();
    driver = 0;
  }
  if (driver == 0) return no_device_error("no NVIDIA driver is loaded (libcuda.so.1 not found)");
  if (driver / 1000 < runtime / 1000) return driver_too_old_error(driver, runtime);
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    if (rc == cudaErrorInsufficientDriver) return driver_too_old_error(driver, runtime);
    if (rc == cudaErrorNoDevice) return no_device_error("cudaGetDeviceCount found none");
    return no_device_error(cuda_error(rc, "cudaGetDeviceCount", __FILE__, __LINE__).what);
  }
  if (count == 0) return no_device_error("cudaGetDeviceCount found none");
  if (device_index < 0 || device_index >= count) return device_index_error(device_index, count);
  EL_CUDA_TRY(cudaSetDevice(device_index));
  if (const cudaError_t probe = probe_kernel_image(); probe != cudaSuccess) {
    (void)cudaGetLastError();
    EL_TRY_ASSIGN(const DeviceInfo info, device_info(device_index));
    return no_kernel_image_error(info.name, info.cc_major, info.cc_minor);
  }
  EL_TRY(create_context(device_index));
  register_allocator(DeviceKind::cuda, &cuda_allocator());
  el::register_backend(DeviceKind::cuda, new CudaBackend(device_index));
  register_nvml_monitor();
  return Status::Ok();
}

std::mutex g_register_mu;
std::optional<Status> g_outcome;
int g_registered_index = -1;
int g_requested_index = -1;

}  // namespace

// ---- registration -----------------------------------------------------------------

Status register_backend(int device_index) {
  std::lock_guard<std::mutex> lock(g_register_mu);
  if (g_outcome) {
    if (g_outcome->ok() && device_index != g_registered_index) {
      return make_error(fmt::format("cuda:{} requested, but this process already uses cuda:{}",
                                    device_index, g_registered_index),
                        "el::cuda::register_backend", "one GPU per process");
    }
    if (!g_outcome->ok() && device_index != g_requested_index) {
      g_outcome.reset();  // a different index may work (e.g. index out of range before)
    } else {
      return *g_outcome;
    }
  }
  g_requested_index = device_index;
  Status s = do_register(device_index);
  if (s.ok()) {
    g_registered_index = device_index;
  } else if (s.error().where.empty()) {
    Error e = s.error();
    e.where = "el::cuda::register_backend";
    s = e;
  }
  g_outcome = s;
  return s;
}

// ---- device info ------------------------------------------------------------------

Result<DeviceInfo> device_info(int index) {
  cudaDeviceProp p{};
  EL_CUDA_TRY(cudaGetDeviceProperties(&p, index));
  DeviceInfo d;
  d.index = index;
  d.name = p.name;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.sm_count = p.multiProcessorCount;
  d.total_memory_bytes = static_cast<int64_t>(p.totalGlobalMem);
  d.l2_bytes = p.l2CacheSize;
  EL_CUDA_TRY(cudaDriverGetVersion(&d.driver_version));
  EL_CUDA_TRY(cudaRuntimeGetVersion(&d.runtime_version));
  char bus[32] = {};
  EL_CUDA_TRY(cudaDeviceGetPCIBusId(bus, sizeof(bus), index));
  d.pci_bus_id = bus;
  return d;
}

std::string describe(const DeviceInfo& d) {
  return fmt::format("{} (cuda:{}, sm_{}{}, {} SMs, {}, driver CUDA {}, runtime {})", d.name,
                     d.index, d.cc_major, d.cc_minor, d.sm_count,
                     human_bytes(double(d.total_memory_bytes)),
                     cuda_version_string(d.driver_version), cuda_version_string(d.runtime_version));
}

// ---- messages -------------------------------------------------------------------

std::string cuda_version_string(int version) {
  return fmt::format("{}.{}", version / 1000, (version % 1000) / 10);
}

Error no_device_error(const std::string& detail) {
  return make_error(
      detail.empty() ? "no CUDA device found" : fmt::format("no CUDA device found: {}", detail),
      "el::cuda::register_backend",
      "run on a machine with an NVIDIA GPU and driver, or use --device cpu");
}

Error driver_too_old_error(int driver_version, int runtime_version) {
  return make_error(
      fmt::format("driver too old: supports CUDA {}, this build needs {}",
                  cuda_version_string(driver_version), cuda_version_string(runtime_version)),
      "el::cuda::register_backend",
      fmt::format("install an NVIDIA driver for CUDA {} or newer, or use --device cpu",
                  cuda_version_string(runtime_version / 1000 * 1000)));
}

Error device_index_error(int requested, int count) {
  return make_error(
      fmt::format("cuda:{} requested, but {} CUDA device{} found", requested, count,
                  count == 1 ? " was" : "s were"),
      "el::cuda::register_backend",
      fmt::format("use cuda:0{}", count > 1 ? fmt::format("..cuda:{}", count - 1) : ""));
}

Error no_kernel_image_error(const std::string& name, int cc_major, int cc_minor) {
  return make_error(fmt::format("this build has no GPU code for {} (compute capability {}.{})",
                                name, cc_major, cc_minor),
                    "el::cuda::register_backend",
                    fmt::format("rebuild with -DCMAKE_CUDA_ARCHITECTURES={}{} (or \"native\"), or "
                                "use --device cpu",
                                cc_major, cc_minor));
}

// ---- extras -----------------------------------------------------------------------

// (sum_squares_many and cross_entropy_fused are defined in their kernel files.)

EventTimer::EventTimer() {
  (void)ctx();
  cudaEvent_t a = nullptr, b = nullptr;
  EL_CUDA_CHECK(cudaEventCreate(&a));
  EL_CUDA_CHECK(cudaEventCreate(&b));
  start_ = a;
  stop_ = b;
}

EventTimer::~EventTimer() {
  if (start_) (void)cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  if (stop_) (void)cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

void EventTimer::start() {
  EL_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(start_), ctx().stream));
}
void EventTimer::stop() {
  EL_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(stop_), ctx().stream));
}
float EventTimer::elapsed_ms() {
  EL_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0.f;
  EL_CUDA_CHECK(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms;
}

}  // namespace el::cuda
