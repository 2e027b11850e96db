// Unit tests for common/dtype: bf16 and f16 conversions (exhaustive round trips, round to nearest
// even, NaN/Inf, f16 subnormals), convertToF32 on unaligned bytes, and the dtype name helpers.
#include "common/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace moe {
namespace {

float bits(uint32_t u) {
  return std::bit_cast<float>(u);
}
float p2(int e) {
  return std::ldexp(1.0f, e);
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// Independent decoding of an IEEE binary16 pattern.
double f16Value(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(double(mant), -24);
  if (exp == 31) return mant ? std::nan("") : sign * double(kInf);
  return sign * std::ldexp(1.0 + mant / 1024.0, exp - 15);
}

TEST(Bf16, DecodesByShifting) {
  EXPECT_EQ(bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(bf16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(bf16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(bf16ToFloat(0x8000)));
  EXPECT_EQ(bf16ToFloat(0x7f80), kInf);
  EXPECT_EQ(bf16ToFloat(0xff80), -kInf);
  EXPECT_TRUE(std::isnan(bf16ToFloat(0x7fc0)));
  EXPECT_EQ(bf16ToFloat(0x0001), bits(0x00010000));  // subnormal
}

TEST(Bf16, ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = bf16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(f)))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(floatToBf16(f), h) << "bf16 0x" << std::hex << h << " = " << f;
  }
}

TEST(Bf16, RoundsToNearestEven) {
  // Between 1.0 (0x3f80) and 1.0078125 (0x3f81) the midpoint is 1 + 2^-8.
  EXPECT_EQ(floatToBf16(1.0f + p2(-8)), 0x3f80);            // tie → even (0x3f80)
  EXPECT_EQ(floatToBf16(1.0f + p2(-8) + p2(-20)), 0x3f81);  // just above the tie
  EXPECT_EQ(floatToBf16(1.0f + p2(-8) - p2(-20)), 0x3f80);  // just below
  EXPECT_EQ(floatToBf16(1.0f + p2(-7) + p2(-8)), 0x3f82);   // tie 0x3f81|0x3f82 → even
  EXPECT_EQ(floatToBf16(-(1.0f + p2(-7) + p2(-8))), 0xbf82);
  EXPECT_EQ(floatToBf16(bits(0x3f80ffff)), 0x3f81);
  EXPECT_EQ(floatToBf16(bits(0x3f818000)), 0x3f82);  // tie from odd → up
  EXPECT_EQ(floatToBf16(bits(0x3f828000)), 0x3f82);  // tie from even → stays
  // A mantissa carry into the exponent: 1.9999999 → 2.0.
  EXPECT_EQ(floatToBf16(bits(0x3fffffff)), 0x4000);
}

TEST(Bf16, OverflowInfAndNaN) {
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to +inf
  EXPECT_EQ(floatToBf16(-std::numeric_limits<float>::max()), 0xff80);
  EXPECT_EQ(floatToBf16(kInf), 0x7f80);
  EXPECT_EQ(floatToBf16(-kInf), 0xff80);
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lives only in the low 16 bits must not truncate to Inf.
  const uint16_t sn = floatToBf16(bits(0x7f800001));
  EXPECT_TRUE(std::isnan(bf16ToFloat(sn))) << std::hex << sn;
  const uint16_t nsn = floatToBf16(bits(0xff800001));
  EXPECT_TRUE(std::isnan(bf16ToFloat(nsn))) << std::hex << nsn;
  EXPECT_TRUE(nsn & 0x8000);
  // NaN must not round up into the next exponent either (0x7fffffff + rounding).
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(bits(0x7fffffff)))));
}

TEST(F16, DecodeMatchesIndependentFormula) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = f16ToFloat(static_cast<uint16_t>(h));
    const double want = f16Value(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
    } else {
      ASSERT_EQ(double(f), want) << "f16 0x" << std::hex << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;
    }
  }
}

TEST(F16, ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = f16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16ToFloat(floatToF16(f)))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(floatToF16(f), h) << "f16 0x" << std::hex << h << " = " << f;
  }
}

