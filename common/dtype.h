// Element types that travel on the wire, are held by backends and live in checkpoints, and their
// conversion to fp32. f32, bf16 and f16 are compute dtypes (wire, resident weights); f64 and the
// two FP8 formats appear only in checkpoints and are converted at load.
#pragma once

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
};

// f32, bf16, f16: the dtypes that travel on the wire and that backends hold weights in.
bool isComputeDType(DType t);
size_t dtypeSize(DType t);
// "f32", "bf16", "f16", "f64", "f8_e4m3", "f8_e5m2"
std::string_view dtypeName(DType t);
// "F32", "BF16", "F16", "F64", "F8_E4M3", "F8_E5M2"
std::optional<DType> parseSafetensorsDType(std::string_view s);

float bf16ToFloat(uint16_t v);
uint16_t floatToBf16(float f);  // round-to-nearest-even; NaN stays NaN
float f16ToFloat(uint16_t v);
uint16_t floatToF16(float f);  // round-to-nearest-even
float f8e4m3ToFloat(uint8_t v);
float f8e5m2ToFloat(uint8_t v);

// Widens `bytes` (little-endian elements of type `t`, count = out.size()) into fp32.
// The caller guarantees bytes.size() == out.size() * dtypeSize(t); bytes need no alignment.
void convertToF32(DType t, std::span<const std::byte> bytes, std::span<float> out);

}  // namespace moe
