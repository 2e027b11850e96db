// Gating: which experts each token goes to, and with what weight. Scores are computed in fp32 on
// the router's backend; the decision is plain data that the dispatch planner consumes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "common/result.h"
#include "kernels/backend.h"

namespace moe::router {

class GateNetwork;

struct RoutingDecision {
  uint32_t tokens = 0;
  uint32_t k = 0;
  std::vector<uint32_t> ids;      // [tokens, k], per token in descending weight (ties: lower id)
  std::vector<float> weights;     // [tokens, k]
  std::vector<double> probSum;    // [E] Σ over tokens of softmax(logits)[e], for load statistics
  std::vector<uint8_t> dropped;   // [tokens, k] 1 = not computed, weight 0: over the expert's
                                  // capacity, or (routing.missing_expert: renormalize / reroute)
                                  // its expert had no replica left; empty when nothing was dropped
  std::vector<uint8_t> affected;  // [tokens] 1 = an assignment was dropped or moved because its
                                  // expert had no replica (missing_experts.h); empty when none

  bool isDropped(size_t at) const { return !dropped.empty() && dropped[at] != 0; }
};

// What routing one batch produced.
struct GateResult {
  RoutingDecision decision;
  std::vector<float> logits;  // [T, E] the gate network's logits (with the residual, no noise)
};

// What a call adds to the layer's own routing.
struct GateInputs {
  std::span<const float> prevLogits;  // [T, E] MoE++ gating residual, or empty
  std::optional<uint64_t> noiseSeed;  // noisy top-k on, with this seed
  uint32_t layer = 0;                 // keys the noise draws
};

// One request's routing from its gate logits [T, E] (residual included): the noise term when
// `inputs.noiseSeed` (x is that request's rows [T, H]), then the family's rule (routing.h). The
// plain softmax families without noise use the backend's softmax_topk op; the other rules run
// on the CPU. `bias`: [E] (DeepSeek-V3) or empty. Every step is per token, so a token's routing
// does not depend on the other tokens of the call.
Result<RoutingDecision> routeRequest(kernels::Backend& backend, const GateNetwork& gate,
                                     std::span<const float> x, std::span<const float> logits,
                                     uint32_t T, const ModelConfig& model,
                                     std::span<const float> bias, const GateInputs& inputs);

// One request alone, from its tokens: gate logits, the residual, then routeRequest.
Result<GateResult> routeTokens(kernels::Backend& backend, const GateNetwork& gate,
                               std::span<const float> x,  // [T, H]
                               uint32_t T, const ModelConfig& model, std::span<const float> bias,
                               const GateInputs& inputs);

}  // namespace moe::router