TEST(F16, KnownValues) {
  EXPECT_EQ(floatToF16(1.0f), 0x3c00);
  EXPECT_EQ(floatToF16(-2.0f), 0xc000);
  EXPECT_EQ(floatToF16(0.5f), 0x3800);
  EXPECT_EQ(floatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(floatToF16(0.0f), 0x0000);
  EXPECT_EQ(floatToF16(-0.0f), 0x8000);
  EXPECT_EQ(f16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(f16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(f16ToFloat(0x0400), p2(-14));  // smallest normal
}

TEST(F16, RoundsToNearestEven) {
  // Spacing at 1.0 is 2^-10, so the midpoint between 0x3c00 and 0x3c01 is 1 + 2^-11.
  EXPECT_EQ(floatToF16(1.0f + p2(-11)), 0x3c00);            // tie → even
  EXPECT_EQ(floatToF16(1.0f + p2(-11) + p2(-20)), 0x3c01);  // above the tie
  EXPECT_EQ(floatToF16(1.0f + 3 * p2(-11)), 0x3c02);        // tie 0x3c01|0x3c02 → even
  EXPECT_EQ(floatToF16(-(1.0f + 3 * p2(-11))), 0xbc02);
  EXPECT_EQ(floatToF16(2.0f - p2(-12)), 0x4000);  // carries into the exponent
  EXPECT_EQ(floatToF16(65519.0f), 0x7bff);        // below the overflow tie
  EXPECT_EQ(floatToF16(65520.0f), 0x7c00);        // the tie rounds to +inf
}

TEST(F16, OverflowInfAndNaN) {
  EXPECT_EQ(floatToF16(1e10f), 0x7c00);
  EXPECT_EQ(floatToF16(-1e10f), 0xfc00);
  EXPECT_EQ(floatToF16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(floatToF16(kInf), 0x7c00);
  EXPECT_EQ(floatToF16(-kInf), 0xfc00);
  EXPECT_EQ(f16ToFloat(0x7c00), kInf);
  EXPECT_EQ(f16ToFloat(0xfc00), -kInf);
  const uint16_t n = floatToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(f16ToFloat(n))) << std::hex << n;
  const uint16_t sn = floatToF16(bits(0x7f800001));  // payload only in the low bits
  EXPECT_TRUE(std::isnan(f16ToFloat(sn))) << std::hex << sn;
  EXPECT_TRUE(std::isnan(f16ToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(f16ToFloat(0xfc01)));
}

TEST(F16, Subnormals) {
  EXPECT_EQ(f16ToFloat(0x0001), p2(-24));
  EXPECT_EQ(f16ToFloat(0x8001), -p2(-24));
  EXPECT_EQ(f16ToFloat(0x0200), p2(-15));
  EXPECT_EQ(f16ToFloat(0x03ff), 1023 * p2(-24));  // largest subnormal

  EXPECT_EQ(floatToF16(p2(-24)), 0x0001);
  EXPECT_EQ(floatToF16(-p2(-24)), 0x8001);
  EXPECT_EQ(floatToF16(p2(-15)), 0x0200);
  EXPECT_EQ(floatToF16(1023 * p2(-24)), 0x03ff);
  EXPECT_EQ(floatToF16(p2(-25)), 0x0000);  // tie between 0 and 2^-24 → even 0
  EXPECT_EQ(floatToF16(-p2(-25)), 0x8000);
  EXPECT_EQ(floatToF16(1.5f * p2(-25)), 0x0001);  // above the tie
  EXPECT_EQ(floatToF16(3 * p2(-25)), 0x0002);     // tie 1|2 → even
  EXPECT_EQ(floatToF16(5 * p2(-25)), 0x0002);     // tie 2|3 → even
  EXPECT_EQ(floatToF16(p2(-26)), 0x0000);
  EXPECT_EQ(floatToF16(1023.5f * p2(-24)), 0x0400);  // rounds up into the smallest normal
  EXPECT_EQ(floatToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(floatToF16(-std::numeric_limits<float>::denorm_min()), 0x8000);
}

TEST(ConvertToF32, WidensUnalignedBytes) {
  // One spare byte in front so every element is misaligned.
  {
    const std::vector<float> want = {1.5f, -3.0f, 1e-20f};
    std::vector<std::byte> buf(1 + want.size() * 4);
    std::memcpy(buf.data() + 1, want.data(), want.size() * 4);
    std::vector<float> out(want.size());
    convertToF32(DType::kF32, std::span(buf).subspan(1), out);
    EXPECT_EQ(out, want);
  }
  {
    const uint16_t in[] = {0x3f80, 0xc020, 0x7f80};
    std::vector<std::byte> buf(1 + sizeof in);
    std::memcpy(buf.data() + 1, in, sizeof in);
    std::vector<float> out(3);
    convertToF32(DType::kBF16, std::span(buf).subspan(1), out);
    EXPECT_EQ(out, (std::vector<float>{1.0f, -2.5f, kInf}));
  }
  {
    const uint16_t in[] = {0x3c00, 0x0001, 0xc000};
    std::vector<std::byte> buf(1 + sizeof in);
    std::memcpy(buf.data() + 1, in, sizeof in);
    std::vector<float> out(3);
    convertToF32(DType::kF16, std::span(buf).subspan(1), out);
    EXPECT_EQ(out, (std::vector<float>{1.0f, p2(-24), -2.0f}));
  }
}

TEST(DTypeNames, SizesNamesAndSafetensorsCodes) {
  EXPECT_EQ(dtypeSize(DType::kF32), 4u);
  EXPECT_EQ(dtypeSize(DType::kBF16), 2u);
  EXPECT_EQ(dtypeSize(DType::kF16), 2u);
  EXPECT_EQ(dtypeName(DType::kF32), "f32");
  EXPECT_EQ(dtypeName(DType::kBF16), "bf16");
  EXPECT_EQ(dtypeName(DType::kF16), "f16");
  EXPECT_EQ(parseSafetensorsDType("F32"), DType::kF32);
  EXPECT_EQ(parseSafetensorsDType("BF16"), DType::kBF16);
  EXPECT_EQ(parseSafetensorsDType("F16"), DType::kF16);
  EXPECT_EQ(parseSafetensorsDType("f32"), std::nullopt);
  EXPECT_EQ(parseSafetensorsDType("BOOL"), std::nullopt);
  EXPECT_EQ(parseSafetensorsDType("F8_E8M0"), std::nullopt);
  // Checkpoint-only dtypes: read and converted at load, never on the wire or resident.
  const struct {
    const char* code;
    DType dtype;
    size_t size;
    const char* name;
  } stored[] = {{"F64", DType::kF64, 8, "f64"},
                {"F8_E4M3", DType::kF8E4M3, 1, "f8_e4m3"},
                {"F8_E5M2", DType::kF8E5M2, 1, "f8_e5m2"},
                {"U8", DType::kU8, 1, "u8"}};
  for (const auto& tc : stored) {
    EXPECT_EQ(parseSafetensorsDType(tc.code), tc.dtype) << tc.code;
    EXPECT_EQ(dtypeSize(tc.dtype), tc.size) << tc.code;
    EXPECT_EQ(dtypeName(tc.dtype), tc.name) << tc.code;
    EXPECT_FALSE(isComputeDType(tc.dtype)) << tc.code;
  }
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) EXPECT_TRUE(isComputeDType(t));
  const double f64[2] = {1.5, -0.25};
  std::vector<float> out(2);
  convertToF32(DType::kF64, std::as_bytes(std::span(f64)), out);
  EXPECT_EQ(out, (std::vector<float>{1.5f, -0.25f}));
  // u8 widens to the byte's integer value (MXFP4 bytes are decoded by dequantizeMxfp4 instead).
  const uint8_t u8[3] = {0, 7, 255};
  out.resize(3);
  convertToF32(DType::kU8, std::as_bytes(std::span(u8)), out);
  EXPECT_EQ(out, (std::vector<float>{0.0f, 7.0f, 255.0f}));
}

}  // namespace
}  // namespace moe
