// ops.h — differentiable operations on Tensors.
//
// Each op checks its inputs (EL_ENSURE: a mismatch is a bug in the caller),
// allocates its output on the inputs' device, runs the device's kernel
// (ops/backend.h) and, when an input requires grad, records its backward on
// the tape (autograd/tape.h). Models (nn/, models/) are built only from these.
// Shapes: B batch, T time, C channels, H heads, Hkv KV heads, D head dim, V vocab.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace el::ops {

// y[..., out] = x[..., in] @ w[out, in]^T (+ bias[out]). y has x's dtype; w
// may be any float dtype, bias has x's or w's.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

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

// Rotary embedding of x[B, T, H, D]; inv_freq[D/2] f32 (see rope_inv_freq).
Tensor rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset = 0);
// inv_freq[i] = theta^(-2i/D), i < D/2, on the given device.
Tensor rope_inv_freq(int64_t head_dim, float theta, Device device);

// Scaled dot-product attention, q[B, T, H, D], k/v[B, S, Hkv, D] -> [B, T, H, D].
// MHA (Hkv == H), GQA (1 < Hkv < H) and MQA (Hkv == 1) are this one op.
// scale <= 0 means 1/sqrt(D).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = true,
                 float scale = 0.0f);

Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up
Tensor gelu(const Tensor& x);                         // tanh approximation
Tensor add(const Tensor& a, const Tensor& b);         // same shape (residual)

// Same data, new shape (differentiable). One dimension may be -1.
Tensor reshape(const Tensor& x, const Shape& shape);

// Mean cross-entropy of logits[N, V] against targets[N] (i32); targets < 0
// are ignored (not counted in the mean). logits of any float dtype; returns
// a one-element f32 tensor.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

}  // namespace el::ops
