// Element types that travel on the wire, are held by backends and live in checkpoints, and their
// conversion to fp32. f32, bf16 and f16 are compute dtypes (wire, resident weights); f64 and the
// two FP8 formats appear only in checkpoints and are converted at load; u8 is raw bytes in
// checkpoints (MXFP4 blocks and scales), decoded only by dequantizeMxfp4.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace moe {

enum class DType : uint8_t {
  kF32,
  kBF16,
  kF16,
  kF64,     // checkpoint storage only
  kF8E4M3,  // checkpoint storage only: OCP FP8 E4M3 "fn" (no infinities; S.1111.111 is NaN)
  kF8E5M2,  // checkpoint storage only: OCP FP8 E5M2 (the top byte of an IEEE f16)
  kU8,      // checkpoint storage only: raw bytes (gpt-oss MXFP4 *_blocks / *_scales)
};

// f32, bf16, f16: the dtypes that travel on the wire and that backends hold weights in.
bool isComputeDType(DType t);
size_t dtypeSize(DType t);
// "f32", "bf16", "f16", "f64", "f8_e4m3", "f8_e5m2", "u8"
std::string_view dtypeName(DType t);
// "F32", "BF16", "F16", "F64", "F8_E4M3", "F8_E5M2", "U8"
std::optional<DType> parseSafetensorsDType(std::string_view s);

// Inline and branch-free, so loops over rows (kernels/cpu_rows) vectorize with them.
inline float bf16ToFloat(uint16_t v) {
  return std::bit_cast<float>(static_cast<uint32_t>(v) << 16);
}
// Round to nearest even; NaN stays NaN (quieted).
inline uint16_t floatToBf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quietNan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quietNan : rounded);
}
float f16ToFloat(uint16_t v);
uint16_t floatToF16(float f);  // round-to-nearest-even
float f8e4m3ToFloat(uint8_t v);
float f8e5m2ToFloat(uint8_t v);

// Widens `bytes` (little-endian elements of type `t`, count = out.size()) into fp32.
// The caller guarantees bytes.size() == out.size() * dtypeSize(t); bytes need no alignment.
// u8 widens to the integer value 0..255 (what the bytes mean is the caller's to know).
void convertToF32(DType t, std::span<const std::byte> bytes, std::span<float> out);

// MXFP4 (OCP MX, as gpt-oss checkpoints store it and transformers' convert_moe_packed_tensors
// reads it): each block byte holds two FP4 E2M1 values, the low nibble the even element and the
// high nibble the odd one; nibble bits 0-2 index 0, .5, 1, 1.5, 2, 3, 4, 6 and bit 3 is the sign
// (8 is -0). One scale byte s per 32 values (16 block bytes) multiplies them by 2^(s - 127),
// exactly (ldexp; s = 255 is not NaN there).
float e2m1ToFloat(uint8_t nibble);  // the low 4 bits
inline constexpr size_t kMxfp4BlockValues = 32;
// Decodes rows of 32 values: `blocks` holds 16 bytes and `scales` one byte per row;
// out.size() == 32 * scales.size() and blocks.size() == 16 * scales.size() (the caller's
// guarantee).
void dequantizeMxfp4(std::span<const std::byte> blocks, std::span<const std::byte> scales,
                     std::span<float> out);

}  // namespace moe
