// Missing experts in the reference layer: `routing.missing_expert` (error | renormalize |
// reroute) written again from its specification, op by op, on the reference routing's outputs
// and independently of router_service/missing_experts.h, so tests can check the router's
// degraded routing against it.
//
// An assignment is lost when capacity did not drop it and its expert is an FFN expert
// (id < numFfnExperts) with available[id] == 0; MoE++'s zero-computation experts are always
// available.
//   error        fails with Unavailable "layer L: experts a, b have no available replica" (the
//                distinct lost experts, ascending; "expert a has" for one); routing unchanged.
//   renormalize  lost assignments get dropped = 1 and weight 0; each such token's remaining
//                weights are multiplied by (its weight sum before) / (its weight sum after), when
//                the latter is above 0.
//   reroute      each lost slot of a token, in slot order, takes the expert with the highest
//                selection score (softmax p, or sigmoid σ + bias for DeepSeek-V3; after MoE++'s
//                logits norm; no group limit; ties to the lower id) that is available and not yet
//                among the token's ids; none left: dropped as above. The token's weights are then
//                recomputed by the family's reference formula over its slots not dropped;
//                PhiMoE's sparsemixer has no per-expert weight to recompute from, so a rerouted
//                PhiMoE token's weights are its experts' softmax p (no jitter mask, no renorm).
// Each token that lost an assignment is marked in routing.affected [T] (left empty when none).
#pragma once

#include <cstdint>
#include <span>

#include "client/reference/in_process_layer.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "common/result.h"

namespace moe::client {

struct ReferenceMissingCounts {
  uint32_t assignments = 0;  // lost assignments (dropped or moved)
  double weightLost = 0;     // their weights before
};

// Applies `policy` to routing.ids / weights / dropped ([T, k]; dropped may be empty = none) as
// routed from `logits` [T, E] (noisy when noise was on); bias: [E] or empty; available:
// [numFfnExperts].
Result<ReferenceMissingCounts> applyReferenceMissingExperts(
    const ModelConfig& model, MissingExpertPolicy policy, uint32_t layer,
    std::span<const float> logits, std::span<const float> bias, std::span<const uint8_t> available,
    ReferenceRouting& routing);

}  // namespace moe::client
