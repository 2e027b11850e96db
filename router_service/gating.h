// Gating: which experts each token goes to, and with what weight. Scores are computed in fp32 on
// the router's backend; the decision is plain data that the dispatch planner consumes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "common/result.h"
#include "kernels/backend.h"

namespace moe::router {

struct RoutingDecision {
  uint32_t tokens = 0;
  uint32_t k = 0;
  std::vector<uint32_t> ids;    // [tokens, k], per token in descending weight (ties: lower id)
  std::vector<float> weights;   // [tokens, k]
  std::vector<double> probSum;  // [E] Σ over tokens of softmax(logits)[e], for load statistics
};

// Mixtral routing: logits = x·Wgᵀ, p = softmax(logits), top-k, weights renormalized over the k
// chosen when `renormalize`.
Result<RoutingDecision> softmaxTopkRouting(kernels::Backend& backend, const kernels::Matrix& gate,
                                           std::span<const float> x,  // [T, H]
                                           uint32_t T, uint32_t k, bool renormalize);

// The family's routing (routing.h) on top of the gate GEMM: the softmax families use the backend's
// softmax_topk op; DeepSeek's grouped / sigmoid rules run on the CPU. `bias`: [E] or empty.
Result<RoutingDecision> routeTokens(kernels::Backend& backend, const kernels::Matrix& gate,
                                    std::span<const float> x,  // [T, H]
                                    uint32_t T, const ModelConfig& model,
                                    std::span<const float> bias);

}  // namespace moe::router
