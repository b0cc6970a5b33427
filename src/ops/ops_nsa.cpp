// ops_nsa.cpp — the NSA (native sparse attention) ops: block unfolding for
// the compression, the compressed branch, block selection, the sparse
// (selected blocks / sliding window) branch and the gated sum. Contracts in
// ops/ops.h and ops/backend.h ("NSA"); the layer that uses them is nn/nsa.h.
#include <cmath>
#include <limits>
#include <vector>

#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_dtype;
using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::desc;
using detail::empty_like;

namespace {

// Compressed tokens of a sequence of s positions (complete blocks only).
int64_t compressed_count(int64_t s, int64_t block, int64_t stride) {
  return s >= block ? (s - block) / stride + 1 : 0;
}

float default_scale(float scale, int64_t d) {
  return scale > 0.f ? scale : 1.f / std::sqrt(static_cast<float>(d));
}

// q[B,T,H,D] against k/v[B,S,Hkv,D] of one dtype and device.
void check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v) {
  check_float(op, "q", q);
  check_float(op, "k", k);
  check_float(op, "v", v);
  check_same_dtype(op, "q", q, "k", k);
  check_same_dtype(op, "q", q, "v", v);
  check_same_device(op, "q", q, "k", k);
  check_same_device(op, "q", q, "v", v);
  EL_ENSURE(q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape() && k.dim(0) == q.dim(0) &&
                k.dim(3) == q.dim(3) && k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0,
            "ops::{}: q {}, k {}, v {} (expected q[B, T, H, D], k/v[B, S, Hkv, D] of one shape, "
            "H % Hkv == 0)",
            op, desc(q), desc(k), desc(v));
}

Tensor neg_inf_lse(int64_t b, int64_t h, int64_t t, Device device) {
  return Tensor::full({b, h, t}, -std::numeric_limits<float>::infinity(), DType::f32, device);
}

}  // namespace

Tensor nsa_block_unfold(const Tensor& x, int64_t block, int64_t stride) {
  check_float("nsa_block_unfold", "x", x);
  EL_ENSURE(x.ndim() == 4, "ops::nsa_block_unfold: x is {}, expected [B, T, Hkv, D]", desc(x));
  EL_ENSURE(block > 0 && stride > 0, "ops::nsa_block_unfold: block {} and stride {} must be > 0",
            block, stride);
  const int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3);
  const int64_t nc = compressed_count(T, block, stride);
  if (nc == 0) return Tensor();
  // A row gather (embedding over x as [B T Hkv, D] rows): exact, its
  // backward is embedding's scatter-add, and every backend already has it.
  std::vector<int32_t> ids(static_cast<size_t>(B * nc * H * block));
  size_t n = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < nc; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < block; ++j)
          ids[n++] = static_cast<int32_t>((b * T + i * stride + j) * H + h);
  const Tensor idx = Tensor::from_ints(ids, {static_cast<int64_t>(ids.size())}).to(x.device());
  const Tensor rows = embedding(idx, reshape(x, {B * T * H, D}));  // [B Nc Hkv l, D]
  return reshape(rows, {B, nc, H, block * D});
}

