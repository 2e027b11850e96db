// A Matrix kept in host memory, row-major, in its resident dtype: fp32 elements for f32, the raw
// 16-bit patterns for bf16 and f16. The weight handle of the CPU backends (reference and BLAS).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "kernels/onednn_matmul.h"

namespace moe::kernels {

class HostMatrix final : public Matrix {
 public:
  // data: [rows, cols], row-major; the caller checked data.size() == rows * cols. Rounds to
  // `dtype` (nearest-even) once, here.
  HostMatrix(std::span<const float> data, size_t rows, size_t cols, DType dtype);

  // [rows, cols]; only for dtype() == kF32 (empty otherwise).
  std::span<const float> data() const { return f32_; }
  // [rows, cols] bf16 or f16 bit patterns; only for those dtypes, and empty once packed.
  std::span<const uint16_t> half() const { return half_; }
  // The CPU backend's oneDNN layout of a bf16 matrix (replacing half()); null when not packed.
  const PackedWeights* packed() const { return packed_.get(); }
  void setPacked(std::unique_ptr<PackedWeights> p) {
    packed_ = std::move(p);
    std::vector<uint16_t>().swap(half_);  // the plain copy is freed: one copy resident
  }
  // Element i widened to fp32 (exact for every dtype); not for packed matrices.
  float at(size_t i) const;
  // The whole matrix widened to fp32 into out[rows * cols].
  void widen(std::span<float> out) const;
  size_t residentBytes() const override {
    return f32_.capacity() * sizeof(float) + half_.capacity() * sizeof(uint16_t) +
           (packed_ ? packed_->bytes() : 0);
  }

 private:
  std::vector<float> f32_;
  std::vector<uint16_t> half_;
  std::unique_ptr<PackedWeights> packed_;
};

}  // namespace moe::kernels
