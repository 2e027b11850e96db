// dtype conversions. Byte-wise loads (memcpy) so views into unaligned message bytes are safe.
#include "common/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace moe {

bool isComputeDType(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16;
}

size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF64:
      return 8;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kU8:
      return 1;
  }
  return 4;
}

std::string_view dtypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kF64:
      return "f64";
    case DType::kF8E4M3:
      return "f8_e4m3";
    case DType::kF8E5M2:
      return "f8_e5m2";
    case DType::kU8:
      return "u8";
  }
  return "?";
}

std::optional<DType> parseSafetensorsDType(std::string_view s) {
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "F64") return DType::kF64;
  if (s == "F8_E4M3") return DType::kF8E4M3;
  if (s == "F8_E5M2") return DType::kF8E5M2;
  if (s == "U8") return DType::kU8;
  return std::nullopt;
}

float f16ToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | (exp + 127 - 15) << 23 | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t floatToF16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
  uint32_t mant = u & 0x7fffff;
  if (((u >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | static_cast<uint32_t>(exp) << 10 | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into exponent: correct
  return static_cast<uint16_t>(half);
}

void convertToF32(DType t, std::span<const std::byte> bytes, std::span<float> out) {
  const std::byte* p = bytes.data();
  switch (t) {
    case DType::kF32:
      std::memcpy(out.data(), p, out.size() * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = bf16ToFloat(v);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = f16ToFloat(v);
      }
      return;
    case DType::kF64:
      for (size_t i = 0; i < out.size(); ++i) {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        out[i] = static_cast<float>(v);
      }
      return;
    case DType::kF8E4M3:
      for (size_t i = 0; i < out.size(); ++i) out[i] = f8e4m3ToFloat(uint8_t(p[i]));
      return;
    case DType::kF8E5M2:
      for (size_t i = 0; i < out.size(); ++i) out[i] = f8e5m2ToFloat(uint8_t(p[i]));
      return;
    case DType::kU8:
      for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(uint8_t(p[i]));
      return;
  }
}

float f8e4m3ToFloat(uint8_t v) {
  const float sign = (v & 0x80) ? -1.0f : 1.0f;
  const int exp = (v >> 3) & 0xf, man = v & 0x7;
  if (exp == 0xf && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) return sign * std::ldexp(static_cast<float>(man), -9);  // man/8 · 2^-6
  return sign * std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
}

float f8e5m2ToFloat(uint8_t v) {
  return f16ToFloat(static_cast<uint16_t>(uint16_t{v} << 8));
}

float e2m1ToFloat(uint8_t nibble) {
  // transformers' FP4_VALUES: +0, .5, 1, 1.5, 2, 3, 4, 6, then the same negated (-0 included).
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitude[nibble & 0x7];
  return (nibble & 0x8) ? -m : m;
}

void dequantizeMxfp4(std::span<const std::byte> blocks, std::span<const std::byte> scales,
                     std::span<float> out) {
  constexpr size_t kBytes = kMxfp4BlockValues / 2;
  for (size_t r = 0; r < scales.size(); ++r) {
    // torch.ldexp(lut[idx], scale - 127): exact, so ldexp here gives the same bits (denormals at
    // small exponents, ±inf where 6·2^128 overflows, ±0 kept).
    const int exp = static_cast<int>(uint8_t(scales[r])) - 127;
    for (size_t j = 0; j < kBytes; ++j) {
      const uint8_t b = uint8_t(blocks[r * kBytes + j]);
      out[r * kMxfp4BlockValues + 2 * j] = std::ldexp(e2m1ToFloat(b & 0x0f), exp);
      out[r * kMxfp4BlockValues + 2 * j + 1] = std::ldexp(e2m1ToFloat(b >> 4), exp);
    }
  }
}

}  // namespace moe
