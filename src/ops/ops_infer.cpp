// ops_infer.cpp — inference-only ops: the KV cache, per-row rotary offsets,
// greedy argmax and the weight-only quantized linear. None records a
// backward (generation and post-training quantization never differentiate);
// an input that requires grad is a caller bug.
#include <cmath>

#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_dtype;
using detail::check_float;
using detail::check_same_device;
using detail::check_same_dtype;
using detail::desc;

namespace {

void check_positions(const char* op, const Tensor& positions, int64_t batch, const Tensor& like) {
  check_dtype(op, "positions", positions, DType::i32);
  check_same_device(op, "positions", positions, "input", like);
  EL_ENSURE(positions.ndim() == 1 && positions.dim(0) == batch,
            "ops::{}: positions {} does not match batch {} (expected [{}])", op, desc(positions),
            batch, batch);
}

void check_inv_freq(const char* op, const Tensor& inv_freq, const Tensor& x, int64_t d) {
  if (!inv_freq.defined()) return;
  check_dtype(op, "inv_freq", inv_freq, DType::f32);
  check_same_device(op, "inv_freq", inv_freq, "input", x);
  EL_ENSURE(inv_freq.ndim() == 1 && inv_freq.dim(0) >= 1 && inv_freq.dim(0) <= d / 2,
            "ops::{}: inv_freq {} does not match head dim {} (1 to {} values)", op,
            desc(inv_freq), d, d / 2);
}

void check_no_grad(const char* op, const Tensor& t) {
  EL_ENSURE(!t.requires_grad(), "ops::{}: inference op called on a tensor that requires grad", op);
}

}  // namespace

Tensor rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions) {
  check_float("rope_at", "x", x);
  check_no_grad("rope_at", x);
  EL_ENSURE(x.ndim() == 4 && x.dim(3) % 2 == 0, "ops::rope_at: x is {}, expected [B, T, H, D]",
            desc(x));
  check_inv_freq("rope_at", inv_freq, x, x.dim(3));
  check_positions("rope_at", positions, x.dim(0), x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).rope_at(x, inv_freq, positions, y);
  return y;
}

QKV split_qkv_rope_at(const Tensor& packed, int64_t n_head, int64_t n_kv_head,
                      const Tensor& inv_freq, const Tensor& positions) {
  check_float("split_qkv_rope_at", "packed", packed);
  check_no_grad("split_qkv_rope_at", packed);
  const int64_t heads = n_head + 2 * n_kv_head;
  EL_ENSURE(n_head > 0 && n_kv_head > 0 && packed.ndim() == 3 && packed.dim(2) % heads == 0 &&
                (packed.dim(2) / heads) % 2 == 0,
            "ops::split_qkv_rope_at: packed is {}, expected [B, T, (H + 2 Hkv) * D]", desc(packed));
  const int64_t b = packed.dim(0), t = packed.dim(1), d = packed.dim(2) / heads;
  check_inv_freq("split_qkv_rope_at", inv_freq, packed, d);
  check_positions("split_qkv_rope_at", positions, b, packed);
  const Device dev = packed.device();
  QKV out{Tensor::empty({b, t, n_head, d}, packed.dtype(), dev),
          Tensor::empty({b, t, n_kv_head, d}, packed.dtype(), dev),
          Tensor::empty({b, t, n_kv_head, d}, packed.dtype(), dev)};
  backend_for(dev).split_qkv_rope_at(packed.view({b, t, heads, d}), inv_freq, positions, out.q,
                                     out.k, out.v);
  return out;
}

