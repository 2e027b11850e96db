// Degraded routing when no replica of an expert is left (config `routing.missing_expert`,
// MissingExpertPolicy in common/config.h): what becomes of a request's token→expert assignments
// whose FFN expert no shard can serve. Pure functions on one request's routing, applied after the
// family's rule (routing.h) and capacity (capacity.h); the request path passes the experts its
// view of the shards says are available.
//
// An assignment (token t, slot j) is *lost* when capacity did not drop it and its expert e is
// unavailable: e < available.size() and available[e] == 0. `available` covers the FFN experts
// ([numFfnExperts]); ids at or past its end are MoE++'s zero-computation experts, computed on the
// router, so always available.
//
//   error        Any lost assignment fails the request with Unavailable, naming the layer and
//                the distinct missing experts it needs, ascending: "layer 3: experts 5, 7 have no
//                available replica" ("expert 5 has" for one). The routing is left unchanged.
//   renormalize  Every lost assignment is dropped: dropped = 1, weight 0, its id kept (the reply
//                shows which expert was missing). Per token with a lost assignment:
//                S = Σ_j w_j over its k slots before, K = Σ_j w_j after the drop; the remaining
//                weights are multiplied by S / K, so they sum to S again. When K = 0 (nothing
//                left, or only MoE++'s zero expert) every weight stays 0: the token gets only the
//                shared expert's and the residual's part.
//   reroute      Per token, its lost slots in slot order each take the best-scoring expert that
//                is available and not among the token's experts (its k ids, capacity-dropped and
//                lost ones included, and the replacements already picked). Best-scoring = the
//                highest selection score of the family (routing.h scoreToken): softmax p, or
//                sigmoid σ plus DeepSeek-V3's bias, of the logits as routed (MoE++'s logits norm
//                applied), with no group limit — a replacement may come from any group; ties
//                to the lower id. A slot with no candidate left is dropped as under renormalize.
//                Then the token's weights are those of its new set (the slots not dropped, by
//                capacity or here): w_j = the family's weight score of its expert (p or σ, never
//                the bias; 0 for MoE++'s zero expert), total = Σ_j w_j, finished by the family's
//                weighting rule (routing.h finishWeights: normalize, DeepSeek-V2 or DeepSeek-V3
//                scaling) exactly as routeLogits does; when total = 0 the weights stay 0. A
//                replacement takes the lost slot's place (slots are then not in descending
//                weight order). Capacity is not applied again: a replacement is never capped,
//                and capacity_renormalize's rescaling is replaced by the new set's weighting.
//                PhiMoE's sparsemixer weighs a pick against the logits near it, not by a score
//                of its own, so there a rerouted token's weights are its experts' softmax p (the
//                weight sparsemixer would give with no jitter mask), never renormalized.
//
// Both rewriting modes mark every token with a lost assignment in d.affected ([tokens]; left
// empty when no token lost one) and count the lost assignments (dropped or moved) and the weight
// they had. Capacity-dropped assignments are never lost, moved or counted.
#pragma once

#include <cstdint>
#include <span>

#include "common/config.h"
#include "common/result.h"
#include "router_service/gating.h"
#include "router_service/routing.h"

namespace moe::router {

struct MissingExpertOutcome {
  uint32_t assignments = 0;  // assignments dropped or moved
  double weightLost = 0;     // Σ original weights of those assignments
};

// Applies `policy` to one request's routing `d` (its tokens only; `logits` [T, E] are that
// request's gate logits as routed — residual included; when noise was on, pass the noisy scores)
// given which experts can be served: available[e] != 0. kError: returns Unavailable naming `layer`
// and the missing experts when any kept assignment needs one (d unchanged); else rewrites d in
// place (ids, weights, dropped, d.affected) and returns the counts. Shapes that do not fit
// (logits, bias, available longer than E, d.k != rule.k) are Internal errors, d unchanged.
Result<MissingExpertOutcome> applyMissingExperts(RoutingDecision& d, std::span<const float> logits,
                                                 uint32_t E, const RoutingRule& rule,
                                                 std::span<const float> bias,
                                                 std::span<const uint8_t> available,
                                                 MissingExpertPolicy policy, uint32_t layer);

// FFN experts with no available replica (the moe_experts_unavailable gauge).
uint32_t countUnavailable(std::span<const uint8_t> available);

}  // namespace moe::router
