// cpu_backend.cpp — CpuBackend: the Backend of DeviceKind::cpu.
//
// The reference backend: every kernel in f32 on the host, GEMM through
// OpenBLAS, the rest in cpu_*.cpp with OpenMP over rows. This file only
// forwards each virtual to its kernel in cpu_kernels.h, through an F32Stage
// (cpu_f32_stage.h) that widens bf16/f16 arguments to f32 scratch and rounds
// the outputs back, so every kernel accepts every float dtype.
#include "cpu/cpu_f32_stage.h"
#include "cpu/cpu_kernels.h"

namespace el {
namespace {

using cpu::F32Stage;

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  const char* name() const override { return "cpu"; }

  // fill/copy handle every dtype themselves.
  void fill(Tensor& dst, float value) override { cpu::fill(dst, value); }
  void copy(const Tensor& src, Tensor& dst) override { cpu::copy(src, dst); }

  void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) override {
    F32Stage s;
    // beta == 0 never reads c (BLAS semantics), so its old values need no widening.
    cpu::gemm(s.in(a), trans_a, s.in(b), trans_b, beta == 0.f ? s.out(c) : s.inout(c), alpha,
              beta);
    s.commit();
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override {
    F32Stage s;
    cpu::add(s.in(a), s.in(b), s.out(out));
    s.commit();
  }
  void axpy(float alpha, const Tensor& x, Tensor& y) override {
    F32Stage s;
    cpu::axpy(alpha, s.in(x), s.inout(y));
    s.commit();
  }
  void scale(Tensor& x, float sc) override {
    F32Stage s;
    cpu::scale(s.inout(x), sc);
    s.commit();
  }
  double sum_squares(const Tensor& x) override {
    F32Stage s;
    return cpu::sum_squares(s.in(x));
  }
  bool all_finite(const Tensor& x) override { return cpu::all_finite(x); }  // reads any dtype

  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) override {
    F32Stage s;
    cpu::embedding_forward(s.in(ids), s.in(table), s.out(out));
    s.commit();
  }
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override {
    F32Stage s;
    cpu::embedding_backward(s.in(ids), s.in(dout), s.out(dtable));
    s.commit();
  }

  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                       Tensor& rstd) override {
    F32Stage s;
    cpu::rmsnorm_forward(s.in(x), s.in(w), eps, s.out(y), s.out(rstd));
    s.commit();
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dx_add, Tensor& dx, Tensor& dw) override {
    if (dx_add.defined()) {
      // dx_add may alias dx: compute into a temporary, then add.
      Tensor own = Tensor::empty(dx.shape(), dx.dtype(), dx.device());
      rmsnorm_backward(dy, x, w, rstd, Tensor(), own, dw);
      add(own, dx_add, dx);
      return;
    }
    F32Stage s;
    cpu::rmsnorm_backward(s.in(dy), s.in(x), s.in(w), s.in(rstd), s.out(dx), s.out(dw));
    s.commit();
  }
  void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                         Tensor& mean, Tensor& rstd) override {
    F32Stage s;
    cpu::layernorm_forward(s.in(x), s.in(w), s.in(b), eps, s.out(y), s.out(mean), s.out(rstd));
    s.commit();
  }
  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                          const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) override {
    F32Stage s;
    cpu::layernorm_backward(s.in(dy), s.in(x), s.in(w), s.in(mean), s.in(rstd), s.out(dx),
                            s.out(dw), s.out(db));
    s.commit();
  }

  void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse,
            Tensor& y) override {
    F32Stage s;
    cpu::rope(s.in(x), s.in(inv_freq), pos_offset, inverse, s.out(y));
    s.commit();
  }

  void mul(const Tensor& a, const Tensor& b, Tensor& out) override {
    F32Stage s;
    cpu::mul(s.in(a), s.in(b), s.out(out));
    s.commit();
  }
  void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out) override {
    F32Stage s;
    cpu::mul_lastdim(s.in(x), s.in(v), s.in(b), s.out(out));
    s.commit();
  }
  void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx,
                   Tensor& out) override {
    F32Stage s;
    cpu::sum_columns(s.in(x), offsets, idx, s.out(out));
    s.commit();
  }
  void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv) override {
    F32Stage s;
    cpu::mul_lastdim_grad_v(s.in(dy), s.in(x), s.out(dv));
    s.commit();
  }
  void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out) override {
    F32Stage s;
    cpu::dropout(s.in(x), p, seed, s.out(out));
    s.commit();
  }

  void inv_row_norms(const Tensor& x, Tensor& out) override {
    F32Stage s;
    cpu::inv_row_norms(s.in(x), s.out(out));
    s.commit();
  }
  void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                         Tensor& q, Tensor& k, Tensor& v) override {
    F32Stage s;
    cpu::split_qkv_rope_at(s.in(packed), s.in(inv_freq), positions, s.out(q), s.out(k), s.out(v));
    s.commit();
  }
  // The reference is the composition the fused CUDA kernel replaces.
  void qkv_rope_cache_write(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                            Tensor& q, Tensor& k_cache, Tensor& v_cache) override {
    const Shape ks{q.dim(0), q.dim(1), k_cache.dim(2), q.dim(3)};
    Tensor k = Tensor::empty(ks, packed.dtype()), v = Tensor::empty(ks, packed.dtype());
    split_qkv_rope_at(packed, inv_freq, positions, q, k, v);
    kv_cache_write(k, v, positions, k_cache, v_cache);
  }
  void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                           const Tensor& norm_w, float eps, const Tensor& inv_freq,
                           const Tensor& positions, Tensor& q, Tensor& k_cache,
                           Tensor& v_cache) override {
    cpu::mla_decode_prologue(packed, latent, row_map, norm_w, eps, inv_freq, positions, q,
                             k_cache, v_cache);  // any float dtypes, row by row
  }
  void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
               Tensor& y) override {
    F32Stage s;
    cpu::rope_at(s.in(x), s.in(inv_freq), positions, s.out(y));
    s.commit();
  }
  void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                      Tensor& v_cache) override {
    cpu::kv_cache_write(k, v, positions, k_cache, v_cache);  // any dtypes, row by row
  }
  void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& positions, float scale, Tensor& out,
                        const Tensor& alibi_slopes = Tensor(),
                        int64_t value_offset = 0) override {
    F32Stage s;
    cpu::attention_cached(s.in(q), k_cache, v_cache, positions, scale, s.out(out), alibi_slopes,
                          value_offset);
    s.commit();
  }
  void argmax_rows(const Tensor& x, Tensor& out) override { cpu::argmax_rows(x, out); }
  void increment_i32(Tensor& x, int32_t delta) override { cpu::increment_i32(x, delta); }
  void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias,
                    Tensor& y) override {
    F32Stage s;
    cpu::quant_matmul(s.in(x), w, s.in(bias), s.out(y));
    s.commit();
  }
  void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset,
                      Tensor& q, Tensor& k, Tensor& v) override {
    F32Stage s;
    cpu::split_qkv_rope(s.in(packed), s.in(inv_freq), pos_offset, s.out(q), s.out(k), s.out(v));
    s.commit();
  }
  void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                           const Tensor& inv_freq, int64_t pos_offset, Tensor& dpacked) override {
    F32Stage s;
    cpu::merge_qkv_rope_grad(s.in(dq), s.in(dk), s.in(dv), s.in(inv_freq), pos_offset,
                             s.out(dpacked));
    s.commit();
  }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         bool causal, Tensor& out, Tensor& lse,
                         const Tensor& alibi_slopes = Tensor()) override {
    F32Stage s;
    cpu::attention_forward(s.in(q), s.in(k), s.in(v), scale, causal, s.out(out), s.out(lse),
                           alibi_slopes);
    s.commit();
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, float scale, bool causal,
                          Tensor& dq, Tensor& dk, Tensor& dv,
                          const Tensor& alibi_slopes = Tensor()) override {
    F32Stage s;
    cpu::attention_backward(s.in(dout), s.in(q), s.in(k), s.in(v), s.in(out), s.in(lse), scale,
                            causal, s.out(dq), s.out(dk), s.out(dv), alibi_slopes);
    s.commit();
  }

  void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                        float scale, int64_t block, int64_t stride,
                                        int64_t q_offset, Tensor& out, Tensor& lse) override {
    F32Stage s;
    cpu::nsa_compressed_attention_forward(s.in(q), s.in(kc), s.in(vc), scale, block, stride,
                                          q_offset, s.out(out), s.out(lse));
    s.commit();
  }
  void nsa_compressed_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& kc,
                                         const Tensor& vc, const Tensor& out, const Tensor& lse,
                                         float scale, int64_t block, int64_t stride,
                                         int64_t q_offset, Tensor& dq, Tensor& dkc,
                                         Tensor& dvc) override {
    F32Stage s;
    cpu::nsa_compressed_attention_backward(s.in(dout), s.in(q), s.in(kc), s.in(vc), s.in(out),
                                           s.in(lse), scale, block, stride, q_offset, s.out(dq),
                                           s.out(dkc), s.out(dvc));
    s.commit();
  }
  void nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                         int64_t compress_block, int64_t compress_stride, int64_t select_block,
                         int64_t q_offset, Tensor& blocks) override {
    F32Stage s;
    cpu::nsa_select_blocks(s.in(q), s.in(kc), s.in(lse), scale, compress_block, compress_stride,
                           select_block, q_offset, blocks);
  }
  void nsa_sparse_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& blocks, int64_t select_block, int64_t window,
                                    float scale, int64_t q_offset, Tensor& out,
                                    Tensor& lse) override {
    F32Stage s;
    cpu::nsa_sparse_attention_forward(s.in(q), s.in(k), s.in(v), blocks, select_block, window,
                                      scale, q_offset, s.out(out), s.out(lse));
    s.commit();
  }
  void nsa_sparse_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& blocks, const Tensor& out,
                                     const Tensor& lse, int64_t select_block, int64_t window,
                                     float scale, int64_t q_offset, Tensor& dq, Tensor& dk,
                                     Tensor& dv) override {
    F32Stage s;
    cpu::nsa_sparse_attention_backward(s.in(dout), s.in(q), s.in(k), s.in(v), blocks, s.in(out),
                                       s.in(lse), select_block, window, scale, q_offset,
                                       s.out(dq), s.out(dk), s.out(dv));
    s.commit();
  }
  void nsa_gate_combine_forward(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                                const Tensor& o_win, Tensor& out) override {
    F32Stage s;
    cpu::nsa_gate_combine_forward(s.in(gates), s.in(o_cmp), s.in(o_slc), s.in(o_win),
                                  s.out(out));
    s.commit();
  }
  void nsa_gate_combine_backward(const Tensor& dout, const Tensor& gates, const Tensor& o_cmp,
                                 const Tensor& o_slc, const Tensor& o_win, Tensor& dgates,
                                 Tensor& do_cmp, Tensor& do_slc, Tensor& do_win) override {
    F32Stage s;
    cpu::nsa_gate_combine_backward(s.in(dout), s.in(gates), s.in(o_cmp), s.in(o_slc),
                                   s.in(o_win), s.out(dgates), s.out(do_cmp), s.out(do_slc),
                                   s.out(do_win));
    s.commit();
  }

  void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                            const Tensor& last, Tensor& state, Tensor& out) override {
    F32Stage s;
    cpu::mamba_conv1d_forward(s.in(x), s.in(w), s.in(bias), last, state, s.out(out));
    s.commit();
  }
  void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                             const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias) override {
    F32Stage s;
    cpu::mamba_conv1d_backward(s.in(dout), s.in(x), s.in(w), s.in(bias), s.out(dx), dw, dbias);
    s.commit();
  }
  void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log,
                          const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                          const Tensor& delta_bias, const Tensor& last, Tensor& state, Tensor& y,
                          Tensor& checkpoints) override {
    F32Stage s;
    cpu::mamba_scan_forward(s.in(u), s.in(delta), s.in(A_log), s.in(B), s.in(C), s.in(D), s.in(z),
                            s.in(delta_bias), last, state, s.out(y), checkpoints);
    s.commit();
  }
  void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                           const Tensor& A_log, const Tensor& B, const Tensor& C, const Tensor& D,
                           const Tensor& z, const Tensor& delta_bias, const Tensor& checkpoints,
                           Tensor& du, Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC,
                           Tensor& dD, Tensor& dz, Tensor& ddelta_bias) override {
    // Two stages: up to 9 narrow inputs and 3 narrow outputs (the parameter
    // and B/C gradients are f32 by contract).
    F32Stage in, out;
    cpu::mamba_scan_backward(in.in(dy), in.in(u), in.in(delta), in.in(A_log), in.in(B), in.in(C),
                             in.in(D), in.in(z), in.in(delta_bias), checkpoints, out.out(du),
                             out.out(ddelta), dA_log, dB, dC, dD, out.out(dz), ddelta_bias);
    out.commit();
  }
  void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                    int64_t cols) override {
    cpu::copy_columns(src, src_col, dst, dst_col, cols);  // any dtype: bytes are copied
  }

  void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev, const std::vector<Tensor>& mix,
                             std::vector<Tensor>& outs) override {
    F32Stage s;
    std::vector<Tensor> m, o;
    for (const Tensor& t : mix) m.push_back(s.in(t));
    for (Tensor& t : outs) o.push_back(s.out(t));
    cpu::rwkv_time_mix_forward(s.in(x), s.in(prev), m, o);
    s.commit();
  }
  void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x,
                              const Tensor& prev, const std::vector<Tensor>& mix, Tensor& dx,
                              std::vector<Tensor>& dmix) override {
    F32Stage s;
    std::vector<Tensor> g, m, dm;
    for (const Tensor& t : douts) g.push_back(s.in(t));
    for (const Tensor& t : mix) m.push_back(s.in(t));
    for (Tensor& t : dmix) dm.push_back(s.out(t));
    cpu::rwkv_time_mix_backward(g, s.in(x), s.in(prev), m, s.out(dx), dm);
    s.commit();
  }
  void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                        const Tensor& v, const Tensor& last, Tensor& state, Tensor& y) override {
    F32Stage s;
    cpu::rwkv_wkv_forward(s.in(time_decay), s.in(time_first), s.in(k), s.in(v), last, state,
                          s.out(y));
    s.commit();
  }
  void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                         const Tensor& v, const Tensor& y, const Tensor& dy, const Tensor& state0,
                         Tensor& dtime_decay, Tensor& dtime_first, Tensor& dk,
                         Tensor& dv) override {
    F32Stage s;
    cpu::rwkv_wkv_backward(s.in(time_decay), s.in(time_first), s.in(k), s.in(v), s.in(y),
                           s.in(dy), state0, s.out(dtime_decay), s.out(dtime_first), s.out(dk),
                           s.out(dv));
    s.commit();
  }
  void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out) override {
    F32Stage s;
    cpu::sigmoid_mul_forward(s.in(r), s.in(y), s.out(out));
    s.commit();
  }
  void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y, Tensor& dr,
                            Tensor& dy) override {
    F32Stage s;
    cpu::sigmoid_mul_backward(s.in(dout), s.in(r), s.in(y), s.out(dr), s.out(dy));
    s.commit();
  }
  void relu_square_forward(const Tensor& x, Tensor& out) override {
    F32Stage s;
    cpu::relu_square_forward(s.in(x), s.out(out));
    s.commit();
  }
  void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    F32Stage s;
    cpu::relu_square_backward(s.in(dout), s.in(x), s.out(dx));
    s.commit();
  }
  // RWKV-6 (cpu_rwkv6.cpp)
  void tanh_forward(const Tensor& x, Tensor& out) override {
    F32Stage s;
    cpu::tanh_forward(s.in(x), s.out(out));
    s.commit();
  }
  void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx) override {
    F32Stage s;
    cpu::tanh_backward(s.in(dout), s.in(out), s.out(dx));
    s.commit();
  }
  void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                         const Tensor& u, int64_t head_size, const Tensor& last, Tensor& state,
                         Tensor& y) override {
    F32Stage s;
    cpu::rwkv6_wkv_forward(s.in(r), s.in(k), s.in(v), s.in(w), s.in(u), head_size, last, state,
                           s.out(y));
    s.commit();
  }
  void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                          const Tensor& u, int64_t head_size, const Tensor& dy,
                          const Tensor& state0, Tensor& dr, Tensor& dk, Tensor& dv, Tensor& dw,
                          Tensor& du) override {
    F32Stage in, out;  // 6 narrow inputs, 5 narrow outputs: two stages
    cpu::rwkv6_wkv_backward(in.in(r), in.in(k), in.in(v), in.in(w), in.in(u), head_size,
                            in.in(dy), state0, out.out(dr), out.out(dk), out.out(dv),
                            out.out(dw), out.out(du));
    out.commit();
  }

  // ---- mixture of experts (cpu_moe.cpp)
  void moe_router_forward(const Tensor& logits, MoeScore score, bool normalize, Tensor& ids,
                          Tensor& weights) override {
    F32Stage s;
    cpu::moe_router_forward(s.in(logits), score, normalize, ids, weights);
  }
  void moe_router_backward(const Tensor& dweights, const Tensor& logits, const Tensor& ids,
                           const Tensor& weights, MoeScore score, bool normalize,
                           Tensor& dlogits) override {
    F32Stage s;
    cpu::moe_router_backward(dweights, s.in(logits), ids, weights, score, normalize,
                             s.out(dlogits));
    s.commit();
  }
  void moe_group(const Tensor& ids, int64_t capacity, Tensor& sorted_slot, Tensor& slot_row,
                 Tensor& offsets) override {
    cpu::moe_group(ids, capacity, sorted_slot, slot_row, offsets);
  }
  void moe_gather_forward(const Tensor& x, const Tensor& sorted_slot, int64_t k,
                          Tensor& out) override {
    F32Stage s;
    cpu::moe_gather_forward(s.in(x), sorted_slot, k, s.out(out));
    s.commit();
  }
  void moe_gather_backward(const Tensor& dout, const Tensor& slot_row, Tensor& dx) override {
    F32Stage s;
    cpu::moe_gather_backward(s.in(dout), slot_row, s.out(dx));
    s.commit();
  }
  void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& offsets,
                    Tensor& y) override {
    F32Stage s;
    cpu::grouped_gemm(s.in(x), s.in(w), trans_w, offsets, s.out(y));
    s.commit();
  }
  void grouped_quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets,
                            Tensor& y) override {
    F32Stage s;
    cpu::grouped_quant_matmul(s.in(x), w, offsets, s.out(y));
    s.commit();
  }
  void grouped_gemm_dw(const Tensor& dy, const Tensor& x, const Tensor& offsets, Tensor& dw,
                       bool accumulate = false) override {
    F32Stage s;
    cpu::grouped_gemm_dw(s.in(dy), s.in(x), offsets, accumulate ? s.inout(dw) : s.out(dw),
                         accumulate);
    s.commit();
  }
  void moe_combine_forward(const Tensor& ys, const Tensor& weights, const Tensor& slot_row,
                           const Tensor& shared, const Tensor& shared_gate,
                           Tensor& out) override {
    F32Stage s;
    cpu::moe_combine_forward(s.in(ys), s.in(weights), slot_row, s.in(shared), s.in(shared_gate),
                             s.out(out));
    s.commit();
  }
  void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& weights,
                            const Tensor& sorted_slot, const Tensor& slot_row,
                            const Tensor& shared, const Tensor& shared_gate, Tensor& dys,
                            Tensor& dweights, Tensor& dshared, Tensor& dgate) override {
    F32Stage s;
    cpu::moe_combine_backward(s.in(dout), s.in(ys), s.in(weights), sorted_slot, slot_row,
                              s.in(shared), s.in(shared_gate), s.out(dys), s.out(dweights),
                              s.out(dshared), s.out(dgate));
    s.commit();
  }
  void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                                Tensor& loss) override {
    F32Stage s;
    cpu::moe_balance_loss_forward(s.in(logits), ids, score, loss);
  }
  void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits, const Tensor& ids,
                                 MoeScore score, Tensor& dlogits) override {
    F32Stage s;
    cpu::moe_balance_loss_backward(dloss, s.in(logits), ids, score, s.out(dlogits));
    s.commit();
  }
  void moe_z_loss_forward(const Tensor& logits, Tensor& loss) override {
    F32Stage s;
    cpu::moe_z_loss_forward(s.in(logits), loss);
  }
  void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits) override {
    F32Stage s;
    cpu::moe_z_loss_backward(dloss, s.in(logits), s.out(dlogits));
    s.commit();
  }

  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override {
    F32Stage s;
    cpu::swiglu_forward(s.in(gate), s.in(up), s.out(out));
    s.commit();
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup) override {
    F32Stage s;
    cpu::swiglu_backward(s.in(dout), s.in(gate), s.in(up), s.out(dgate), s.out(dup));
    s.commit();
  }
  void swiglu_packed_forward(const Tensor& gate_up, Tensor& out) override {
    F32Stage s;
    cpu::swiglu_packed_forward(s.in(gate_up), s.out(out));
    s.commit();
  }
  void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up,
                              Tensor& dgate_up) override {
    F32Stage s;
    cpu::swiglu_packed_backward(s.in(dout), s.in(gate_up), s.out(dgate_up));
    s.commit();
  }
  void gelu_forward(const Tensor& x, Tensor& out) override {
    F32Stage s;
    cpu::gelu_forward(s.in(x), s.out(out));
    s.commit();
  }
  void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    F32Stage s;
    cpu::gelu_backward(s.in(dout), s.in(x), s.out(dx));
    s.commit();
  }
  void gelu_exact_forward(const Tensor& x, Tensor& out) override {
    F32Stage s;
    cpu::gelu_exact_forward(s.in(x), s.out(out));
    s.commit();
  }
  void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    F32Stage s;
    cpu::gelu_exact_backward(s.in(dout), s.in(x), s.out(dx));
    s.commit();
  }

  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                             Tensor& lse) override {
    F32Stage s;
    cpu::cross_entropy_forward(s.in(logits), s.in(targets), s.out(losses), s.out(lse));
    s.commit();
  }
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              float dloss, Tensor& dlogits) override {
    F32Stage s;
    cpu::cross_entropy_backward(s.in(logits), s.in(targets), s.in(lse), dloss, s.out(dlogits));
    s.commit();
  }

  // The AdamW kernels read and write every float dtype themselves (m, v and
  // master are f32 by contract), converting element by element.
  void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                    const AdamWStep& step) override {
    cpu::adamw_update(param, grad, m, v, step);
  }
  void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m,
                           Tensor& v, const AdamWStep& step) override {
    cpu::adamw_update_master(param, grad, master, m, v, step);
  }
};

}  // namespace

namespace cpu {

void expect_dtype(const Tensor& t, DType want, const char* what) {
  EL_ENSURE(t.defined(), "cpu {}: tensor is undefined", what);
  EL_ENSURE(t.device().is_cpu(), "cpu {}: tensor is on {}, expected cpu", what, t.device().str());
  EL_ENSURE(t.dtype() == want, "cpu {}: dtype {} {}, expected {}", what, dtype_name(t.dtype()),
            shape_str(t.shape()), dtype_name(want));
  EL_ENSURE(t.is_contiguous(), "cpu {}: tensor {} is not contiguous", what, shape_str(t.shape()));
}

void expect_f32(const Tensor& t, const char* what) { expect_dtype(t, DType::f32, what); }

}  // namespace cpu

// Declared in ops/backend.cpp; one instance for the process, never freed
// (tensors may be destroyed during static destruction).
Backend* make_cpu_backend() { return new CpuBackend(); }

}  // namespace el
