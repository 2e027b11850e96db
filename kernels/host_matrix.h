// A Matrix kept in host memory as a row-major std::vector<float>: the weight handle of the CPU
// backends (reference and BLAS), which both compute directly on it.
#pragma once

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace moe::kernels {

class HostMatrix final : public Matrix {
 public:
  // data: [rows, cols], row-major; the caller checked data.size() == rows * cols.
  HostMatrix(std::vector<float> data, size_t rows, size_t cols)
      : Matrix(rows, cols), data_(std::move(data)) {}
  std::span<const float> data() const { return data_; }  // [rows, cols]

 private:
  std::vector<float> data_;
};

}  // namespace moe::kernels
