// A Matrix kept in host memory, row-major, in its resident dtype: fp32 elements for f32, the raw
// 16-bit patterns for bf16 and f16. The weight handle of the CPU backends (reference and BLAS).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace moe::kernels {

class HostMatrix final : public Matrix {
 public:
  // data: [rows, cols], row-major; the caller checked data.size() == rows * cols. Rounds to
  // `dtype` (nearest-even) once, here.
  HostMatrix(std::span<const float> data, size_t rows, size_t cols, DType dtype);

  // [rows, cols]; only for dtype() == kF32 (empty otherwise).
  std::span<const float> data() const { return f32_; }
  // [rows, cols] bf16 or f16 bit patterns; only for those dtypes (empty otherwise).
  std::span<const uint16_t> half() const { return half_; }
  // Element i widened to fp32 (exact for every dtype).
  float at(size_t i) const;
  // The whole matrix widened to fp32 into out[rows * cols].
  void widen(std::span<float> out) const;
  size_t residentBytes() const override {
    return f32_.capacity() * sizeof(float) + half_.capacity() * sizeof(uint16_t);
  }

 private:
  std::vector<float> f32_;
  std::vector<uint16_t> half_;
};

}  // namespace moe::kernels