Tensor qkv_rope_cache_write(const Tensor& packed, int64_t n_head, int64_t n_kv_head,
                            const Tensor& inv_freq, const Tensor& positions, Tensor& k_cache,
                            Tensor& v_cache) {
  check_float("qkv_rope_cache_write", "packed", packed);
  check_no_grad("qkv_rope_cache_write", packed);
  check_float("qkv_rope_cache_write", "k_cache", k_cache);
  check_same_dtype("qkv_rope_cache_write", "k_cache", k_cache, "v_cache", v_cache);
  check_same_device("qkv_rope_cache_write", "packed", packed, "k_cache", k_cache);
  const int64_t heads = n_head + 2 * n_kv_head;
  EL_ENSURE(n_head > 0 && n_kv_head > 0 && packed.ndim() == 3 && packed.dim(2) % heads == 0 &&
                (packed.dim(2) / heads) % 2 == 0,
            "ops::qkv_rope_cache_write: packed is {}, expected [B, T, (H + 2 Hkv) * D]",
            desc(packed));
  const int64_t b = packed.dim(0), t = packed.dim(1), d = packed.dim(2) / heads;
  EL_ENSURE(k_cache.ndim() == 4 && k_cache.shape() == v_cache.shape() && k_cache.dim(0) == b &&
                k_cache.dim(2) == n_kv_head && k_cache.dim(3) == d && t <= k_cache.dim(1),
            "ops::qkv_rope_cache_write: caches {} / {} do not fit packed {} (expected [{}, >= {}, "
            "{}, {}])",
            desc(k_cache), desc(v_cache), desc(packed), b, t, n_kv_head, d);
  check_inv_freq("qkv_rope_cache_write", inv_freq, packed, d);
  check_positions("qkv_rope_cache_write", positions, b, packed);
  const Device dev = packed.device();
  Tensor q = Tensor::empty({b, t, n_head, d}, packed.dtype(), dev);
  backend_for(dev).qkv_rope_cache_write(packed.view({b, t, heads, d}), inv_freq, positions, q,
                                        k_cache, v_cache);
  return q;
}

Tensor mla_decode_prologue(const Tensor& packed, int64_t n_head, int64_t latent,
                           const Tensor& row_map, const Tensor& norm_w, float eps,
                           const Tensor& inv_freq, const Tensor& positions, Tensor& k_cache,
                           Tensor& v_cache) {
  const char* op = "mla_decode_prologue";
  check_float(op, "packed", packed);
  check_no_grad(op, packed);
  check_float(op, "k_cache", k_cache);
  check_same_dtype(op, "k_cache", k_cache, "v_cache", v_cache);
  check_same_device(op, "packed", packed, "k_cache", k_cache);
  check_same_device(op, "packed", packed, "v_cache", v_cache);
  check_dtype(op, "row_map", row_map, DType::i32);
  check_same_device(op, "packed", packed, "row_map", row_map);
  check_float(op, "norm_w", norm_w);
  check_same_device(op, "packed", packed, "norm_w", norm_w);
  EL_ENSURE(k_cache.ndim() == 4 && k_cache.shape() == v_cache.shape() && k_cache.dim(2) == 1 &&
                k_cache.dim(3) % 2 == 0,
            "ops::mla_decode_prologue: caches {} / {} are not MLA caches [B, Smax, 1, D], D even",
            desc(k_cache), desc(v_cache));
  const int64_t d = k_cache.dim(3);
  EL_ENSURE(row_map.ndim() == 1 && row_map.dim(0) == d,
            "ops::mla_decode_prologue: row_map {} does not match the cache's {} columns",
            desc(row_map), d);
  EL_ENSURE(latent > 0 && norm_w.ndim() == 1 && norm_w.dim(0) == latent,
            "ops::mla_decode_prologue: norm_w {} does not match {} latent values", desc(norm_w),
            latent);
  EL_ENSURE(n_head > 0 && packed.ndim() == 3 && packed.dim(2) > n_head * d + latent &&
                packed.dim(0) == k_cache.dim(0) && packed.dim(1) <= k_cache.dim(1),
            "ops::mla_decode_prologue: packed {} does not fit {} heads of {} cache columns plus "
            "{} latent values and a RoPE key (cache {})",
            desc(packed), n_head, d, latent, desc(k_cache));
  if (row_map.device().is_cpu()) {
    // (On a GPU the kernel checks it: a host copy per decode step would
    // break the step's CUDA graph; an entry out of range is a deferred error.)
    const int64_t sources = packed.dim(2) - n_head * d;
    const int32_t* map = row_map.data<int32_t>();
    for (int64_t m = 0; m < d; ++m) {
      EL_ENSURE(map[m] < sources,
                "ops::mla_decode_prologue: row_map[{}] = {} is outside the {} kv_a columns", m,
                map[m], sources);
    }
  }
  if (inv_freq.defined()) {
    check_dtype(op, "inv_freq", inv_freq, DType::f32);
    check_same_device(op, "inv_freq", inv_freq, "packed", packed);
    EL_ENSURE(inv_freq.ndim() == 1 && inv_freq.dim(0) >= 1 && inv_freq.dim(0) <= d / 2,
              "ops::mla_decode_prologue: inv_freq {} does not match {} cache columns (1 to {} "
              "values)",
              desc(inv_freq), d, d / 2);
  }
  check_positions(op, positions, packed.dim(0), packed);
  Tensor q = Tensor::empty({packed.dim(0), packed.dim(1), n_head, d}, packed.dtype(),
                           packed.device());
  backend_for(packed.device())
      .mla_decode_prologue(packed, latent, row_map, norm_w, eps, inv_freq, positions, q, k_cache,
                           v_cache);
  return q;
}

