// Row gather and weighted scatter-add around a grouped expert GEMM.  Host-callable launchers;
// kernels in gather_scatter.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moe::kernels::cuda {

// xs[i, :] = x[rows[i], :] for i < n.  Device pointers.  Returns the launch error.
cudaError_t launchGatherRows(const float* x,        // [R, H]
                             const uint32_t* rows,  // [n], each < R
                             size_t n, size_t H,
                             float* xs,  // [n, H]
                             cudaStream_t stream);

// y[rows[i], :] += weights[i] * out[i, :] for i < n.  rows must be distinct: every output element
// has exactly one writer, so no atomics are needed and the result is deterministic.
cudaError_t launchWeightedScatterAdd(const float* out,      // [n, H]
                                     const uint32_t* rows,  // [n], distinct, each < R
                                     const float* weights,  // [n]
                                     size_t n, size_t H,
                                     float* y,  // [R, H]
                                     cudaStream_t stream);

}  // namespace moe::kernels::cuda
