// Elementwise SwiGLU activation on the GPU.  Host-callable launcher; kernel in swiglu.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace moe::kernels::cuda {

// out[i] = silu(gate[i]) * up[i] for i < n; device pointers; out may alias gate or up.
// Returns the launch error.
cudaError_t launchSwiglu(const float* gate,  // [n]
                         const float* up,    // [n]
                         float* out,         // [n]
                         size_t n, cudaStream_t stream);

}  // namespace moe::kernels::cuda
