// Softmax + top-k routing on the GPU: one warp per token row.  Host-callable launcher only; the
// kernel lives in softmax_topk.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moe::kernels::cuda {

// Same semantics as Backend::softmaxTopk and cpuSoftmaxTopk: fp32 softmax after subtracting the
// row max, descending probability, ties to the lower expert id, NaN ranked as -inf.  All pointers
// are device memory; arguments already validated (1 <= k <= E).  Returns the launch error.
cudaError_t launchSoftmaxTopk(const float* logits,  // [T, E]
                              size_t T, size_t E, size_t k, bool renormalize,
                              uint32_t* ids,   // [T, k]
                              float* weights,  // [T, k]
                              cudaStream_t stream);

}  // namespace moe::kernels::cuda
