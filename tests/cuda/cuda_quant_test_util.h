// cuda_quant_test_util.h — packed quantized weights for the CUDA tests of the
// weight-only int4/int8 kernels (quant_matmul_test.cpp, moe_quant_cuda_test.cpp).
//
// random_quant_host: `rows` x `k` weights of `bits` (4 or 8) in groups of
// `group` (k % group == 0), on the host: random bytes (every nibble / byte
// value occurs), f16 scales around 0.01, random zero points when asymmetric.
// quant_to_gpu: the same weight with its tensors copied to the GPU.
#pragma once

#include "core/rng.h"
#include "cuda_test_util.h"
#include "ops/quant_layout.h"

namespace el::test {

inline QuantizedWeight random_quant_host(int64_t rows, int64_t k, int bits, int64_t group,
                                         bool symmetric, Rng& rng) {
  QuantizedWeight w;
  w.bits = bits;
  w.group_size = group;
  w.symmetric = symmetric;
  w.out_features = rows;
  w.in_features = k;
  w.qweight = Tensor::empty({rows, k * bits / 8}, DType::u8);
  uint8_t* q = w.qweight.data<uint8_t>();
  for (int64_t i = 0; i < w.qweight.numel(); ++i) q[i] = static_cast<uint8_t>(rng.next_u64());
  const int64_t groups = k / group;
  w.scales = Tensor::empty({rows, groups}, DType::f16);
  uint16_t* s = w.scales.data<uint16_t>();
  for (int64_t i = 0; i < rows * groups; ++i) s[i] = f32_to_f16(0.01f * (0.5f + rng.uniform()));
  if (!symmetric) {
    w.zeros = Tensor::empty({rows, groups}, DType::u8);
    uint8_t* z = w.zeros.data<uint8_t>();
    for (int64_t i = 0; i < rows * groups; ++i) z[i] = static_cast<uint8_t>(rng.below(1u << bits));
  }
  return w;
}

inline QuantizedWeight quant_to_gpu(const QuantizedWeight& h) {
  QuantizedWeight g = h;
  g.qweight = to_gpu(h.qweight);
  g.scales = to_gpu(h.scales);
  if (h.zeros.defined()) g.zeros = to_gpu(h.zeros);
  return g;
}

}  // namespace el::test
