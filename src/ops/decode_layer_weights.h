// decode_layer_weights.h — the weights of one pre-norm Llama-layout decoder
// layer (RMSNorm, q/k/v stacked in one buffer with optional biases, RoPE,
// GQA, o_proj, RMSNorm, SwiGLU with gate/up stacked, down), as
// Backend::decode_layer and ops::decode_layer take them
// (DecoderBlock::decode_weights builds them from a model's modules).
//
// The four projections are either all dense (qkv, o, gate_up, down, in the
// activation dtype) or all weight-only quantized with one format (q_qkv,
// q_o, q_gate_up, q_down: the same bits, group size and symmetry; see
// ops/quant_layout.h). quantized() tells which set is filled.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/quant_layout.h"

namespace el {

struct DecodeLayerWeights {
  Tensor input_norm;  // [C]
  Tensor qkv;         // [(H + 2 Hkv) D, C]: q rows, then k, then v
  Tensor o;           // [C, H D]
  Tensor post_norm;   // [C]
  Tensor gate_up;     // [2F, C]: gate rows [0, F), up rows [F, 2F)
  Tensor down;        // [C, F]
  QuantizedWeight q_qkv, q_o, q_gate_up, q_down;  // the same shapes, quantized
  Tensor qkv_bias;    // [(H + 2 Hkv) D] or undefined (Qwen2's q/k/v biases)
  float eps = 1e-5f;
  int64_t n_head = 0, n_kv_head = 0, head_dim = 0;

  bool quantized() const { return q_qkv.qweight.defined(); }
  // d_ff (F): from whichever gate_up is filled.
  int64_t d_ff() const { return (quantized() ? q_gate_up.out_features : gate_up.dim(0)) / 2; }
};

}  // namespace el