void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                    Tensor& v_cache) {
  check_float("kv_cache_write", "k", k);
  check_same_dtype("kv_cache_write", "k", k, "v", v);
  check_float("kv_cache_write", "k_cache", k_cache);
  check_same_dtype("kv_cache_write", "k_cache", k_cache, "v_cache", v_cache);
  check_same_device("kv_cache_write", "k", k, "k_cache", k_cache);
  EL_ENSURE(k.ndim() == 4 && k.shape() == v.shape() && k_cache.ndim() == 4 &&
                k_cache.shape() == v_cache.shape() && k.dim(0) == k_cache.dim(0) &&
                k.dim(2) == k_cache.dim(2) && k.dim(3) == k_cache.dim(3) &&
                k.dim(1) <= k_cache.dim(1),
            "ops::kv_cache_write: k {} / v {} do not fit cache {} / {} (expected [B, T, Hkv, D] "
            "into [B, Smax, Hkv, D])",
            desc(k), desc(v), desc(k_cache), desc(v_cache));
  check_positions("kv_cache_write", positions, k.dim(0), k);
  backend_for(k.device()).kv_cache_write(k, v, positions, k_cache, v_cache);
}

Tensor attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& positions, float scale, const Tensor& alibi_slopes,
                        int64_t value_offset, int64_t value_cols) {
  check_float("attention_cached", "q", q);
  check_no_grad("attention_cached", q);
  check_same_dtype("attention_cached", "k_cache", k_cache, "v_cache", v_cache);
  check_same_device("attention_cached", "q", q, "k_cache", k_cache);
  EL_ENSURE(q.ndim() == 4 && k_cache.ndim() == 4 && k_cache.shape() == v_cache.shape() &&
                q.dim(0) == k_cache.dim(0) && q.dim(3) == k_cache.dim(3) &&
                q.dim(2) % k_cache.dim(2) == 0,
            "ops::attention_cached: q {} and cache {} do not match (expected q [B, T, H, D], "
            "cache [B, Smax, Hkv, D], H % Hkv == 0)",
            desc(q), desc(k_cache));
  check_positions("attention_cached", positions, q.dim(0), q);
  if (alibi_slopes.defined()) {
    check_dtype("attention_cached", "alibi_slopes", alibi_slopes, DType::f32);
    check_same_device("attention_cached", "q", q, "alibi_slopes", alibi_slopes);
    EL_ENSURE(alibi_slopes.ndim() == 1 && alibi_slopes.dim(0) == q.dim(2),
              "ops::attention_cached: alibi_slopes {} does not match q {} (expected [{}])",
              desc(alibi_slopes), desc(q), q.dim(2));
  }
  const int64_t d = q.dim(3);
  if (value_cols == 0) value_cols = d - value_offset;
  EL_ENSURE(value_offset >= 0 && value_cols > 0 && value_offset + value_cols <= d,
            "ops::attention_cached: value columns [{}, {}) are not inside the cache rows' {} "
            "columns",
            value_offset, value_offset + value_cols, d);
  if (scale <= 0) scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor out = Tensor::empty({q.dim(0), q.dim(1), q.dim(2), value_cols}, q.dtype(), q.device());
  backend_for(q.device()).attention_cached(q, k_cache, v_cache, positions, scale, out,
                                           alibi_slopes, value_offset);
  return out;
}

bool decode_layer_is_fused(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                           const Tensor& k_cache, const Tensor& v_cache) {
  return x.defined() && backend_for(x.device()).decode_layer_takes(x, w, inv_freq, k_cache, v_cache);
}

