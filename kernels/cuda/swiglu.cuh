// Activation kernels on the GPU: the Backend::swiglu op, and the grouped expert FFN's fused
// activation over every entry of a call.  Host-callable launchers; kernels in swiglu.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/cuda/grouped_ffn.cuh"

namespace moe::kernels::cuda {

// out[i] = silu(gate[i]) * up[i] for i < n; device pointers; out may alias gate or up.
// Returns the launch error.
cudaError_t launchSwiglu(const float* gate,  // [n]
                         const float* up,    // [n]
                         float* out,         // [n]
                         size_t n, cudaStream_t stream);

// The expert FFN's activation (kernels/backend.h FfnActivation) for every entry e < entries, in
// group g = entryGroup[e] at row j = e - groups[g].firstEntry, over its I = groups[g].inter
// elements at groups[g].hOffset + j·I of h1 and h3 (`type`), biases (fp32) added first:
//   u = h3 + b3;  kRelu2: out = max(u, 0)²
//   g = h1 + b1;  kSwiglu: out = silu(g) · u
//                 kClampedSwiglu: out = (clamp(u, -limit, limit) + 1) · gc · σ(alpha · gc),
//                                 gc = min(g, limit)                                   (gpt-oss)
// computed in fp32 and written over h1 in `type` (the W2 GEMM's input).  h1 is not read for
// kRelu2 (a non-gated FFN has no W1 output).  One block per entry.  Returns the launch error.
cudaError_t launchExpertActivation(void* h1,        // the groups' [rows, inter] blocks
                                   const void* h3,  // the same layout
                                   ComputeType type, const uint32_t* entryGroup,  // [entries]
                                   const FfnGroup* groups, size_t entries, cudaStream_t stream);

}  // namespace moe::kernels::cuda
