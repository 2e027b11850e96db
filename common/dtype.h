// Element types that travel on the wire and live in checkpoints, and their conversion to fp32.
// All compute is fp32; bf16/fp16 are storage formats widened on load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace moe {

enum class DType : uint8_t { kF32, kBF16, kF16 };

size_t dtypeSize(DType t);
std::string_view dtypeName(DType t);                             // "f32", "bf16", "f16"
std::optional<DType> parseSafetensorsDType(std::string_view s);  // "F32", "BF16", "F16"

float bf16ToFloat(uint16_t v);
uint16_t floatToBf16(float f);  // round-to-nearest-even; NaN stays NaN
float f16ToFloat(uint16_t v);
uint16_t floatToF16(float f);  // round-to-nearest-even

// Widens `bytes` (little-endian elements of type `t`, count = out.size()) into fp32.
// The caller guarantees bytes.size() == out.size() * dtypeSize(t); bytes need no alignment.
void convertToF32(DType t, std::span<const std::byte> bytes, std::span<float> out);

}  // namespace moe
