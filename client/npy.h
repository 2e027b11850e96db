// Reads a 2-D float32 array from a NumPy .npy file (the client's token input format).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace moe::client {

struct NpyMatrix {
  uint64_t rows = 0, cols = 0;
  std::vector<float> values;  // [rows, cols]
};

// Accepts format versions 1–3, dtype '<f4', C order, 2-D shape. Errors name the file and problem.
Result<NpyMatrix> readNpyF32(const std::string& path);

}  // namespace moe::client