NsaCompressed nsa_compressed_attention(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                       float scale, int64_t block, int64_t stride,
                                       int64_t q_offset) {
  EL_ENSURE(block > 0 && stride > 0 && q_offset >= 0,
            "ops::nsa_compressed_attention: block {}, stride {} must be > 0 and q_offset {} >= 0",
            block, stride, q_offset);
  check_float("nsa_compressed_attention", "q", q);
  EL_ENSURE(q.ndim() == 4, "ops::nsa_compressed_attention: q is {}, expected [B, T, H, D]",
            desc(q));
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3);
  const Device dev = q.device();
  if (!kc.defined() || kc.dim(1) == 0 || T == 0) {
    // No complete compressed block yet: the branch contributes nothing.
    EL_ENSURE(!vc.defined() || !kc.defined() || vc.shape() == kc.shape(),
              "ops::nsa_compressed_attention: kc {} and vc {} differ", desc(kc), desc(vc));
    return {Tensor::zeros(q.shape(), q.dtype(), dev), neg_inf_lse(B, H, T, dev)};
  }
  check_qkv("nsa_compressed_attention", q, kc, vc);
  scale = default_scale(scale, D);
  NsaCompressed r{Tensor::empty(q.shape(), q.dtype(), dev),
                  Tensor::empty({B, H, T}, DType::f32, dev)};
  backend_for(dev).nsa_compressed_attention_forward(q, kc, vc, scale, block, stride, q_offset,
                                                    r.out, r.lse);
  if (any_requires_grad({&q, &kc, &vc})) {
    mark_output(r.out);
    tape().record("nsa_compressed_attention", [q, kc, vc, out = r.out, lse = r.lse, scale, block,
                                               stride, q_offset]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dq = empty_like(q, dy.device()), dk = empty_like(kc, dy.device()),
             dv = empty_like(vc, dy.device());
      backend_for(dy.device())
          .nsa_compressed_attention_backward(dy.view(q.shape()), q, kc, vc, out, lse, scale, block,
                                             stride, q_offset, dq, dk, dv);
      accumulate_grad(q, dq);
      accumulate_grad(kc, dk);
      accumulate_grad(vc, dv);
    });
  }
  return r;
}

Tensor nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                         int64_t compress_block, int64_t compress_stride, int64_t select_block,
                         int64_t select_count, int64_t q_offset) {
  check_float("nsa_select_blocks", "q", q);
  EL_ENSURE(q.ndim() == 4, "ops::nsa_select_blocks: q is {}, expected [B, T, H, D]", desc(q));
  EL_ENSURE(compress_block > 0 && compress_stride > 0 && select_block > 0 && select_count > 0 &&
                q_offset >= 0,
            "ops::nsa_select_blocks: compress_block {}, compress_stride {}, select_block {}, "
            "select_count {} must be > 0 and q_offset {} >= 0",
            compress_block, compress_stride, select_block, select_count, q_offset);
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2);
  const Device dev = q.device();
  if (!kc.defined() || kc.dim(1) == 0 || T == 0) {
    // No compressed scores: each query takes its own block (always selected).
    EL_ENSURE(!kc.defined() || (kc.ndim() == 4 && H % kc.dim(2) == 0),
              "ops::nsa_select_blocks: kc {} does not match q {}", desc(kc), desc(q));
    const int64_t hkv = kc.defined() ? kc.dim(2) : H;
    std::vector<int32_t> host(static_cast<size_t>(B * hkv * T * select_count), -1);
    for (int64_t r = 0; r < B * hkv; ++r)
      for (int64_t t = 0; t < T; ++t)
        host[static_cast<size_t>((r * T + t) * select_count)] =
            static_cast<int32_t>((q_offset + t) / select_block);
    return Tensor::from_ints(host, {B, hkv, T, select_count}).to(dev);
  }
  check_qkv("nsa_select_blocks", q, kc, kc);
  check_dtype("nsa_select_blocks", "lse", lse, DType::f32);
  check_same_device("nsa_select_blocks", "q", q, "lse", lse);
  EL_ENSURE(lse.shape() == (Shape{B, H, T}),
            "ops::nsa_select_blocks: lse {} does not match q {} (expected [{}, {}, {}])",
            desc(lse), desc(q), B, H, T);
  Tensor blocks = Tensor::empty({B, kc.dim(2), T, select_count}, DType::i32, dev);
  backend_for(dev).nsa_select_blocks(q, kc, lse, default_scale(scale, q.dim(3)), compress_block,
                                     compress_stride, select_block, q_offset, blocks);
  return blocks;
}

