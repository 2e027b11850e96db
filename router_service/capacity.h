// Expert capacity (Switch/GShard-style token dropping): at most
// cap = ceil(capacity_factor · T · k / E) assignments per FFN expert and batch. Over the cap, the
// expert keeps its highest-weight assignments (ties: the earlier token) and the rest are dropped:
// weight 0, marked in RoutingDecision::dropped, never sent to a shard. A token may lose some or
// all of its experts; the residual stream carries it on. Kept weights are rescaled to the token's
// pre-drop weight sum only when routing.capacity_renormalize is set.
// MoE++'s zero-computation experts (ids >= numFfnExperts) cost nothing and are never capped.
#pragma once

#include <cstdint>

#include "common/config.h"
#include "router_service/gating.h"

namespace moe::router {

// The cap for a batch of T tokens; UINT32_MAX when capacity is off.
uint32_t expertCapacity(const RoutingOptions& routing, uint32_t T, uint32_t k, uint32_t E);

// Applies the cap to `d` in place; returns the number of assignments dropped.
uint32_t applyCapacity(RoutingDecision& d, const RoutingOptions& routing, uint32_t numExperts,
                       uint32_t numFfnExperts);

}  // namespace moe::router
