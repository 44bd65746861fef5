// Element types and scalar conversions (bf16 and f16 to and from f32).
// Not a numerics library: only what loading, storing and converting weights needs.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sy {

enum class DType : uint8_t { kF32, kBF16, kF16, kI8, kI32, kI64, kU8 };

// Bytes per element.
size_t dtype_size(DType dt);
// Lower-case name as printed to users: "f32", "bf16", ...
const char* dtype_name(DType dt);
// The safetensors spelling ("F32", "BF16", ...); throws FormatError for an unknown string.
DType dtype_from_safetensors(std::string_view s);
const char* dtype_to_safetensors(DType dt);
// Parses a user spelling ("f32", "bf16", "f16", "float32", "bfloat16", "float16"); throws InvalidArgument.
DType dtype_from_name(std::string_view s);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace sy
