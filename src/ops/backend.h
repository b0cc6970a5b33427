// backend.h — the kernel interface every device implements.
//
// The op layer (ops/ops.h) validates shapes, allocates outputs, records the
// backward on the tape and then calls one of these kernels on the backend of
// the tensors' device. A backend only does arithmetic on contiguous tensors it
// is handed; it never allocates outputs, never touches the tape, and never
// decides policy. Conventions:
//   * all tensors are contiguous and on this backend's device;
//   * precision: every kernel accepts float tensors stored as f32, bf16 or
//     f16 and computes with f32 accumulation. The op layer hands a kernel one
//     activation dtype for all its float tensors, except that GEMM operands
//     may differ (a bf16 weight times f32 activations) and statistics (rstd,
//     mean, lse, per-row losses) and AdamW state (m, v, master) are always
//     f32. Outputs are rounded to nearest even into their tensor's dtype. The
//     CPU backend reaches this by widening bf16/f16 arguments into f32
//     scratch around its f32 kernels (cpu/cpu_f32_stage.h); a GPU backend
//     may read and write the narrow dtypes directly;
//   * forward kernels overwrite their outputs; backward kernels OVERWRITE their
//     gradient outputs (the op layer accumulates into .grad);
//   * shape letters: N rows, C channels, B batch, T query length, S key length,
//     H query heads, Hkv key/value heads, D head dim, V vocab.
// Adding a kernel: declare it here, implement it in cpu/ (the reference) and
// cuda/, wrap it in ops/, and add it to the op test registry (tests/ops/).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/decode_layer_weights.h"
#include "ops/quant_layout.h"

namespace el {

struct AdamWStep {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled: p -= lr * wd * p
  float grad_scale = 1.0f;    // multiply grads first (clipping / loss-scale undo)
  int64_t step = 1;           // 1-based, for bias correction
};

// One parameter of a multi-tensor AdamW update (Backend::adamw_update_many).
struct AdamWTensors {
  Tensor* param;
  const Tensor* grad;
  Tensor* master;  // nullptr: update param itself (f32 training)
  Tensor* m;
  Tensor* v;
};

// Dropout's keep decision for element i: a splitmix64 hash of (seed, i) whose
// top 24 bits, as a fraction of 2^24, are compared with p. Host and device
// code (the CUDA kernel includes the same arithmetic) agree bit for bit.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f) >= p;
}

// An instantiated graph of a backend (Backend::graph_end_capture); opaque.
using GraphHandle = int64_t;

