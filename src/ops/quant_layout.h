// quant_layout.h — the packed weight-only quantized matrix every backend reads.
//
// A Linear weight W[N, K] (out features N, in features K) is stored as
// unsigned integers q with one scale (and, asymmetric, one zero point) per
// group of `group_size` consecutive inputs of a row:
//
//   W[n, k] ~= (q[n, k] - z[n, g]) * s[n, g],   g = k / group_size
//
//   bits 8: qweight u8 [N, K]      q in [0, 255]; symmetric z = 128
//   bits 4: qweight u8 [N, K / 2]  byte j of a row holds k = 2j in its low
//                                  nibble and k = 2j + 1 in its high nibble;
//                                  q in [0, 15]; symmetric z = 8
//   scales  f16 [N, K / group_size]   (f16: 11 significant bits, a bf16 scale
//                                      would add ~0.4% error to every weight)
//   zeros   u8  [N, K / group_size]   asymmetric only (q units, 0..2^bits-1);
//                                     undefined when symmetric
//
// group_size divides K (quant/ checks it and names the tensor otherwise);
// group_size == K is per-output-channel quantization. For 4 bits the group
// size (hence K) is even, so a group never starts inside a byte.
// The row-major, K-contiguous order lets a decode GEMV stream each row with
// 16-byte loads (32 int4 or 16 int8 weights) and a prefill GEMM stage tiles
// of rows; both dequantise in registers. The on-disk format (quant/quant_io.h)
// stores these three tensors as they are.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace el {

struct QuantizedWeight {
  int bits = 4;              // 4 or 8
  int64_t group_size = 128;  // inputs per scale; divides in_features
  bool symmetric = true;     // zero point fixed at 2^(bits-1), no zeros tensor
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  Tensor qweight;            // u8 [N, K * bits / 8]
  Tensor scales;             // f16 [N, K / group_size]
  Tensor zeros;              // u8 [N, K / group_size] or undefined (symmetric)

  int64_t groups_per_row() const { return in_features / group_size; }
  // The symmetric zero point: 8 for 4 bits, 128 for 8 bits.
  int symmetric_zero() const { return 1 << (bits - 1); }
  // Bytes the three tensors occupy (what a decode step reads).
  int64_t storage_bytes() const {
    int64_t n = qweight.defined() ? static_cast<int64_t>(qweight.nbytes()) : 0;
    if (scales.defined()) n += static_cast<int64_t>(scales.nbytes());
    if (zeros.defined()) n += static_cast<int64_t>(zeros.nbytes());
    return n;
  }
};

}  // namespace el
