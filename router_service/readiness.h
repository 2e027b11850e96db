// The router's readiness, from the shards' health: ready while every expert of every MoE layer
// (and every shard-held shared expert) has a verified, usable replica — or, when routing may
// degrade (routing.missing_expert renormalize / reroute), while every layer keeps at least one.
// `why` lists the missing experts and the shards out of rotation with their reasons.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "router_service/router_model.h"
#include "router_service/shard_health.h"
#include "router_service/shard_transport.h"

namespace moe::router {

struct Readiness {
  bool ready = true;
  std::string why;
  std::map<uint32_t, uint32_t> unavailable;  // MoE layer -> FFN experts with no usable replica
};

Readiness assessReadiness(const RouterModel& model, const ShardHealth& health,
                          const ShardTransport& transport, bool degradedRoutingAllowed);

}  // namespace moe::router
