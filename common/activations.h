// Token rows in host memory as a typed view: fp32, or bf16 exactly as a bf16 wire carries them.
// This is what a backend's expertFfn takes (kernels/backend.h): a shard hands a bf16 wire's rows
// to its backend as they arrived, and the backend alone decides where, and whether, they widen
// (the CPU bf16 path gathers them straight into its GEMM input; nothing rounds them twice).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/dtype.h"

namespace moe {

class Activations {
 public:
  Activations() = default;  // no rows, f32
  // Implicit: every fp32 caller passes its rows as they are.
  Activations(std::span<const float> f32)  // NOLINT(google-explicit-constructor)
      : dtype_(DType::kF32), data_(f32.data()), size_(f32.size()) {}
  Activations(const std::vector<float>& f32)  // NOLINT(google-explicit-constructor)
      : Activations(std::span<const float>(f32)) {}
  static Activations bf16(std::span<const uint16_t> values) {
    Activations a;
    a.dtype_ = DType::kBF16;
    a.data_ = values.data();
    a.size_ = values.size();
    return a;
  }

  DType dtype() const { return dtype_; }  // kF32 or kBF16
  size_t size() const { return size_; }   // elements
  bool empty() const { return size_ == 0; }
  std::span<const float> f32() const;      // dtype() == kF32
  std::span<const uint16_t> bf16() const;  // dtype() == kBF16

  // Elements [first, first + count), as a view of the same dtype.
  Activations slice(size_t first, size_t count) const;
  // out[i] = element i in fp32 (exact for both dtypes); out.size() == size().
  void widenInto(std::span<float> out) const;
  // Index of the first NaN or Inf element, or -1.
  int64_t firstNonFinite() const;

 private:
  DType dtype_ = DType::kF32;
  const void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moe
