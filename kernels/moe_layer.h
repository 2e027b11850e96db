// A whole Mixtral-style MoE layer computed in one process, the straightforward way, as the
// ground truth for the distributed cluster.
//
// It deliberately shares nothing with the serving path beyond the Backend primitives: no
// dispatch plan, no RPC, no expertFfn grouping, no combine step.  Router logits, softmax/top-k,
// then expert by expert: gather the tokens that chose it, run its FFN with linear/swiglu/linear,
// and add weight · result into y.  So a parity test can run the cluster and this function on the
// same weights and inputs and compare; a bug in planning, transport or combining shows up as a
// difference instead of being reproduced on both sides.
#pragma once

#include <cstddef>
#include <span>

#include "common/result.h"
#include "kernels/backend.h"

namespace moe::kernels {

// y = Σ_{j < k} weight[t, j] · FFN_{ids[t, j]}(x[t]) for every token t, where (ids, weight) =
// softmaxTopk(x · gateᵀ) as in Backend::softmaxTopk (renormalize as given).  All matrices were
// uploaded to `b`.  y is overwritten.  Fails (y unspecified) on shape mismatch or backend error.
Status moeLayerInProcess(Backend& b,
                         const Matrix& gate,                         // [E, H]
                         std::span<const ExpertFfnWeights> experts,  // [E]
                         std::span<const float> x,                   // [T, H]
                         size_t T, size_t H, size_t k, bool renormalize,
                         std::span<float> y);  // [T, H]

// The expert half of the above with the routing given: y = Σ_j weights[t, j] ·
// FFN_{ids[t, j]}(x[t]) (Σ_j FFN_{ids[t, j]}(weights[t, j] · x[t]) when `weightOnInput`, Llama 4),
// expert by expert through linear / bias / activation / linear / bias, each expert with its own
// biases and activation (backend.h ExpertFfnWeights). For routing rules that are computed
// elsewhere (a family's reference routing in the checks).
Status moeExpertsInProcess(Backend& b, std::span<const ExpertFfnWeights> experts,  // [E]
                           std::span<const float> x,                               // [T, H]
                           size_t T, size_t H, size_t k,
                           std::span<const uint32_t> ids,   // [T, k]
                           std::span<const float> weights,  // [T, k]
                           std::span<float> y,              // [T, H]
                           bool weightOnInput = false);

}  // namespace moe::kernels