// How a mixture-of-experts router scores the experts of a token from its
// logits (nn/moe.h): softmax over the experts, or an independent sigmoid each.
enum class MoeScore { softmax, sigmoid };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;

  // ---- memory ---------------------------------------------------------------
  virtual void fill(Tensor& dst, float value) = 0;              // any dtype
  virtual void copy(const Tensor& src, Tensor& dst) = 0;        // same numel; converts dtype

  // ---- GEMM: c[M,N] = alpha * op(a) @ op(b) + beta * c -----------------------
  // a is [M,K] (or [K,M] if trans_a), b is [K,N] (or [N,K] if trans_b), all
  // row-major. a, b and c may each be f32, bf16 or f16 (computed in f32).
  virtual void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                    float alpha, float beta) = 0;

  // ---- elementwise ------------------------------------------------------------
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;  // same shape
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;        // y += alpha * x
  virtual void scale(Tensor& x, float s) = 0;                            // x *= s
  virtual double sum_squares(const Tensor& x) = 0;                       // f64 accumulation
  // Sum of squares over several tensors (the global gradient norm). The
  // default loops over sum_squares; a GPU backend overrides it to reduce all
  // tensors in one pass with one wait instead of one wait per tensor.
  virtual double sum_squares_many(const std::vector<Tensor>& xs) {
    double total = 0;
    for (const Tensor& x : xs) total += sum_squares(x);
    return total;
  }
  // False if any element is NaN or +-inf (true for an empty or integer
  // tensor). The fp16 loss scaler's overflow check: unlike sum_squares it
  // cannot overflow itself, so a large finite gradient is never mistaken for one.
  virtual bool all_finite(const Tensor& x) = 0;

  // ---- adapter arithmetic (LoRA / DoRA, finetune/) ------------------------------
  virtual void mul(const Tensor& a, const Tensor& b, Tensor& out) = 0;  // same shape
  // out[N, C] = x[N, C] * v[C] (+ b[C] when b is defined), v and b broadcast
  // over the rows.
  virtual void mul_lastdim(const Tensor& x, const Tensor& v, const Tensor& b, Tensor& out) = 0;
  // dv[C] = sum over the rows of dy[N, C] * x[N, C] (overwritten; f32 sums).
  virtual void mul_lastdim_grad_v(const Tensor& dy, const Tensor& x, Tensor& dv) = 0;
  // out = x * keep / (1 - p), keep[i] = dropout_keep(seed, i, p) (below): the
  // mask is a pure function of (seed, i), so every backend drops the same
  // elements and the backward re-applies it instead of storing it.
  virtual void dropout(const Tensor& x, float p, uint64_t seed, Tensor& out) = 0;
  // out[N] (f32) = 1 / ||x[n, :]||_2 of x[N, C] (DoRA's weight norm; +inf for
  // an all-zero row, as the division by a zero norm gives).
  virtual void inv_row_norms(const Tensor& x, Tensor& out) = 0;

  // ---- column layouts (ops::gather_columns) ------------------------------------
  // out[N, M] from x[N, C] by a fixed sparse column map in CSR form: out[n, m]
  // = sum of x[n, idx[k]] for k in [offsets[m], offsets[m + 1]) (0 for an
  // empty range; f32 sums in index order). offsets i32 [M + 1], idx i32 [nnz]
  // with 0 <= idx < C. A gather (each range 0 or 1 long: slices, concats,
  // permutations) and its backward (the transposed map, which sums the
  // columns one input fed to several outputs) are this one kernel. x and out
  // share one float dtype. Default: not supported (an Error naming the backend).
  virtual void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx,
                           Tensor& out) {
    (void)x, (void)offsets, (void)idx, (void)out;
    throw Exception(make_error(std::string("backend ") + name() + " has no sum_columns kernel",
                               "Backend::sum_columns", "implement it (cpu/, cuda/)"));
  }

  // ---- embedding: out[N,C] = table[ids[n], :]; ids i32 [N] -------------------
  virtual void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) = 0;
  // dtable[V,C] = scatter-add of dout[N,C] by ids (dtable overwritten).
  virtual void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) = 0;

  // ---- norms over the last dimension of x[N,C] -------------------------------
  // rstd[N] = 1/sqrt(mean(x^2) + eps);  y = x * rstd * w
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                               Tensor& rstd) = 0;
  // dx = dL/dx, plus dx_add when that is defined (the gradient x already had,
  // e.g. the residual stream's; it may alias dx); dw overwritten.
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                const Tensor& rstd, const Tensor& dx_add, Tensor& dx,
                                Tensor& dw) = 0;
  // sum = x + branch (rounded to sum's dtype), then the RMSNorm of sum as
  // above. Default: add, then rmsnorm_forward.
  virtual void add_rmsnorm_forward(const Tensor& x, const Tensor& branch, const Tensor& w,
                                   float eps, Tensor& sum, Tensor& y, Tensor& rstd) {
    add(x, branch, sum);
    rmsnorm_forward(sum, w, eps, y, rstd);
  }
  // mean[N], rstd[N];  y = (x - mean) * rstd * w + b
  virtual void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                 Tensor& y, Tensor& mean, Tensor& rstd) = 0;
  virtual void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                  const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                                  Tensor& db) = 0;

  // ---- rotary position embedding on x[B,T,H,D] (D even) ---------------------
  // "rotate half" convention of Llama/transformers: pairs (i, i + D/2) rotate
  // by angle (pos_offset + t) * inv_freq[i], inv_freq[D/2]. inverse = rotate by
  // the negative angle, which is exactly the backward pass.
  // Partial rotary (GPT-NeoX): inv_freq may hold R/2 < D/2 values (R even);
  // then pairs (i, i + R/2), i < R/2, rotate and dims [R, D) of each head are
  // copied unchanged. This holds for every rope op of the backend (rope,
  // split_qkv_rope, merge_qkv_rope_grad, split_qkv_rope_at,
  // qkv_rope_cache_write, rope_at).
  virtual void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse,
                    Tensor& y) = 0;
  // q, k, v from one packed projection (ops::split_qkv_rope): per position,
  // packed[B,T,H+2*Hkv,D] holds H query heads, Hkv key heads, Hkv value heads.
  // q[B,T,H,D] and k[B,T,Hkv,D] get the rotation above (none when inv_freq
  // is undefined), v[B,T,Hkv,D] is copied.
  virtual void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset,
                              Tensor& q, Tensor& k, Tensor& v) = 0;
  // Its backward: dpacked = [inverse rotation of dq | of dk | dv] per position.
  virtual void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                   const Tensor& inv_freq, int64_t pos_offset,
                                   Tensor& dpacked) = 0;

  // ---- attention ----------------------------------------------------------------
  // q[B,T,H,D], k/v[B,S,Hkv,D], H % Hkv == 0 (head h reads kv head h / (H/Hkv));
  // out[B,T,H,D]; lse[B,H,T] = logsumexp over keys of the scaled scores (f32).
  // causal: query t sees keys s <= t + (S - T) (the queries are the last T
  // positions, as in decode with a KV cache).
  // alibi_slopes (ALiBi, Press et al.): undefined, or f32 [H] on this device;
  // then score(t, s) = scale * q.k + slopes[h] * (s - i), i = t + (S - T) the
  // query's position (the linear bias -slope * distance; a constant per row
  // would not change the softmax, but keeping s - i <= 0 keeps scores small).
  // lse includes the bias. The bias does not depend on q/k, so the backward
  // only recomputes the biased probabilities. Kernels read no slope (one
  // predicated FMA at most) when it is undefined.
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                                 bool causal, Tensor& out, Tensor& lse,
                                 const Tensor& alibi_slopes = Tensor()) = 0;
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  float scale, bool causal, Tensor& dq, Tensor& dk, Tensor& dv,
                                  const Tensor& alibi_slopes = Tensor()) = 0;

  // ---- NSA: native sparse attention (nn/nsa.h, ops::nsa_*) ------------------------
  // q[B,T,H,D]; raw k/v[B,S,Hkv,D]; compressed kc/vc[B,Nc,Hkv,D]; query t sits
  // at position p(t) = q_offset + t (training: 0 with S == T); q_offset + T <= S.
  // lse[B,H,T] f32; a query with no visible key gets out = 0 and lse = -inf.
  // The op layer never calls these with Nc, T or S == 0. Defaults: an
  // Exception naming the backend (a backend without NSA kernels still builds).
  //
  // Compressed branch: compressed token i covers raw positions
  // [i * stride, i * stride + block); query t sees it iff
  // i * stride + block - 1 <= p(t).
  virtual void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc,
                                                const Tensor& vc, float scale, int64_t block,
                                                int64_t stride, int64_t q_offset, Tensor& out,
                                                Tensor& lse) {
    (void)q, (void)kc, (void)vc, (void)scale, (void)block, (void)stride, (void)q_offset, (void)out,
        (void)lse;
    nsa_not_implemented("nsa_compressed_attention_forward");
  }
  virtual void nsa_compressed_attention_backward(const Tensor& dout, const Tensor& q,
                                                 const Tensor& kc, const Tensor& vc,
                                                 const Tensor& out, const Tensor& lse, float scale,
                                                 int64_t block, int64_t stride, int64_t q_offset,
                                                 Tensor& dq, Tensor& dkc, Tensor& dvc) {
    (void)dout, (void)q, (void)kc, (void)vc, (void)out, (void)lse, (void)scale, (void)block,
        (void)stride, (void)q_offset, (void)dq, (void)dkc, (void)dvc;
    nsa_not_implemented("nsa_compressed_attention_backward");
  }
  // Block selection (no gradient). blocks: i32 [B, Hkv, T, n]. With
  // p_cmp[h,t,i] = exp(scale q.kc_i - lse[h,t]) over visible i, block j of
  // select_block positions scores the sum over the heads of kv group g and
  // over the compressed tokens lying inside it (i * stride >= j * sb and
  // i * stride + block <= (j + 1) * sb). The block of p(t) always wins, later
  // blocks never; top n by score, ties to the lower index; each row is
  // written ascending, padded with -1 when fewer than n blocks exist.
  virtual void nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                                 int64_t compress_block, int64_t compress_stride,
                                 int64_t select_block, int64_t q_offset, Tensor& blocks) {
    (void)q, (void)kc, (void)lse, (void)scale, (void)compress_block, (void)compress_stride,
        (void)select_block, (void)q_offset, (void)blocks;
    nsa_not_implemented("nsa_select_blocks");
  }
  // Sparse branch (selection and window alike): query t of head h (kv group
  // g) attends to keys s <= p(t) with s / select_block in blocks[b, g, t, :]
  // (blocks undefined: none) or s > p(t) - window (window 0: none).
  virtual void nsa_sparse_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& blocks, int64_t select_block,
                                            int64_t window, float scale, int64_t q_offset,
                                            Tensor& out, Tensor& lse) {
    (void)q, (void)k, (void)v, (void)blocks, (void)select_block, (void)window, (void)scale,
        (void)q_offset, (void)out, (void)lse;
    nsa_not_implemented("nsa_sparse_attention_forward");
  }
  virtual void nsa_sparse_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& blocks,
                                             const Tensor& out, const Tensor& lse,
                                             int64_t select_block, int64_t window, float scale,
                                             int64_t q_offset, Tensor& dq, Tensor& dk,
                                             Tensor& dv) {
    (void)dout, (void)q, (void)k, (void)v, (void)blocks, (void)out, (void)lse, (void)select_block,
        (void)window, (void)scale, (void)q_offset, (void)dq, (void)dk, (void)dv;
    nsa_not_implemented("nsa_sparse_attention_backward");
  }
  // Gated sum of the branches: gates[B,T,3H] are logits, per head h the
  // three (cmp, slc, win) at 3h, 3h + 1, 3h + 2; out[B,T,H,D] =
  // sigmoid(g_cmp) o_cmp + sigmoid(g_slc) o_slc + sigmoid(g_win) o_win.
  virtual void nsa_gate_combine_forward(const Tensor& gates, const Tensor& o_cmp,
                                        const Tensor& o_slc, const Tensor& o_win, Tensor& out) {
    (void)gates, (void)o_cmp, (void)o_slc, (void)o_win, (void)out;
    nsa_not_implemented("nsa_gate_combine_forward");
  }
  virtual void nsa_gate_combine_backward(const Tensor& dout, const Tensor& gates,
                                         const Tensor& o_cmp, const Tensor& o_slc,
                                         const Tensor& o_win, Tensor& dgates, Tensor& do_cmp,
                                         Tensor& do_slc, Tensor& do_win) {
    (void)dout, (void)gates, (void)o_cmp, (void)o_slc, (void)o_win, (void)dgates, (void)do_cmp,
        (void)do_slc, (void)do_win;
    nsa_not_implemented("nsa_gate_combine_backward");
  }

  // ---- RWKV-4 (nn/rwkv.h, ops::rwkv_*) --------------------------------------------
  // Token shift + time mix: for each j, out[j][b, t, c] = x[b, t, c] * mix[j][c]
  // + xs[b, t, c] * (1 - mix[j][c]) with xs the stream one token back:
  // xs[b, 0] = prev[b] (prev [B, C]; undefined: zeros), xs[b, t] = x[b, t - 1].
  // x[B, T, C], mix: 1 to 3 tensors [C], outs like x. The backward writes
  // dx (both paths: the token itself and as the next token's shifted value)
  // and dmix[j][c] = sum over (b, t) of dout[j] * (x - xs); prev gets none.
  // Defaults: an Exception naming the backend.
  virtual void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev,
                                     const std::vector<Tensor>& mix, std::vector<Tensor>& outs) {
    (void)x, (void)prev, (void)mix, (void)outs;
    rwkv_not_implemented("rwkv_time_mix_forward");
  }
  virtual void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x,
                                      const Tensor& prev, const std::vector<Tensor>& mix,
                                      Tensor& dx, std::vector<Tensor>& dmix) {
    (void)douts, (void)x, (void)prev, (void)mix, (void)dx, (void)dmix;
    rwkv_not_implemented("rwkv_time_mix_backward");
  }
  // WKV-4 over k/v[B, T, C] with per-channel decay w = -exp(time_decay[c]) and
  // bonus u = time_first[c] (time_decay/time_first [C], k's dtype):
  //   y[t] = (a_t + e^(u + k_t) v_t) / (b_t + e^(u + k_t)),
  //   a_{t+1} = e^w a_t + e^(k_t) v_t,  b_{t+1} = e^w b_t + e^(k_t),
  // computed per (b, c) in transformers' stable form: the state is (num, den,
  // max) with a = num e^max, b = den e^max, and each step rescales by the
  // running maximum (transformers' rwkv_linear_attention_cpu, f32 state).
  // state: undefined (a_0 = b_0 = 0), or f32 [B, 3, C] holding num, den, max
  // rows per batch row: read as the initial state and overwritten with the
  // state after step last[b] (last i32 [B] on this device, each in [0, T);
  // undefined: T - 1). The zero state is num = den = 0, max = -1e38.
  virtual void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first,
                                const Tensor& k, const Tensor& v, const Tensor& last,
                                Tensor& state, Tensor& y) {
    (void)time_decay, (void)time_first, (void)k, (void)v, (void)last, (void)state, (void)y;
    rwkv_not_implemented("rwkv_wkv_forward");
  }
  // Gradients of sum(dy * y) for y of rwkv_wkv_forward from `state0` (f32
  // [B, 3, C], or undefined for the zero state): dtime_decay and dtime_first
  // [C] (summed over the batch; dtime_decay includes the initial state's
  // decay), dk and dv [B, T, C]. The state itself gets no gradient.
  virtual void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first,
                                 const Tensor& k, const Tensor& v, const Tensor& y,
                                 const Tensor& dy, const Tensor& state0, Tensor& dtime_decay,
                                 Tensor& dtime_first, Tensor& dk, Tensor& dv) {
    (void)time_decay, (void)time_first, (void)k, (void)v, (void)y, (void)dy, (void)state0,
        (void)dtime_decay, (void)dtime_first, (void)dk, (void)dv;
    rwkv_not_implemented("rwkv_wkv_backward");
  }
  // out = sigmoid(r) * y (RWKV's receptance gate), r and y of one shape;
  // backward: dr = dout * y * s (1 - s), dy = dout * s, s = sigmoid(r).
  virtual void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out) {
    (void)r, (void)y, (void)out;
    rwkv_not_implemented("sigmoid_mul_forward");
  }
  virtual void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y,
                                    Tensor& dr, Tensor& dy) {
    (void)dout, (void)r, (void)y, (void)dr, (void)dy;
    rwkv_not_implemented("sigmoid_mul_backward");
  }
  // out = max(x, 0)^2 (RWKV-4's channel-mix activation); dx = 2 max(x, 0) dout.
  virtual void relu_square_forward(const Tensor& x, Tensor& out) {
    (void)x, (void)out;
    rwkv_not_implemented("relu_square_forward");
  }
  virtual void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
    (void)dout, (void)x, (void)dx;
    rwkv_not_implemented("relu_square_backward");
  }

  // ---- RWKV-6 (nn/rwkv6.h, ops::rwkv6_wkv, ops::tanh_act) ---------------------------
  // out = tanh(x); backward from the output: dx = dout * (1 - out^2).
  virtual void tanh_forward(const Tensor& x, Tensor& out) {
    (void)x, (void)out;
    rwkv_not_implemented("tanh_forward");
  }
  virtual void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx) {
    (void)dout, (void)out, (void)dx;
    rwkv_not_implemented("tanh_backward");
  }
  // WKV-6 over r/k/v/w[B, T, H, N] (stored [B, T, C], C = H N; head h owns
  // channels [h N, (h + 1) N)) with bonus u [C] (u[h N + i] for head h, key
  // dim i), per head a matrix state S [N (key i), N (value j)]:
  //   y_t[j]  = sum_i r_t[i] (u[i] k_t[i] v_t[j] + S_{t-1}[i][j]),
  //   S_t[i][j] = d_t[i] S_{t-1}[i][j] + k_t[i] v_t[j],  d_t = exp(-exp(w_t)),
  // w the raw decay (time_decay + its LoRA; the kernel applies exp(-exp(.))).
  // state: undefined (S_{-1} = 0), or f32 [B, H, N, N] (S[b, h, i, j]): read
  // as S_{-1} and overwritten with S after step last[b] (last i32 [B] on this
  // device, each in [0, T); undefined: T - 1). f32 accumulation.
  virtual void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v,
                                 const Tensor& w, const Tensor& u, int64_t head_size,
                                 const Tensor& last, Tensor& state, Tensor& y) {
    (void)r, (void)k, (void)v, (void)w, (void)u, (void)head_size, (void)last, (void)state,
        (void)y;
    rwkv_not_implemented("rwkv6_wkv_forward");
  }
  // Gradients of sum(dy * y) for y of rwkv6_wkv_forward from `state0`
  // (undefined: zero): dr, dk, dv, dw [B, T, C] (dw w.r.t. the raw decay w)
  // and du [C] summed over the batch. The state gets no gradient.
  virtual void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v,
                                  const Tensor& w, const Tensor& u, int64_t head_size,
                                  const Tensor& dy, const Tensor& state0, Tensor& dr, Tensor& dk,
                                  Tensor& dv, Tensor& dw, Tensor& du) {
    (void)r, (void)k, (void)v, (void)w, (void)u, (void)head_size, (void)dy, (void)state0,
        (void)dr, (void)dk, (void)dv, (void)dw, (void)du;
    rwkv_not_implemented("rwkv6_wkv_backward");
  }

  // ---- Mamba-1 (nn/mamba.h, ops::mamba_*) ------------------------------------------
  // I channels, N states, K conv width. x, u, delta, z, y, out and the
  // gradients of those [B, T, I]; B/C [B, T, N] (the activation dtype);
  // A_log [I, N], D [I], delta_bias [I] of any float dtype (the parameters').
  // Gradients of parameters and of B/C (sums over channels, batch and time)
  // are f32 and overwritten. `last`: undefined, or i32 [B] on this device,
  // row b's last real token (each in [0, T)); undefined means T - 1.
  // Defaults: an Exception naming the backend.
  //
  // Causal depthwise conv over time with SiLU (transformers' conv1d + act):
  //   out[b, t, d] = silu(bias[d] + sum_k w[d, k] x[b, t - K + 1 + k, d]),
  // w [I, K] (the [I, 1, K] parameter), bias [I] or undefined. A time index
  // < 0 reads state[b, K - 1 + index, d] when state (f32 [B, K - 1, I], the
  // generation cache) is defined, else 0; then state is overwritten with the
  // inputs of times last[b] - K + 2 .. last[b] (older ones from the old state).
  virtual void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                                    const Tensor& last, Tensor& state, Tensor& out) {
    (void)x, (void)w, (void)bias, (void)last, (void)state, (void)out;
    mamba_not_implemented("mamba_conv1d_forward");
  }
  // Backward from a zero state (training): dx [B, T, I]; dw [I, K] and
  // dbias [I] f32 (dbias undefined when bias is); the SiLU input recomputed.
  virtual void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                                     const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias) {
    (void)dout, (void)x, (void)w, (void)bias, (void)dx, (void)dw, (void)dbias;
    mamba_not_implemented("mamba_conv1d_backward");
  }
  // Selective scan with Mamba's discretisation, gate and skip fused (what
  // transformers' MambaMixer computes from u = conv output on):
  //   dt = softplus(delta + delta_bias[d])   (torch's: x > 20 -> x)
  //   A[d, n] = -exp(A_log[d, n])
  //   h_t[n] = exp(dt_t A[d, n]) h_{t-1}[n] + dt_t B_t[n] u_t
  //   y_t = (sum_n C_t[n] h_t[n] + D[d] u_t) * silu(z_t)
  // per (b, d), h_{-1} = state[b, d, :] (f32 [B, I, N]) when state is
  // defined, else 0; a defined state is then overwritten with h after step
  // last[b]. Fusing the bias and softplus saves a [B, T, I] pass each way.
  // checkpoints: undefined, or f32 [B, I, ceil(T / L), N] with L =
  // mamba_scan_chunk() > 0: checkpoints[b, d, c] = h before step c L, what
  // the backward restarts from (training; never with a state).
  // mamba_scan_chunk() = 0: this backend's backward needs none.
  virtual int64_t mamba_scan_chunk() const { return 0; }
  virtual void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log,
                                  const Tensor& B, const Tensor& C, const Tensor& D,
                                  const Tensor& z, const Tensor& delta_bias, const Tensor& last,
                                  Tensor& state, Tensor& y, Tensor& checkpoints) {
    (void)u, (void)delta, (void)A_log, (void)B, (void)C, (void)D, (void)z, (void)delta_bias,
        (void)last, (void)state, (void)y, (void)checkpoints;
    mamba_not_implemented("mamba_scan_forward");
  }
  // Gradients of sum(dy * y) from a zero initial state: du, ddelta (w.r.t.
  // the raw delta), dz [B, T, I]; dB, dC [B, T, N], dA_log [I, N], dD and
  // ddelta_bias [I] f32. The states are recomputed (from checkpoints when
  // mamba_scan_chunk() > 0), never read from a [B, T, I, N] buffer.
  virtual void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                                   const Tensor& A_log, const Tensor& B, const Tensor& C,
                                   const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                                   const Tensor& checkpoints, Tensor& du, Tensor& ddelta,
                                   Tensor& dA_log, Tensor& dB, Tensor& dC, Tensor& dD,
                                   Tensor& dz, Tensor& ddelta_bias) {
    (void)dy, (void)u, (void)delta, (void)A_log, (void)B, (void)C, (void)D, (void)z,
        (void)delta_bias, (void)checkpoints, (void)du, (void)ddelta, (void)dA_log, (void)dB,
        (void)dC, (void)dD, (void)dz, (void)ddelta_bias;
    mamba_not_implemented("mamba_scan_backward");
  }
  // dst[n, dst_col + j] = src[n, src_col + j] for j < cols and every row n
  // (src [N, Cs], dst [N, Cd] over their last dims, one dtype): the column
  // split / concat of ops::split_columns (Mamba's in_proj and x_proj outputs).
  virtual void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                            int64_t cols) {
    (void)src, (void)src_col, (void)dst, (void)dst_col, (void)cols;
    mamba_not_implemented("copy_columns");
  }

  // ---- activations --------------------------------------------------------------
  virtual void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) = 0;  // silu(g)*u
  virtual void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up,
                               Tensor& dgate, Tensor& dup) = 0;
  // gate_up[N, 2F]: gate in columns [0, F), up in [F, 2F) (one packed
  // projection); out[N, F] = silu(gate) * up; dgate_up[N, 2F].
  virtual void swiglu_packed_forward(const Tensor& gate_up, Tensor& out) = 0;
  virtual void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up,
                                      Tensor& dgate_up) = 0;
  virtual void gelu_forward(const Tensor& x, Tensor& out) = 0;  // tanh approximation
  virtual void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx) = 0;
  // The erf form 0.5 x (1 + erf(x / sqrt 2)) (transformers' "gelu", GPT-NeoX):
  // differs from the tanh form by up to ~1e-3, too much for a golden check.
  virtual void gelu_exact_forward(const Tensor& x, Tensor& out) = 0;
  virtual void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx) = 0;

  // ---- mixture of experts (nn/moe.h, ops::moe_*, ops::grouped_linear) -------------
  // N tokens, E experts, k choices per token; slot s = n k + j is token n's
  // j-th choice, M = N k slots. Rows of the expert-sorted buffers: expert e
  // owns rows [offsets[e], offsets[e + 1]) (offsets i32 [E + 1], offsets[0]
  // = 0, offsets[E] = rows in use <= M); rows from offsets[E] on are unused.
  // Index tensors are i32 on this device; ops never hand these an N of 0.
  // Defaults: an Exception naming the backend.
  //
  // Router: logits[N, E] -> ids[N, k]: the k largest scores (softmax or
  // sigmoid of the logits; the order of the logits), descending, ties to the
  // lower index; weights f32 [N, k] = the chosen scores, divided by their sum
  // when `normalize`. Backward: dlogits[N, E] from dweights f32 [N, k].
  virtual void moe_router_forward(const Tensor& logits, MoeScore score, bool normalize,
                                  Tensor& ids, Tensor& weights) {
    (void)logits, (void)score, (void)normalize, (void)ids, (void)weights;
    moe_not_implemented("moe_router_forward");
  }
  virtual void moe_router_backward(const Tensor& dweights, const Tensor& logits,
                                   const Tensor& ids, const Tensor& weights, MoeScore score,
                                   bool normalize, Tensor& dlogits) {
    (void)dweights, (void)logits, (void)ids, (void)weights, (void)score, (void)normalize,
        (void)dlogits;
    moe_not_implemented("moe_router_backward");
  }
  // Dropless (capacity 0) or capacity-limited grouping of ids[N, k] (each in
  // [0, E), E = offsets.numel() - 1) by expert. Slots are taken in priority
  // order p = j N + n (every first choice before any second one, earlier
  // tokens first); expert e keeps its first min(count_e, capacity) slots
  // (all when capacity is 0) in that order. sorted_slot[M]: the slot of each
  // row (-1 for unused rows); slot_row[M]: the row of each slot (-1 dropped).
  virtual void moe_group(const Tensor& ids, int64_t capacity, Tensor& sorted_slot,
                         Tensor& slot_row, Tensor& offsets) {
    (void)ids, (void)capacity, (void)sorted_slot, (void)slot_row, (void)offsets;
    moe_not_implemented("moe_group");
  }
  // out[M, C]: row r = x[sorted_slot[r] / k] (x[N, C]), 0 for unused rows.
  // Backward: dx[n] = sum over j of dout[slot_row[n k + j]] (dropped: none).
  virtual void moe_gather_forward(const Tensor& x, const Tensor& sorted_slot, int64_t k,
                                  Tensor& out) {
    (void)x, (void)sorted_slot, (void)k, (void)out;
    moe_not_implemented("moe_gather_forward");
  }
  virtual void moe_gather_backward(const Tensor& dout, const Tensor& slot_row, Tensor& dx) {
    (void)dout, (void)slot_row, (void)dx;
    moe_not_implemented("moe_gather_backward");
  }
  // Grouped GEMM: y[M, O] row r in expert e's rows = x[r] @ op(w[e]) with
  // x[M, K]; trans_w: w[E, O, K] and op = transpose (the forward of
  // ops::grouped_linear); else w[E, K, O] (its dX). Unused rows of y get 0.
  // One launch on a GPU: the per-expert row counts stay on the device.
  virtual void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w,
                            const Tensor& offsets, Tensor& y) {
    (void)x, (void)w, (void)trans_w, (void)offsets, (void)y;
    moe_not_implemented("grouped_gemm");
  }
  // Quantized grouped GEMM (ops::grouped_quant_linear): y[M, N] row r in
  // expert e's rows = x[r] @ dequant(w rows [e N, (e + 1) N))^T, x and y one
  // float dtype, w the E experts stacked [E N, K]; unused rows of y get 0.
  virtual void grouped_quant_matmul(const Tensor& x, const QuantizedWeight& w,
                                    const Tensor& offsets, Tensor& y) {
    (void)x, (void)w, (void)offsets, (void)y;
    moe_not_implemented("grouped_quant_matmul");
  }
  // dw[E, O, K]: dw[e] = dy_e^T @ x_e over expert e's rows (dy[M, O], x[M,
  // K]); 0 for an expert without rows. accumulate: dw[e] += dy_e^T @ x_e
  // instead (the product summed in f32 and added to dw's old value before the
  // store's one rounding; an expert without rows keeps its values), so a later
  // micro-batch's weight gradient needs no separate add over all of dW.
  virtual void grouped_gemm_dw(const Tensor& dy, const Tensor& x, const Tensor& offsets,
                               Tensor& dw, bool accumulate = false) {
    (void)dy, (void)x, (void)offsets, (void)dw, (void)accumulate;
    moe_not_implemented("grouped_gemm_dw");
  }
  // out[N, C] = sum over j of weights[n, j] ys[slot_row[n k + j]] (dropped
  // slots: nothing) + sigmoid(shared_gate[n]) shared[n] when shared is
  // defined (shared[N, C], shared_gate[N, 1]). weights (and dweights) are
  // f32 or ys's dtype. Backward: dys[r] = weights[s] dout[s / k] for s =
  // sorted_slot[r] (0 for unused rows), dweights[N, k] = <dout[n], ys[row]>
  // (0 when dropped), and with a
  // shared expert dshared = sigmoid(g) dout, dgate = sigmoid'(g) <dout, shared>.
  virtual void moe_combine_forward(const Tensor& ys, const Tensor& weights,
                                   const Tensor& slot_row, const Tensor& shared,
                                   const Tensor& shared_gate, Tensor& out) {
    (void)ys, (void)weights, (void)slot_row, (void)shared, (void)shared_gate, (void)out;
    moe_not_implemented("moe_combine_forward");
  }
  virtual void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& weights,
                                    const Tensor& sorted_slot, const Tensor& slot_row,
                                    const Tensor& shared, const Tensor& shared_gate,
                                    Tensor& dys, Tensor& dweights, Tensor& dshared,
                                    Tensor& dgate) {
    (void)dout, (void)ys, (void)weights, (void)sorted_slot, (void)slot_row, (void)shared,
        (void)shared_gate, (void)dys, (void)dweights, (void)dshared, (void)dgate;
    moe_not_implemented("moe_combine_backward");
  }
  // Router losses, f32 [1] outputs on this device (no host round trip);
  // dloss f32 [1] on this device. Balance: E sum_e f_e P_e, f_e = (count of
  // e in ids) / N, P_e = mean over tokens of the score distribution (softmax
  // probabilities, or sigmoid scores divided by their row sum). Z-loss:
  // mean over tokens of logsumexp(logits[n])^2.
  virtual void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                                        Tensor& loss) {
    (void)logits, (void)ids, (void)score, (void)loss;
    moe_not_implemented("moe_balance_loss_forward");
  }
  virtual void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits,
                                         const Tensor& ids, MoeScore score, Tensor& dlogits) {
    (void)dloss, (void)logits, (void)ids, (void)score, (void)dlogits;
    moe_not_implemented("moe_balance_loss_backward");
  }
  virtual void moe_z_loss_forward(const Tensor& logits, Tensor& loss) {
    (void)logits, (void)loss;
    moe_not_implemented("moe_z_loss_forward");
  }
  virtual void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits) {
    (void)dloss, (void)logits, (void)dlogits;
    moe_not_implemented("moe_z_loss_backward");
  }

  // ---- fused log-softmax + cross-entropy --------------------------------------
  // logits[N,V] (any float dtype), targets[N] i32; a target < 0 is ignored (loss 0).
  // losses[N] = lse - logit[target];  lse[N] saved for the backward.
  virtual void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                                     Tensor& lse) = 0;
  // dlogits = (softmax(logits) - onehot(target)) * dloss for kept rows, 0 for ignored.
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets,
                                      const Tensor& lse, float dloss, Tensor& dlogits) = 0;
  // Both at once (the fused classifier): one pass per row, the softmax never
  // stored. dlogits may alias logits. Default: the two calls above.
  virtual void cross_entropy_fused(const Tensor& logits, const Tensor& targets, float dloss,
                                   Tensor& losses, Tensor& lse, Tensor& dlogits) {
    cross_entropy_forward(logits, targets, losses, lse);
    cross_entropy_backward(logits, targets, lse, dloss, dlogits);
  }

  // ---- optimizer ------------------------------------------------------------------
  // AdamW with decoupled weight decay on one parameter; m, v are f32 state.
  // param and grad may be any float dtype (param updated in f32, rounded back).
  virtual void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                            const AdamWStep& step) = 0;
  // Mixed precision: master is the f32 copy of a bf16/f16 (or f32) param.
  // The update above is applied to master (grad of any float dtype,
  // multiplied by grad_scale; weight decay reads master), then
  // param = round_to_nearest_even(master). m, v, master are f32, same numel.
  virtual void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m,
                                   Tensor& v, const AdamWStep& step) = 0;
  // The same update for many parameters sharing one AdamWStep (a GPU does it
  // in a few launches instead of one per tensor). Default: one call each.
  virtual void adamw_update_many(const std::vector<AdamWTensors>& slots, const AdamWStep& step) {
    for (const AdamWTensors& s : slots) {
      if (s.master) {
        adamw_update_master(*s.param, *s.grad, *s.master, *s.m, *s.v, step);
      } else {
        adamw_update(*s.param, *s.grad, *s.m, *s.v, step);
      }
    }
  }

  // ---- inference with a KV cache (nn/kv_cache.h, infer/) -------------------------
  // Caches are k_cache/v_cache[B, Smax, Hkv, D] (the layout of attention's
  // k/v, so a cache row is one position). positions is i32 [B] on this
  // device: for row b, the cache position of its first new token (= tokens
  // already cached for that sequence). Reading positions on the device rather
  // than taking a host offset keeps a decode step free of per-step host
  // arguments (rows may sit at different positions; a step can be replayed
  // as a CUDA graph). The caller guarantees positions[b] + T <= Smax.
  //
  // split_qkv_rope at per-row offsets: q/k rotated by angle
  // (positions[b] + t) * inv_freq[i] (none when inv_freq is undefined).
  virtual void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq,
                                 const Tensor& positions, Tensor& q, Tensor& k, Tensor& v) = 0;
  // split_qkv_rope_at with k and v going straight to cache rows
  // positions[b] + t (converted to the cache's dtype after rounding to the
  // packed dtype, as split + kv_cache_write would): the cached attention path
  // in one kernel instead of three. q[B, T, H, D] gets the rotated queries.
  virtual void qkv_rope_cache_write(const Tensor& packed, const Tensor& inv_freq,
                                    const Tensor& positions, Tensor& q, Tensor& k_cache,
                                    Tensor& v_cache) = 0;
  // ops::mla_decode_prologue (ops.h): packed[B, T, H D + S] -> q[B, T, H, D]
  // rotated, and the normed + rotated latent row written to k_cache (and to
  // v_cache unless it is the same tensor) at positions[b] + t.
  virtual void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                                   const Tensor& norm_w, float eps, const Tensor& inv_freq,
                                   const Tensor& positions, Tensor& q, Tensor& k_cache,
                                   Tensor& v_cache) = 0;
  // rope (forward) of x[B, T, H, D] at per-row offsets; y may alias x.
  virtual void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                       Tensor& y) = 0;
  // k_cache[b, positions[b] + t] = k[b, t] and the same for v, t < T;
  // k/v[B, T, Hkv, D] of any float dtype, converted to the cache's dtype.
  virtual void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions,
                              Tensor& k_cache, Tensor& v_cache) = 0;
  // out[B, T, H, Dv]: query t of row b attends to cache rows
  // s <= positions[b] + t (causal; the T new keys already written), head h
  // reading kv head h / (H / Hkv); softmax(scale * q.k) v in f32, v being
  // columns [value_offset, value_offset + Dv) of the v_cache row (Dv =
  // out.dim(3); ops::attention_cached checks the range). With alibi_slopes
  // (f32 [H], see attention_forward) the score of cache row s gets
  // slopes[h] * (s - (positions[b] + t)).
  virtual void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                const Tensor& positions, float scale, Tensor& out,
                                const Tensor& alibi_slopes = Tensor(),
                                int64_t value_offset = 0) = 0;
  // out[N] (i32) = index of the largest value of row n of x[N, V] (the first
  // one on ties; NaN never wins): greedy decoding without a logits copy.
  virtual void argmax_rows(const Tensor& x, Tensor& out) = 0;
  // x (i32) += delta elementwise: advances positions after a step on the device.
  virtual void increment_i32(Tensor& x, int32_t delta) = 0;
  // One decoder layer of a batch-1 decode step in one call (optional, a GPU
  // fast path; ops::decode_layer falls back to the separate ops): out[1, 1, C]
  // = x + attn + mlp of the residual stream x[1, 1, C], as
  // DecoderBlock::forward_cached computes it, the new token's k/v going to
  // cache row positions[0]; out does not alias x. decode_layer_takes says
  // whether this backend has a kernel for these shapes and dtypes.
  virtual bool decode_layer_takes(const Tensor& x, const DecodeLayerWeights& w,
                                  const Tensor& inv_freq, const Tensor& k_cache,
                                  const Tensor& v_cache) const {
    (void)x, (void)w, (void)inv_freq, (void)k_cache, (void)v_cache;
    return false;
  }
  virtual void decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                            const Tensor& positions, Tensor& k_cache, Tensor& v_cache,
                            Tensor& out) {
    (void)x, (void)w, (void)inv_freq, (void)positions, (void)k_cache, (void)v_cache, (void)out;
    throw Exception(make_error(std::string("backend ") + name() + " has no decode_layer kernel",
                               "Backend::decode_layer", "check decode_layer_takes() first"));
  }
  // The layers of a batch-1 decode step (layer i: w[i], caches k_caches[i] /
  // v_caches[i]) in as few calls as the backend can; out = the last layer's
  // output. Every layer must pass decode_layer_takes. The default calls
  // decode_layer once a layer (backend.cpp).
  virtual void decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w,
                             const Tensor& inv_freq, const Tensor& positions,
                             std::span<Tensor> k_caches, std::span<Tensor> v_caches, Tensor& out);

  // ---- weight-only quantized matmul (quant/, ops/quant_layout.h) ------------------
  // y[M, N] = x[M, K] @ dequant(w)^T (+ bias[N] when defined); x, y and bias
  // f32, bf16 or f16 (one dtype), f32 accumulation. A GPU picks a GEMV for
  // small M (decode) and a tiled GEMM for large M (prefill), both
  // dequantising in registers.
  virtual void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias,
                            Tensor& y) = 0;

  // ---- graphs: record a sequence of kernels once, replay it with one launch ------
  // (infer/decode_graph.h). Between graph_begin_capture() and
  // graph_end_capture() the calling thread's kernels and device copies are
  // recorded, not run, and its allocations come from a private pool that
  // stays reserved for the graph (core/allocator.h). Nothing in the captured
  // region may wait for the device or copy to or from the host. A replay
  // re-runs the recorded work on the same addresses, queued after all work
  // queued before it. Defaults: no graphs (CPU), every call an Error.
  virtual bool supports_graphs() const { return false; }
  virtual Status graph_begin_capture() { return no_graphs_error("graph_begin_capture"); }
  // Ends the capture (also after a failure inside it, which it reports)
  // and returns the ready-to-launch graph.
  virtual Result<GraphHandle> graph_end_capture() { return no_graphs_error("graph_end_capture"); }
  virtual Status graph_replay(GraphHandle graph) {
    (void)graph;
    return no_graphs_error("graph_replay");
  }
  // Frees the graph and releases its pool; unknown handles are ignored.
  virtual void graph_destroy(GraphHandle graph) { (void)graph; }

  // ---- small reads that do not wait for later work ---------------------------------
  // read_later queues a copy of `src` (on this backend, at most kReadLaterBytes)
  // to host memory behind the work queued so far and returns a ticket at once;
  // read_wait(ticket) waits for that copy alone, not for work queued after it,
  // and returns its bytes (or a device error recorded before it). Each ticket
  // is read once; at most kReadLaterSlots are outstanding. So a decode loop
  // queues step s + 1 before it reads step s's tokens (infer/generator.cpp).
  // Defaults: none (CPU work is never queued), every call an Error.
  static constexpr int64_t kReadLaterBytes = 4096;
  static constexpr int kReadLaterSlots = 4;
  virtual bool supports_read_later() const { return false; }
  virtual Result<int64_t> read_later(const Tensor& src);
  virtual Result<std::vector<uint8_t>> read_wait(int64_t ticket);

  // Waits for queued work (GPU); no-op on CPU. Timers call this before reading clocks.
  virtual void synchronize() {}
  // Brackets the region an external profiler records (ncu/nsys with
  // --profile-from-start off); no-op where there is none.
  virtual void profiler_range(bool begin) { (void)begin; }

 private:
  // Each throws "<family>: <call> is not implemented on <backend>" (backend.cpp).
  [[noreturn]] void mamba_not_implemented(const char* call) const;
  [[noreturn]] void moe_not_implemented(const char* call) const;
  [[noreturn]] void nsa_not_implemented(const char* call) const;
  [[noreturn]] void rwkv_not_implemented(const char* call) const;
  Error no_graphs_error(const char* call) const {
    // (string concatenation, not fmt: nvcc compiles this header too)
    return make_error(std::string("backend ") + name() + " has no graphs (" + call +
                          " is not supported)",
                      std::string(name()) + " backend",
                      "run the steps eagerly (check supports_graphs() first)");
  }
};

// The backend for a device: CPU always; CUDA once registered by the CUDA build.
Result<Backend*> try_backend_for(Device device);
Backend& backend_for(Device device);  // throws el::Exception if missing
void register_backend(DeviceKind kind, Backend* backend);

}  // namespace el
