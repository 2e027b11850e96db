// The encode stage: one shard's share of a batch written into its ExpertShard.run request — the
// unique token rows it needs, gathered from the batch (scaled by k for MoE++, whose experts see
// k·x) in the wire dtype (router.wire_dtype: f32, or bf16 for half the bytes), and its segments.
// Runs on a compute thread, straight into the request message.
#pragma once

#include <cstdint>
#include <span>

#include "common/dtype.h"
#include "common/proto/moe.capnp.h"
#include "router_service/dispatch_plan.h"

namespace moe::router {

// x: the batch's rows [T, H]. `scale` multiplies each row (1: a plain copy). `wire`: kF32 or
// kBF16 (rounded to nearest even); the shard answers in the same dtype.
void encodeShardCall(const ShardWork& work, uint32_t layer, std::span<const float> x, uint32_t H,
                     float scale, DType wire, proto::ExpertShard::RunParams::Builder request);

}  // namespace moe::router
