// HostMatrix: rounding to the resident dtype at upload and widening back; see host_matrix.h.
#include "kernels/host_matrix.h"

#include <cstring>

namespace moe::kernels {

HostMatrix::HostMatrix(std::span<const float> data, size_t rows, size_t cols, DType dtype)
    : Matrix(rows, cols, dtype) {
  switch (dtype) {
    case DType::kF32:
      f32_.assign(data.begin(), data.end());
      break;
    case DType::kBF16:
      half_.resize(data.size());
      for (size_t i = 0; i < data.size(); ++i) half_[i] = floatToBf16(data[i]);
      break;
    case DType::kF16:
      half_.resize(data.size());
      for (size_t i = 0; i < data.size(); ++i) half_[i] = floatToF16(data[i]);
      break;
    default:  // storage-only dtypes: refused by every backend's upload before this
      f32_.assign(data.begin(), data.end());
      break;
  }
}

float HostMatrix::at(size_t i) const {
  switch (dtype()) {
    case DType::kF32:
      return f32_[i];
    case DType::kBF16:
      return bf16ToFloat(half_[i]);
    case DType::kF16:
      return f16ToFloat(half_[i]);
    default:
      break;
  }
  return 0.0f;
}

void HostMatrix::widen(std::span<float> out) const {
  if (half_.empty()) {
    std::memcpy(out.data(), f32_.data(), f32_.size() * sizeof(float));
    return;
  }
  convertToF32(dtype(), std::as_bytes(std::span<const uint16_t>(half_)), out);
}

}  // namespace moe::kernels
