// See cpu_rows.h. Built with -O3 -ffp-contract=off (kernels/CMakeLists.txt): vectorized, and the
// AVX2 clone rounds exactly as the baseline (no fused multiply-adds).
#include "kernels/cpu_rows.h"

#include <bit>

namespace moe::kernels {
namespace {

// Branch-free so the loops vectorize; the same bits as moe::floatToBf16.
inline uint16_t bf16Of(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quietNan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quietNan : rounded);
}

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MOE_CPU_ROWS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MOE_CPU_ROWS_CLONES
#endif

MOE_CPU_ROWS_CLONES
void roundToBf16(const float* __restrict in, uint16_t* __restrict out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16Of(in[i]);
}

MOE_CPU_ROWS_CLONES
void gatherRowsBf16(const float* x, std::span<const uint32_t> rows, const float* scale, size_t H,
                    uint16_t* out) {
  for (size_t j = 0; j < rows.size(); ++j) {
    const float* __restrict src = x + size_t{rows[j]} * H;
    uint16_t* __restrict dst = out + j * H;
    if (scale != nullptr) {
      const float w = scale[j];
      for (size_t h = 0; h < H; ++h) dst[h] = bf16Of(w * src[h]);
    } else {
      for (size_t h = 0; h < H; ++h) dst[h] = bf16Of(src[h]);
    }
  }
}

MOE_CPU_ROWS_CLONES
void scatterAddRows(const float* src, std::span<const uint32_t> rows, const float* weights,
                    size_t H, float* y) {
  for (size_t j = 0; j < rows.size(); ++j) {
    float* __restrict dst = y + size_t{rows[j]} * H;
    const float* __restrict from = src + j * H;
    const float w = weights != nullptr ? weights[j] : 1.0f;
    for (size_t h = 0; h < H; ++h) dst[h] += w * from[h];
  }
}

}  // namespace moe::kernels
