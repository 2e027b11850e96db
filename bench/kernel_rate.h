// The expert kernel against the compute limit (issue 12, DESIGN §8): one expertFfn call over E
// experts sharing `rows` token rows top-k (what a shard call of a large batch is) against the dense
// GEMMs of the same total shape — the three products of rows·k tokens through one expert's W1, W3,
// W2 — in the experts' dtype on the same machine. Dense bf16 is oneDNN itself on bf16 rows and
// packed weights (no conversion counted), dense f32 the BLAS backend's linear (OpenBLAS/oneDNN).
#pragma once

#include <cstddef>
#include <string>

#include "common/dtype.h"

namespace moe::bench {

struct KernelRate {
  double ffnGflops = 0;    // expertFfn: gather, W1/W3, activation, W2, weighted scatter
  double denseGflops = 0;  // the three dense GEMMs only
  std::string kernelPath;  // the backend's path for the dtype
  std::string denseWhat;   // what the dense side ran
  size_t rowsPerExpert = 0;
};

// H, I: the expert's hidden and intermediate sizes; E experts, each token row goes to k of them
// (round-robin, so every expert gets rows·k/E rows); medians of `repeats` runs after a warm-up.
KernelRate measureKernelRate(DType dtype, size_t H, size_t I, size_t E, size_t k, size_t rows,
                             int repeats);

}  // namespace moe::bench
