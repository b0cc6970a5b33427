// dtype.h — element types and the bf16/f16 <-> f32 conversions.
//
// Packed quantized types (int8/int4 with group scales) are added by the
// inference issue as new enum values; every switch over DType goes through
// dtype_size()/dtype_name() so that adding one is local.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace el {

enum class DType : uint8_t { f32, bf16, f16, i32, i64, u8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                       // "f32", "bf16", ...
std::optional<DType> dtype_from_name(std::string_view name);  // accepts "f32"/"float32", ...
bool dtype_is_float(DType t);

// Round-to-nearest-even f32 -> bf16; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// IEEE half, round-to-nearest-even, with subnormals, inf and NaN.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace el
