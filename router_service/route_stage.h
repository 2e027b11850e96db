// The gate+route and plan stages over a merged batch (runs on a compute thread): one gate pass
// over every row of the batch ("gating sharing"), then, per request as if it were alone, its
// gating residual, noise (its own seed, its own token indices), the family's rule and capacity;
// and what becomes of assignments whose expert has no available replica (routing.missing_expert:
// the request fails alone, or its routing is renormalized or rerouted); then what the router adds
// itself (shared expert, MoE++ zero-computation experts) and one dispatch plan for the batch. The
// gate kernel is row-invariant, so a token's routing is bit-identical whatever else shares its
// batch.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "router_service/dispatch_plan.h"
#include "router_service/forward_types.h"
#include "router_service/missing_experts.h"
#include "router_service/router_model.h"

namespace moe::router {

// One request's share of the routing.
struct MemberRouting {
  Status status;                 // not ok: the request fails (e.g. an expert it needs is gone)
  RoutingDecision decision;      // its tokens only
  std::vector<float> logits;     // [T, E] residual included, no noise
  uint32_t dropped = 0;          // assignments dropped by capacity
  uint32_t zeroCompute = 0;      // assignments served by zero-computation experts
  MissingExpertOutcome missing;  // assignments dropped or moved: their expert had no replica
};

// The replicas a batch uses, chosen on the event loop from the shards' health before routing.
struct ReplicaChoice {
  std::vector<uint32_t> shardOfExpert;  // [FFN experts] the replica; UINT32_MAX: none available
  uint32_t sharedShard = UINT32_MAX;    // the shared expert's replica, when it lives on shards
  std::vector<uint8_t> available;       // [E] 1: the expert can be served (zero-compute: always)
  std::vector<std::string> why;         // [FFN experts] for an unavailable one: its holders' state
};

struct RoutedBatch {
  std::vector<MemberRouting> members;  // in batch member order
  RoutingDecision merged;              // every token of the batch, for planning and metrics
  std::vector<float> local;            // [T, H] the router's own contribution, or empty
  DispatchPlan plan;
  bool hasShared = false;  // every token also went through the layer's shared expert
  // The block's output factor on routed + shared (ModelConfig::blockOutputScale: Cohere2-MoE's
  // "average" is 1/2), applied by the combine stage once every part is in.
  float outputScale = 1.0f;
};

Result<RoutedBatch> routeBatch(const LayerModel& layer, const Batch& batch,
                               const ReplicaChoice& replicas);

}  // namespace moe::router
