// See activations.h.
#include "common/activations.h"

#include <algorithm>
#include <cmath>

namespace moe {

std::span<const float> Activations::f32() const {
  return dtype_ == DType::kF32 ? std::span(static_cast<const float*>(data_), size_)
                               : std::span<const float>();
}

std::span<const uint16_t> Activations::bf16() const {
  return dtype_ == DType::kBF16 ? std::span(static_cast<const uint16_t*>(data_), size_)
                                : std::span<const uint16_t>();
}

Activations Activations::slice(size_t first, size_t count) const {
  Activations a = *this;
  a.data_ = static_cast<const std::byte*>(data_) + first * dtypeSize(dtype_);
  a.size_ = count;
  return a;
}

void Activations::widenInto(std::span<float> out) const {
  if (dtype_ == DType::kF32) {
    std::copy(f32().begin(), f32().end(), out.begin());
    return;
  }
  const std::span<const uint16_t> in = bf16();
  for (size_t i = 0; i < in.size(); ++i) out[i] = bf16ToFloat(in[i]);
}

int64_t Activations::firstNonFinite() const {
  if (dtype_ == DType::kF32) {
    const std::span<const float> v = f32();
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
    }
    return -1;
  }
  const std::span<const uint16_t> v = bf16();
  for (size_t i = 0; i < v.size(); ++i) {
    if ((v[i] & 0x7f80u) == 0x7f80u) return static_cast<int64_t>(i);  // exponent all ones
  }
  return -1;
}

}  // namespace moe
