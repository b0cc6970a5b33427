// cpu_math.h — internal to src/cpu: scalar math written so GCC vectorises it.
//
// std::exp/std::tanh are calls into libm that the compiler will not vectorise
// without -ffast-math, and softmax over a 4096-wide vocab or a 1024-long
// attention row is dominated by them. fast_exp is the Cephes expf polynomial
// (max relative error ~2 ulp on [-87, 88]) built from floor, FMA and an
// exponent-field bit cast, all of which vectorise.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace el::cpu {

// exp(x); inputs below about -87.3 (including -inf) give 0, above 88 are clamped.
inline float fast_exp(float x) {
  x = std::min(x, 88.0f);
  x = std::max(x, -88.0f);
  // n = round(x / ln 2): adding 1.5 * 2^23 pushes the fraction bits out of
  // the f32 mantissa (round to nearest even), subtracting it back leaves n.
  // Valid because the build never uses -ffast-math, which would fold it.
  constexpr float kRound = 12582912.0f;
  const float fx = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  // 2^fx through the exponent field; fx in [-127, 127] after the clamp, and
  // -127 gives a zero exponent field (flushes to 0, which softmax wants).
  // r is in [-ln2/2, ln2/2], where the polynomial is accurate.
  const int32_t e = static_cast<int32_t>(fx) + 127;
  const float scale = std::bit_cast<float>(static_cast<uint32_t>(e) << 23);
  return y * scale;
}

// 1 / (1 + exp(-x)).
inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// tanh(x) = 1 - 2 / (exp(2x) + 1); absolute error ~1e-7 (relative error is
// larger only where tanh itself is ~0, which GELU multiplies by x anyway).
inline float fast_tanh(float x) { return 1.0f - 2.0f / (fast_exp(2.0f * x) + 1.0f); }

}  // namespace el::cpu
