// The plain data that flows between the router's request stages (DESIGN.md §3): a decoded
// request, a merged batch of requests for one layer, and the reply each request gets back. No RPC
// types here, so every stage can be unit-tested on plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "common/tensor_wire.h"
#include "router_service/gating.h"

namespace moe::router {

using Clock = std::chrono::steady_clock;

inline uint64_t microsSince(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

// One Router.forward call after decoding: shapes, limits and finiteness already checked.
struct ForwardRequest {
  uint32_t layer = 0;
  uint32_t tokens = 0;
  std::shared_ptr<const F32Rows> hidden;      // [tokens, H]; may view the request message
  std::shared_ptr<const F32Rows> prevLogits;  // [tokens, E] MoE++ gating residual, or null
  bool returnRouting = false;
  std::optional<uint64_t> noiseSeed;  // noisy top-k on, with this seed
};

// Requests for one layer merged into one batch: their rows back to back, in member order.
struct Batch {
  struct Member {
    uint32_t offset = 0;  // first row of this request in `x`
    uint32_t tokens = 0;
    std::shared_ptr<const F32Rows> prevLogits;
    bool returnRouting = false;
    std::optional<uint64_t> noiseSeed;
  };
  uint32_t layer = 0;
  uint32_t tokens = 0;   // Σ members' tokens
  std::vector<float> x;  // [tokens, H], owned: the batch never reads a request message again
  std::vector<Member> members;
};

// What one request's reply reports about the work done for it.
struct RequestStats {
  uint32_t shardCalls = 0;  // shard calls that carried at least one of its tokens
  uint32_t rowsSent = 0;    // its token rows sent to shards (a row once per shard)
  uint32_t routerRows = 0;  // its assignments served by MoE++ zero-computation experts
  uint32_t sharedRows = 0;  // its tokens that went through a shared expert
  uint32_t dropped = 0;     // its assignments dropped by capacity
  uint32_t batchRequests = 1;
  uint32_t batchTokens = 0;
  uint64_t gateMicros = 0;      // gating + planning of its batch
  uint64_t dispatchMicros = 0;  // fan-out to combine of its batch
};

// One request's result.
struct ForwardReply {
  std::vector<float> output;  // [T, H]
  RoutingDecision routing;    // its own tokens' routing
  std::vector<float> logits;  // [T, E] gate logits (residual included, no noise)
  RequestStats stats;
};

}  // namespace moe::router
