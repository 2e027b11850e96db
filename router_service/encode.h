// The encode stage: one shard's share of a batch written into its ExpertShard.run request — the
// unique token rows it needs, gathered from the batch (scaled by k for MoE++, whose experts see
// k·x) in f32, and its segments. Runs on a compute thread, straight into the request message.
#pragma once

#include <cstdint>
#include <span>

#include "common/proto/moe.capnp.h"
#include "router_service/dispatch_plan.h"

namespace moe::router {

// x: the batch's rows [T, H]. `scale` multiplies each row (1: a plain copy).
void encodeShardCall(const ShardWork& work, uint32_t layer, std::span<const float> x, uint32_t H,
                     float scale, proto::ExpertShard::RunParams::Builder request);

}  // namespace moe::router
