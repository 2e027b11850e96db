// The CPU softmax + top-k routing shared by the reference and BLAS backends. It is one plain loop
// nest with no fast path, so there is nothing for a second CPU copy to check; the CUDA kernel is
// what backend_ops_test compares against it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace moe::kernels {

// Semantics of Backend::softmaxTopk (backend.h); arguments already validated by
// checkSoftmaxTopk.  Softmax is computed in fp32 after subtracting the row max.  Ranking is by
// probability, descending; equal probabilities rank the lower expert id first; a NaN probability
// ranks as -inf (callers reject NaN logits, this only keeps the order well-defined).
void cpuSoftmaxTopk(std::span<const float> logits,  // [T, E]
                    size_t T, size_t E, size_t k, bool renormalize,
                    std::span<uint32_t> ids,  // [T, k]
                    std::span<float> weights  // [T, k]
);

}  // namespace moe::kernels
