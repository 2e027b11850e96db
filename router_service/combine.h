// The combine stage (runs on a compute thread): each request's output is the router's own
// contribution plus the weighted partial sums its shards returned, times the block's output scale
// (Cohere2-MoE averages routed and shared), split back per request. A shard call that failed
// fails only the requests that had a token on it (with that shard's error, Internal when the
// shard rejected what the router sent); the others are served.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/proto/moe.capnp.h"
#include "common/result.h"
#include "common/tensor_wire.h"
#include "router_service/forward_types.h"
#include "router_service/route_stage.h"

namespace moe::router {

// What one shard call of the plan came back with.
struct ShardPartial {
  Status status;                  // why there are no rows
  std::unique_ptr<F32Rows> rows;  // [R, H], R the rows the call carried
};

// Checks one shard's reply against what was sent (shape [R, H]) and decodes it to f32.
ShardPartial decodeShardReply(proto::ExpertShard::RunResults::Reader reply, const ShardWork& work,
                              uint32_t H, const std::string& shardLabel);

// The batch's timings that every member's stats report.
struct BatchTimings {
  uint64_t gateMicros = 0;
  uint64_t dispatchMicros = 0;
};

// One reply per batch member, in member order. works: the calls that count (the plan's, with a
// failed one replaced by its failover calls); partials: one per work.
std::vector<Result<ForwardReply>> combineBatch(const Batch& batch, RoutedBatch& routed,
                                               std::span<const ShardWork> works,
                                               std::span<const ShardPartial> partials, uint32_t H,
                                               const BatchTimings& timings);

}  // namespace moe::router
