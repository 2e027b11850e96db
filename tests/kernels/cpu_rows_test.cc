// kernels/cpu_rows.h against the plain rules: every bf16 rounding (moe::floatToBf16, and the
// vectorized loops that use it) equals the plain round-to-nearest-even with NaNs kept (ties,
// carries into the exponent, infinities, NaN payloads, subnormals); the gathers pick and scale the
// named rows from f32 and bf16 sources; and the scatter adds each weighted row where it belongs —
// at lengths that leave vector tails.
#include "kernels/cpu_rows.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace moe::kernels {
namespace {

// The rounding rule written plainly, with a branch for NaN.
uint16_t plainBf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

TEST(CpuRowsTest, RoundToBf16MatchesThePlainRule) {
  std::vector<float> in = {0.0f,
                           -0.0f,
                           1.0f,
                           std::bit_cast<float>(0x3f808000u),  // tie, even: stays
                           std::bit_cast<float>(0x3f818000u),  // tie, odd: rounds up
                           std::bit_cast<float>(0x7f7fffffu),  // max float: rounds to inf
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::bit_cast<float>(0x7f800001u),  // signalling NaN: stays NaN
                           std::bit_cast<float>(0xffc00000u),
                           std::numeric_limits<float>::denorm_min(),
                           -1.5e-39f};
  std::mt19937 rng(5);
  for (int i = 0; i < 1000; ++i) in.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{17}, in.size()}) {
    std::vector<uint16_t> out(n);
    roundToBf16(in.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(floatToBf16(in[i]), plainBf16(in[i]))
          << "element " << i << " = " << std::hex << std::bit_cast<uint32_t>(in[i]);
      EXPECT_EQ(out[i], plainBf16(in[i]))
          << "element " << i << " = " << std::hex << std::bit_cast<uint32_t>(in[i]);
    }
  }
}

TEST(CpuRowsTest, GatherAndScatterRows) {
  constexpr size_t R = 5, H = 19;  // H leaves a tail after any vector width
  std::vector<float> x(R * H);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.37f * static_cast<float>(i) - 3.0f;
  std::vector<uint16_t> x16(x.size());
  for (size_t i = 0; i < x.size(); ++i) x16[i] = floatToBf16(x[i]);
  const std::vector<uint32_t> rows = {4, 0, 2};
  const std::vector<float> weights = {0.5f, -2.0f, 3.1f};
  struct Source {
    const char* name;
    Activations x;
    float (*at)(const std::vector<float>&, const std::vector<uint16_t>&, size_t);
  };
  const Source sources[] = {
      {"f32", x,
       [](const std::vector<float>& f, const std::vector<uint16_t>&, size_t i) { return f[i]; }},
      {"bf16", Activations::bf16(x16),
       [](const std::vector<float>&, const std::vector<uint16_t>& b, size_t i) {
         return bf16ToFloat(b[i]);
       }},
  };
  for (const Source& source : sources) {
    for (const float* scale : {static_cast<const float*>(nullptr), weights.data()}) {
      SCOPED_TRACE(std::string(source.name) + (scale ? " scaled" : ""));
      std::vector<uint16_t> gathered16(rows.size() * H);
      std::vector<float> gathered(rows.size() * H);
      gatherRowsBf16(source.x, rows, scale, H, gathered16.data());
      gatherRows(source.x, rows, scale, H, gathered.data());
      for (size_t j = 0; j < rows.size(); ++j) {
        for (size_t h = 0; h < H; ++h) {
          const float v = source.at(x, x16, rows[j] * H + h) * (scale ? scale[j] : 1.0f);
          EXPECT_EQ(gathered16[j * H + h], plainBf16(v)) << "row " << j << " col " << h;
          EXPECT_EQ(gathered[j * H + h], v) << "row " << j << " col " << h;
        }
      }
    }
  }
  std::vector<float> src(rows.size() * H);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i % 7) - 1.0f;
  for (const float* w : {static_cast<const float*>(nullptr), weights.data()}) {
    std::vector<float> y(R * H, 1.0f), want(R * H, 1.0f);
    for (size_t j = 0; j < rows.size(); ++j) {
      for (size_t h = 0; h < H; ++h) want[rows[j] * H + h] += (w ? w[j] : 1.0f) * src[j * H + h];
    }
    scatterAddRows(src.data(), rows, w, H, y.data());
    EXPECT_EQ(y, want);
  }
}

}  // namespace
}  // namespace moe::kernels