Tensor decode_layer(const Tensor& x, const DecodeLayerWeights& w, const Tensor& inv_freq,
                    const Tensor& positions, Tensor& k_cache, Tensor& v_cache, bool fused) {
  check_float("decode_layer", "x", x);
  check_no_grad("decode_layer", x);
  EL_ENSURE(x.ndim() == 3 && x.dim(1) == 1,
            "ops::decode_layer: x is {}, expected [B, 1, C] (one decode token per row)", desc(x));
  check_positions("decode_layer", positions, x.dim(0), x);
  if (fused && decode_layer_is_fused(x, w, inv_freq, k_cache, v_cache)) {
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    backend_for(x.device()).decode_layer(x, w, inv_freq, positions, k_cache, v_cache, out);
    return out;
  }
  // The separate ops, in DecoderBlock::forward_cached's order and roundings.
  const int64_t b = x.dim(0);
  const bool quantized = w.quantized();
  auto project = [quantized](const Tensor& in, const Tensor& dense, const QuantizedWeight& quant,
                      const Tensor& bias) {
    return quantized ? quant_linear(in, quant, bias) : linear(in, dense, bias);
  };
  const Tensor normed = rmsnorm(x, w.input_norm, w.eps);
  const Tensor packed = project(normed, w.qkv, w.q_qkv, w.qkv_bias);
  const Tensor q =
      qkv_rope_cache_write(packed, w.n_head, w.n_kv_head, inv_freq, positions, k_cache, v_cache);
  const Tensor y = attention_cached(q, k_cache, v_cache, positions);
  const Tensor o = project(reshape(y, {b, 1, w.n_head * w.head_dim}), w.o, w.q_o, Tensor());
  const ResidualNorm h = add_rmsnorm(x, o, w.post_norm, w.eps);
  const Tensor gu = project(h.normed, w.gate_up, w.q_gate_up, Tensor());
  const Tensor d = project(swiglu_packed(gu), w.down, w.q_down, Tensor());
  return add(h.sum, d);
}

Tensor decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w, const Tensor& inv_freq,
                     const Tensor& positions, std::span<Tensor> k_caches,
                     std::span<Tensor> v_caches) {
  EL_ENSURE(!w.empty() && k_caches.size() == w.size() && v_caches.size() == w.size(),
            "ops::decode_layers: {} layers with {} k and {} v caches (expected the same number, "
            "at least one)",
            w.size(), k_caches.size(), v_caches.size());
  bool fused = true;
  for (size_t i = 0; i < w.size() && fused; ++i)
    fused = decode_layer_is_fused(x, w[i], inv_freq, k_caches[i], v_caches[i]);
  if (!fused) {  // a layer at a time, each fused where it can be
    Tensor cur = x;
    for (size_t i = 0; i < w.size(); ++i)
      cur = decode_layer(cur, w[i], inv_freq, positions, k_caches[i], v_caches[i]);
    return cur;
  }
  check_no_grad("decode_layers", x);
  check_positions("decode_layers", positions, x.dim(0), x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).decode_layers(x, w, inv_freq, positions, k_caches, v_caches, out);
  return out;
}

Tensor argmax_rows(const Tensor& x) {
  check_float("argmax_rows", "x", x);
  EL_ENSURE(x.ndim() >= 1 && x.dim(-1) > 0, "ops::argmax_rows: x is {}", desc(x));
  const int64_t rows = x.numel() / x.dim(-1);
  Tensor out = Tensor::empty({rows}, DType::i32, x.device());
  backend_for(x.device()).argmax_rows(x, out);
  return out;
}

void increment_i32(Tensor& x, int32_t delta) {
  check_dtype("increment_i32", "x", x, DType::i32);
  backend_for(x.device()).increment_i32(x, delta);
}

Tensor quant_linear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias) {
  check_float("quant_linear", "x", x);
  check_no_grad("quant_linear", x);
  EL_ENSURE(x.ndim() >= 1 && x.dim(-1) == w.in_features,
            "ops::quant_linear: x {} does not match the weight's {} inputs", desc(x),
            w.in_features);
  EL_ENSURE((w.bits == 4 || w.bits == 8) && w.group_size > 0 &&
                w.in_features % w.group_size == 0 && (w.bits == 8 || w.group_size % 2 == 0) &&
                w.qweight.dtype() == DType::u8 &&
                w.qweight.numel() == w.out_features * w.in_features * w.bits / 8 &&
                w.scales.dtype() == DType::f16 &&
                w.scales.numel() == w.out_features * w.groups_per_row() &&
                (w.symmetric || (w.zeros.defined() && w.zeros.numel() == w.scales.numel())),
            "ops::quant_linear: malformed quantized weight (bits {}, group {}, [{}, {}])", w.bits,
            w.group_size, w.out_features, w.in_features);
  check_same_device("quant_linear", "x", x, "qweight", w.qweight);
  Shape shape = x.shape();
  shape.back() = w.out_features;
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  Tensor b = bias;
  if (b.defined() && b.dtype() != x.dtype()) {
    b = Tensor::empty(bias.shape(), x.dtype(), x.device());
    backend_for(x.device()).copy(bias, b);
  }
  backend_for(x.device()).quant_matmul(x.view({x.numel() / w.in_features, w.in_features}), w, b,
                                       y);
  return y;
}

}  // namespace el::ops
