// kernels/cpu_rows.h against the plain rules: every bf16 rounding equals moe::floatToBf16 (ties,
// carries into the exponent, infinities, NaN payloads, subnormals), the gather picks and scales
// the named rows, and the scatter adds each weighted row where it belongs — at lengths that leave
// vector tails.
#include "kernels/cpu_rows.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace moe::kernels {
namespace {

TEST(CpuRowsTest, RoundToBf16MatchesFloatToBf16) {
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
      EXPECT_EQ(out[i], floatToBf16(in[i]))
          << "element " << i << " = " << std::hex << std::bit_cast<uint32_t>(in[i]);
    }
  }
}

TEST(CpuRowsTest, GatherAndScatterRows) {
  constexpr size_t R = 5, H = 19;  // H leaves a tail after any vector width
  std::vector<float> x(R * H);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.25f * static_cast<float>(i) - 3.0f;
  const std::vector<uint32_t> rows = {4, 0, 2};
  const std::vector<float> weights = {0.5f, -2.0f, 3.0f};
  for (const float* scale : {static_cast<const float*>(nullptr), weights.data()}) {
    std::vector<uint16_t> gathered(rows.size() * H);
    gatherRowsBf16(x.data(), rows, scale, H, gathered.data());
    for (size_t j = 0; j < rows.size(); ++j) {
      for (size_t h = 0; h < H; ++h) {
        const float v = x[rows[j] * H + h] * (scale ? scale[j] : 1.0f);
        EXPECT_EQ(gathered[j * H + h], floatToBf16(v)) << "row " << j << " col " << h;
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