Tensor nsa_sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& blocks, int64_t select_block, int64_t window,
                            float scale, int64_t q_offset) {
  check_qkv("nsa_sparse_attention", q, k, v);
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), S = k.dim(1), Hkv = k.dim(2);
  EL_ENSURE(window >= 0 && q_offset >= 0 && q_offset + T <= S,
            "ops::nsa_sparse_attention: window {} and q_offset {} must be >= 0 with q_offset + T "
            "({}) <= S ({})",
            window, q_offset, q_offset + T, S);
  if (blocks.defined()) {
    check_dtype("nsa_sparse_attention", "blocks", blocks, DType::i32);
    check_same_device("nsa_sparse_attention", "q", q, "blocks", blocks);
    EL_ENSURE(blocks.ndim() == 4 && blocks.dim(0) == B && blocks.dim(1) == Hkv &&
                  blocks.dim(2) == T && select_block > 0,
              "ops::nsa_sparse_attention: blocks {} (select_block {}) do not match q {} and k {} "
              "(expected i32 [B, Hkv, T, n], select_block > 0)",
              desc(blocks), select_block, desc(q), desc(k));
  }
  const Device dev = q.device();
  scale = default_scale(scale, q.dim(3));
  Tensor out = Tensor::empty(q.shape(), q.dtype(), dev);
  Tensor lse = Tensor::empty({B, H, T}, DType::f32, dev);
  if (T == 0) return out;
  backend_for(dev).nsa_sparse_attention_forward(q, k, v, blocks, select_block, window, scale,
                                                q_offset, out, lse);
  if (any_requires_grad({&q, &k, &v})) {
    mark_output(out);
    tape().record("nsa_sparse_attention", [q, k, v, blocks, out, lse, select_block, window, scale,
                                           q_offset]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dq = empty_like(q, dy.device()), dk = empty_like(k, dy.device()),
             dv = empty_like(v, dy.device());
      backend_for(dy.device())
          .nsa_sparse_attention_backward(dy.view(q.shape()), q, k, v, blocks, out, lse,
                                         select_block, window, scale, q_offset, dq, dk, dv);
      accumulate_grad(q, dq);
      accumulate_grad(k, dk);
      accumulate_grad(v, dv);
    });
  }
  return out;
}

Tensor nsa_gate_combine(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                        const Tensor& o_win) {
  const char* op = "nsa_gate_combine";
  check_float(op, "gates", gates);
  check_float(op, "o_cmp", o_cmp);
  check_float(op, "o_slc", o_slc);
  check_float(op, "o_win", o_win);
  check_same_dtype(op, "gates", gates, "o_cmp", o_cmp);
  check_same_dtype(op, "gates", gates, "o_slc", o_slc);
  check_same_dtype(op, "gates", gates, "o_win", o_win);
  check_same_device(op, "gates", gates, "o_cmp", o_cmp);
  check_same_device(op, "gates", gates, "o_slc", o_slc);
  check_same_device(op, "gates", gates, "o_win", o_win);
  EL_ENSURE(o_cmp.ndim() == 4 && o_slc.shape() == o_cmp.shape() &&
                o_win.shape() == o_cmp.shape() && gates.ndim() == 3 &&
                gates.dim(0) == o_cmp.dim(0) && gates.dim(1) == o_cmp.dim(1) &&
                gates.dim(2) == 3 * o_cmp.dim(2),
            "ops::nsa_gate_combine: gates {}, branches {}, {}, {} (expected gates [B, T, 3H], "
            "each branch [B, T, H, D])",
            desc(gates), desc(o_cmp), desc(o_slc), desc(o_win));
  const Device dev = gates.device();
  Tensor out = Tensor::empty(o_cmp.shape(), o_cmp.dtype(), dev);
  backend_for(dev).nsa_gate_combine_forward(gates, o_cmp, o_slc, o_win, out);
  if (any_requires_grad({&gates, &o_cmp, &o_slc, &o_win})) {
    mark_output(out);
    tape().record("nsa_gate_combine", [gates, o_cmp, o_slc, o_win, out]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      const Device d = dy.device();
      Tensor dg = empty_like(gates, d), da = empty_like(o_cmp, d), ds = empty_like(o_slc, d),
             dw = empty_like(o_win, d);
      backend_for(d).nsa_gate_combine_backward(dy.view(o_cmp.shape()), gates, o_cmp, o_slc,
                                               o_win, dg, da, ds, dw);
      accumulate_grad(gates, dg);
      accumulate_grad(o_cmp, da);
      accumulate_grad(o_slc, ds);
      accumulate_grad(o_win, dw);
    });
  }
  return out;
}

}  // namespace el::ops
