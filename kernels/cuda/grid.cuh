// Launch geometry shared by the elementwise kernels: fixed-size blocks and a capped grid, with
// the kernels looping grid-stride so any element count fits.
#pragma once

#include <algorithm>
#include <cstddef>

namespace moe::kernels::cuda {

constexpr unsigned kElementwiseBlock = 256;

// Enough blocks to cover n elements once, capped (the kernels stride over the rest); n > 0.
inline unsigned elementwiseGrid(size_t n) {
  constexpr size_t kMaxBlocks = 8192;
  return static_cast<unsigned>(
      std::min(kMaxBlocks, (n + kElementwiseBlock - 1) / kElementwiseBlock));
}

}  // namespace moe::kernels::cuda
