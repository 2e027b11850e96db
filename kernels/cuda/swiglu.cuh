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

// The expert FFN's gated activation over h1, h3 [n, I] (kernels/backend.h FfnActivation), with
// optional biases added first: g = h1 + b1, u = h3 + b3 (null: no bias); then
//   clamped == false: out = silu(g) * u
//   clamped == true:  out = (clamp(u, -limit, limit) + 1) * gc * sigmoid(alpha * gc),
//                     gc = min(g, limit)                                           (gpt-oss)
// Device pointers; out may alias h1 or h3.  Returns the launch error.
cudaError_t launchGatedActivation(const float* h1,  // [n, I]
                                  const float* h3,  // [n, I]
                                  const float* b1,  // [I] or null
                                  const float* b3,  // [I] or null
                                  float* out,       // [n, I]
                                  size_t n, size_t I, bool clamped, float alpha, float limit,
                                  cudaStream_t stream);

// NemotronH's non-gated relu² over h3 [n, I] with optional bias b3 first: out = max(h3 + b3, 0)².
// Device pointers; out may alias h3.  Returns the launch error.
cudaError_t launchRelu2(const float* h3,  // [n, I]
                        const float* b3,  // [I] or null
                        float* out,       // [n, I]
                        size_t n, size_t I, cudaStream_t stream);

}  // namespace moe::kernels::cuda
