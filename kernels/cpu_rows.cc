// See cpu_rows.h. Built with -O3 -ffp-contract=off (kernels/CMakeLists.txt): vectorized, and the
// AVX2 clone rounds exactly as the baseline (no fused multiply-adds).
#include "kernels/cpu_rows.h"

#include <algorithm>
#include <type_traits>

#include "common/dtype.h"

namespace moe::kernels {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MOE_CPU_ROWS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MOE_CPU_ROWS_CLONES
#endif

MOE_CPU_ROWS_CLONES
void roundToBf16(const float* __restrict in, uint16_t* __restrict out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = floatToBf16(in[i]);
}

namespace {

// The gathers' inner loops, one per source and destination type. Each is cloned for AVX2.
MOE_CPU_ROWS_CLONES
void gatherF32ToBf16(const float* x, std::span<const uint32_t> rows, const float* scale, size_t H,
                     uint16_t* out) {
  for (size_t j = 0; j < rows.size(); ++j) {
    const float* __restrict src = x + size_t{rows[j]} * H;
    uint16_t* __restrict dst = out + j * H;
    if (scale != nullptr) {
      const float w = scale[j];
      for (size_t h = 0; h < H; ++h) dst[h] = floatToBf16(w * src[h]);
    } else {
      for (size_t h = 0; h < H; ++h) dst[h] = floatToBf16(src[h]);
    }
  }
}

MOE_CPU_ROWS_CLONES
void gatherBf16ToBf16(const uint16_t* x, std::span<const uint32_t> rows, const float* scale,
                      size_t H, uint16_t* out) {
  for (size_t j = 0; j < rows.size(); ++j) {
    const uint16_t* __restrict src = x + size_t{rows[j]} * H;
    uint16_t* __restrict dst = out + j * H;
    if (scale != nullptr) {
      const float w = scale[j];
      for (size_t h = 0; h < H; ++h) dst[h] = floatToBf16(w * bf16ToFloat(src[h]));
    } else {
      std::copy(src, src + H, dst);
    }
  }
}

// T: float or uint16_t (bf16) rows, widened to fp32.
template <typename T>
float wide(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return bf16ToFloat(v);
  }
}

template <typename T>
MOE_CPU_ROWS_CLONES void gatherToF32(const T* x, std::span<const uint32_t> rows, const float* scale,
                                     size_t H, float* out) {
  for (size_t j = 0; j < rows.size(); ++j) {
    const T* __restrict src = x + size_t{rows[j]} * H;
    float* __restrict dst = out + j * H;
    if (scale != nullptr) {
      const float w = scale[j];
      for (size_t h = 0; h < H; ++h) dst[h] = w * wide(src[h]);
    } else {
      for (size_t h = 0; h < H; ++h) dst[h] = wide(src[h]);
    }
  }
}

}  // namespace

void gatherRowsBf16(Activations x, std::span<const uint32_t> rows, const float* scale, size_t H,
                    uint16_t* out) {
  if (x.dtype() == DType::kBF16) {
    gatherBf16ToBf16(x.bf16().data(), rows, scale, H, out);
  } else {
    gatherF32ToBf16(x.f32().data(), rows, scale, H, out);
  }
}

void gatherRows(Activations x, std::span<const uint32_t> rows, const float* scale, size_t H,
                float* out) {
  if (x.dtype() == DType::kBF16) {
    gatherToF32(x.bf16().data(), rows, scale, H, out);
  } else {
    gatherToF32(x.f32().data(), rows, scale, H, out);
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
