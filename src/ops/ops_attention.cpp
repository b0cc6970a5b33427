// ops_attention.cpp — rotary embedding and scaled dot-product attention.
#include <cmath>
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

Tensor rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset) {
  check_float("rope", "x", x);
  // The frequency table stays f32 whatever x's dtype: rounded to bf16 (2^-9
  // relative), the angle pos * inv_freq would be off by radians at positions
  // in the thousands.
  check_dtype("rope", "inv_freq", inv_freq, DType::f32);
  check_same_device("rope", "x", x, "inv_freq", inv_freq);
  EL_ENSURE(x.ndim() == 4 && x.dim(3) % 2 == 0,
            "ops::rope: x is {}, expected [B, T, H, D] with an even head dim D", desc(x));
  EL_ENSURE(inv_freq.ndim() == 1 && inv_freq.dim(0) >= 1 && inv_freq.dim(0) <= x.dim(3) / 2,
            "ops::rope: inv_freq {} does not match x {} (expected [{}], or fewer for a partial "
            "rotary)",
            desc(inv_freq), desc(x), x.dim(3) / 2);
  EL_ENSURE(pos_offset >= 0, "ops::rope: negative pos_offset {}", pos_offset);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).rope(x, inv_freq, pos_offset, false, y);
  if (any_requires_grad({&x})) {
    mark_output(y);
    tape().record("rope", [x, inv_freq, pos_offset, y]() {
      Tensor dy = take_grad(y);
      if (!dy.defined()) return;
      // A rotation's transpose is the rotation by the negative angle.
      Tensor dx = empty_like(x, dy.device());
      backend_for(dy.device()).rope(dy.view(x.shape()), inv_freq, pos_offset, true, dx);
      accumulate_grad(x, dx);
    });
  }
  return y;
}

QKV split_qkv_rope(const Tensor& packed, int64_t n_head, int64_t n_kv_head, const Tensor& inv_freq,
                   int64_t pos_offset) {
  check_float("split_qkv_rope", "packed", packed);
  const int64_t heads = n_head + 2 * n_kv_head;
  EL_ENSURE(n_head > 0 && n_kv_head > 0 && packed.ndim() == 3 && packed.dim(2) % heads == 0 &&
                (packed.dim(2) / heads) % 2 == 0,
            "ops::split_qkv_rope: packed is {}, expected [B, T, (H + 2 Hkv) * D] with H {}, Hkv "
            "{} and an even D",
            desc(packed), n_head, n_kv_head);
  EL_ENSURE(pos_offset >= 0, "ops::split_qkv_rope: negative pos_offset {}", pos_offset);
  const int64_t b = packed.dim(0), t = packed.dim(1), d = packed.dim(2) / heads;
  if (inv_freq.defined()) {
    check_dtype("split_qkv_rope", "inv_freq", inv_freq, DType::f32);  // f32: see rope()
    check_same_device("split_qkv_rope", "packed", packed, "inv_freq", inv_freq);
    EL_ENSURE(inv_freq.ndim() == 1 && inv_freq.dim(0) >= 1 && inv_freq.dim(0) <= d / 2,
              "ops::split_qkv_rope: inv_freq {} does not match head dim {} (expected [{}], or "
              "fewer for a partial rotary)",
              desc(inv_freq), d, d / 2);
  }
  const Device dev = packed.device();
  QKV out{Tensor::empty({b, t, n_head, d}, packed.dtype(), dev),
          Tensor::empty({b, t, n_kv_head, d}, packed.dtype(), dev),
          Tensor::empty({b, t, n_kv_head, d}, packed.dtype(), dev)};
  const Tensor packed4 = packed.view({b, t, heads, d});
  backend_for(dev).split_qkv_rope(packed4, inv_freq, pos_offset, out.q, out.k, out.v);
  if (any_requires_grad({&packed})) {
    mark_output(out.q);
    mark_output(out.k);
    mark_output(out.v);
    tape().record("split_qkv_rope", [packed, packed4, inv_freq, pos_offset, q = out.q, k = out.k,
                                     v = out.v]() {
      Tensor dq = take_grad(q), dk = take_grad(k), dv = take_grad(v);
      if (!dq.defined() && !dk.defined() && !dv.defined()) return;
      const Device d = (dq.defined() ? dq : dk.defined() ? dk : dv).device();
      // An output nothing flowed into contributes zeros.
      auto or_zeros = [&](const Tensor& g, const Tensor& like) {
        return g.defined() ? g.view(like.shape()) : Tensor::zeros(like.shape(), like.dtype(), d);
      };
      Tensor dpacked = empty_like(packed4, d);
      backend_for(d).merge_qkv_rope_grad(or_zeros(dq, q), or_zeros(dk, k), or_zeros(dv, v),
                                         inv_freq, pos_offset, dpacked);
      accumulate_grad(packed, dpacked.view(packed.shape()));
    });
  }
  return out;
}

