// rtn.h — weight-only quantization of one matrix: the spec, the group
// parameters, round-to-nearest (RTN), packing into ops/quant_layout.h, and
// the reference dequantization.
//
// A weight W[N, K] is cut into groups of `group_size` consecutive inputs of a
// row; each group gets one f16 scale s (and, asymmetric, one zero point z):
//   q = clamp(round(w / s) + z, 0, 2^bits - 1),   w ~= (q - z) * s
//
//   symmetric   z = 2^(bits-1) (8 or 128, fixed, not stored), so codes
//               represent -2^(bits-1) .. 2^(bits-1) - 1 (int4: -8..7, int8:
//               -128..127). s = max(max(w, 0) / (2^(bits-1) - 1),
//               max(-w, 0) / 2^(bits-1)): the positive side uses 7 (127) steps
//               and the negative side 8 (128), so no weight of the group is
//               clipped and the whole code range is usable.
//   asymmetric  the range [min(w, 0), max(w, 0)] (0 always representable, as
//               in GPTQ's reference quantizer) over 2^bits - 1 steps:
//               s = (max - min) / (2^bits - 1), z = clamp(round(-min / s)).
//
// The scale is stored in f16, rounded UP to the next f16 value (never down),
// so a group's extremes stay inside the code range after rounding and every
// RTN error is at most s/2 of the stored scale. A group of zeros gets s = 1
// and q = z (dequantises to exactly 0). Quantizing always uses the stored f16
// scale, so the dequantised value is what every kernel computes.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/quant_layout.h"

namespace el::quant {

struct QuantSpec {
  int bits = 4;              // 4 or 8
  int64_t group_size = 128;  // inputs per scale; 0 or -1: per output channel (= K)
  bool symmetric = true;
  // The group size for a weight with k inputs (k itself when per-channel).
  int64_t group_for(int64_t k) const { return group_size <= 0 ? k : group_size; }
};

// bits 4 or 8, group_size >= -1. The error names the field.
Status validate_quant_spec(const QuantSpec& spec);

// Whether a weight [n, k] named `name` can be quantized with `spec`: k
// divisible by the group size, k even for 4 bits. The error names the tensor,
// K and the group size, with the fix as hint.
Status check_quantizable(const std::string& name, int64_t n, int64_t k, const QuantSpec& spec);

// One group's parameters: the stored f16 scale (its bits and its value) and
// the zero point in code units.
struct GroupParams {
  uint16_t scale_bits = 0;
  float scale = 1.f;
  int zero = 0;
};
// The parameters of w[0..n) (see file comment). Error only when the scale
// does not fit in f16 (|w| beyond ~65504 * 127) or a value is not finite.
Result<GroupParams> choose_group_params(const float* w, int64_t n, int bits, bool symmetric);
// The code of w under p (round half to even, clamped to [0, 2^bits - 1]).
inline int quantize_value(float w, const GroupParams& p, int maxq) {
  const float r = std::nearbyint(w / p.scale) + static_cast<float>(p.zero);
  return r < 0.f ? 0 : r > static_cast<float>(maxq) ? maxq : static_cast<int>(r);
}
inline float dequantize_value(int q, const GroupParams& p) {
  return static_cast<float>(q - p.zero) * p.scale;
}

// Packed codes (quant_layout.h): 8 bits one byte per code; 4 bits two per
// byte, k = 2j in the low nibble of byte j and k = 2j + 1 in the high one.
inline void set_code(uint8_t* row, int64_t k, int q, int bits) {
  if (bits == 8) {
    row[k] = static_cast<uint8_t>(q);
  } else {
    uint8_t& b = row[k / 2];
    b = (k % 2 == 0) ? static_cast<uint8_t>((b & 0xF0) | q) : static_cast<uint8_t>((b & 0x0F) | (q << 4));
  }
}
inline int get_code(const uint8_t* row, int64_t k, int bits) {
  return bits == 8 ? row[k] : (k % 2 == 0 ? row[k / 2] & 0xF : row[k / 2] >> 4);
}

// A quantized matrix on the host, laid out exactly as QuantizedWeight's
// tensors (what quantizers produce before the upload to a device).
struct HostQuantized {
  int bits = 4;
  int64_t group_size = 0;  // resolved (divides cols)
  bool symmetric = true;
  int64_t rows = 0, cols = 0;    // N, K
  std::vector<uint8_t> qweight;  // [N, K * bits / 8]
  std::vector<uint16_t> scales;  // f16 bits [N, K / group_size]
  std::vector<uint8_t> zeros;    // [N, K / group_size]; empty when symmetric

  int64_t row_bytes() const { return cols * bits / 8; }
  int64_t groups() const { return cols / group_size; }
  // Allocates the vectors for rows x cols (codes zero).
  void resize(int b, int64_t group, bool sym, int64_t n, int64_t k);
};

// RTN of w[n, k] (row-major f32 on the host); check_quantizable first.
// `name` goes into errors (non-finite values are named with row and column).
Result<HostQuantized> quantize_rtn_host(const float* w, int64_t n, int64_t k, const QuantSpec& spec,
                                        const std::string& name);

// Copies rows [r0, r1) of `q` into the QuantizedWeight `dst` whose tensors are
// already allocated with those shapes (any device).
void upload_rows(const HostQuantized& q, int64_t r0, int64_t r1, QuantizedWeight& dst);
// A new QuantizedWeight on `device` holding all of `q`.
Result<QuantizedWeight> to_quantized_weight(const HostQuantized& q, Device device);
// The host copy of a QuantizedWeight (any device).
HostQuantized to_host(const QuantizedWeight& w);

// RTN of w[N, K] (any float dtype, any device); the result lives on w's
// device. Computed on the host in f32. Errors: check_quantizable (named with
// `name`), non-finite weights, allocation.
Result<QuantizedWeight> quantize_rtn(const Tensor& w, const QuantSpec& spec,
                                     const std::string& name = "weight");

// The reference dequantization: f32 [N, K] on the weight's device.
Tensor dequantize(const QuantizedWeight& w);

}  // namespace el::quant
