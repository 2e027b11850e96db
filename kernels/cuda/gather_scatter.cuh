// Row gather and weighted scatter-add around a grouped expert GEMM.  Host-callable launchers;
// kernels in gather_scatter.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moe::kernels::cuda {

// xs[i, :] = x[rows[i], :] for i < n, times scale[i] when `scale` is not null (a routing weight
// applied to the expert's input).  Device pointers.  Returns the launch error.
cudaError_t launchGatherRows(const float* x,        // [R, H]
                             const uint32_t* rows,  // [n], each < R
                             size_t n, size_t H,
                             float* xs,  // [n, H]
                             cudaStream_t stream,
                             const float* scale = nullptr);  // [n] or null

// y[rows[i], :] += weights[i] * (out[i, :] + bias) for i < n; a null `bias` adds nothing, null
// `weights` weighs 1.  rows must be distinct: every output element has exactly one writer, so no
// atomics are needed and the result is deterministic.
cudaError_t launchWeightedScatterAdd(const float* out,      // [n, H]
                                     const uint32_t* rows,  // [n], distinct, each < R
                                     const float* weights,  // [n] or null
                                     size_t n, size_t H,
                                     float* y,  // [R, H]
                                     cudaStream_t stream,
                                     const float* bias = nullptr);  // [H] or null

}  // namespace moe::kernels::cuda