Tensor rope_inv_freq(int64_t head_dim, float theta, Device device) {
  EL_ENSURE(head_dim > 0 && head_dim % 2 == 0,
            "ops::rope_inv_freq: head_dim {} must be even and > 0", head_dim);
  EL_ENSURE(theta > 0.f, "ops::rope_inv_freq: theta {} must be > 0", theta);
  // f32 arithmetic as in the Hugging Face reference: 1 / theta^(2i / D).
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    f[static_cast<size_t>(i)] = 1.0f / std::pow(theta, e);
  }
  Tensor host = Tensor::from_floats(f, {head_dim / 2});
  if (device.is_cpu()) return host;
  Tensor out = Tensor::empty({head_dim / 2}, DType::f32, device);
  out.copy_from(host);
  return out;
}

std::vector<float> alibi_slope_values(int64_t n_head) {
  EL_ENSURE(n_head > 0, "ops::alibi_slope_values: n_head {} must be > 0", n_head);
  // Press et al.'s rule (and BLOOM's build_alibi_tensor): for a power of two
  // n, slope i (0-based) = 2^(-8 (i + 1) / n). Otherwise the slopes of the
  // largest power of two p < n, followed by every other slope of 2p (its
  // 1st, 3rd, ...) until there are n: the extra heads interleave between
  // the geometric steps instead of extending the sequence past 2^-8.
  auto pow2_slopes = [](int64_t n) {
    std::vector<double> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      out[static_cast<size_t>(i)] =
          std::exp2(-8.0 * static_cast<double>(i + 1) / static_cast<double>(n));
    }
    return out;
  };
  int64_t p = 1;
  while (p * 2 <= n_head) p *= 2;
  std::vector<double> s = pow2_slopes(p);
  if (p < n_head) {
    const std::vector<double> twice = pow2_slopes(2 * p);
    for (int64_t i = 0; static_cast<int64_t>(s.size()) < n_head; ++i) {
      s.push_back(twice[static_cast<size_t>(2 * i)]);
    }
  }
  return {s.begin(), s.end()};
}

Tensor alibi_slopes(int64_t n_head, Device device) {
  Tensor host = Tensor::from_floats(alibi_slope_values(n_head), {n_head});
  if (device.is_cpu()) return host;
  Tensor out = Tensor::empty({n_head}, DType::f32, device);
  out.copy_from(host);
  return out;
}

// The ALiBi slope table of an attention call: undefined, or f32 [H] on q's device.
static void check_alibi_slopes(const char* op, const Tensor& slopes, const Tensor& q) {
  if (!slopes.defined()) return;
  check_dtype(op, "alibi_slopes", slopes, DType::f32);
  check_same_device(op, "q", q, "alibi_slopes", slopes);
  EL_ENSURE(slopes.ndim() == 1 && slopes.dim(0) == q.dim(2),
            "ops::{}: alibi_slopes {} does not match q {} (expected [{}], one per query head)", op,
            desc(slopes), desc(q), q.dim(2));
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                 const Tensor& alibi_slopes) {
  check_float("attention", "q", q);
  check_float("attention", "k", k);
  check_float("attention", "v", v);
  check_same_dtype("attention", "q", q, "k", k);
  check_same_dtype("attention", "q", q, "v", v);
  check_same_device("attention", "q", q, "k", k);
  check_same_device("attention", "q", q, "v", v);
  EL_ENSURE(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4,
            "ops::attention: q {}, k {}, v {} must be 4-D ([B, T, H, D], [B, S, Hkv, D])", desc(q),
            desc(k), desc(v));
  EL_ENSURE(k.shape() == v.shape(), "ops::attention: k {} and v {} must have the same shape",
            desc(k), desc(v));
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3);
  const int64_t hkv = k.dim(2);
  EL_ENSURE(k.dim(0) == b && k.dim(3) == d,
            "ops::attention: k {} does not match q {} in batch or head dim", desc(k), desc(q));
  EL_ENSURE(hkv > 0 && h % hkv == 0,
            "ops::attention: q heads {} must be a multiple of kv heads {} (q {}, k {})", h, hkv,
            desc(q), desc(k));
  check_alibi_slopes("attention", alibi_slopes, q);
  if (scale <= 0.f) scale = d > 0 ? 1.f / std::sqrt(static_cast<float>(d)) : 1.f;
  const Device dev = q.device();
  Tensor out = Tensor::empty(q.shape(), q.dtype(), dev);
  Tensor lse = Tensor::empty({b, h, t}, DType::f32, dev);  // statistics stay f32
  backend_for(dev).attention_forward(q, k, v, scale, causal, out, lse, alibi_slopes);
  if (any_requires_grad({&q, &k, &v})) {
    mark_output(out);
    tape().record("attention", [q, k, v, out, lse, scale, causal, alibi_slopes]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dq = empty_like(q, dy.device());
      Tensor dk = empty_like(k, dy.device());
      Tensor dv = empty_like(v, dy.device());
      backend_for(dy.device())
          .attention_backward(dy.view(q.shape()), q, k, v, out, lse, scale, causal, dq, dk, dv,
                              alibi_slopes);
      accumulate_grad(q, dq);
      accumulate_grad(k, dk);
      accumulate_grad(v, dv);
    });
  }
  return out;
}

}  // namespace el::ops
