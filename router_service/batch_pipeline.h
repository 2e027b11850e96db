// BatchPipeline: serves one merged batch through the stages after admission —
//   route+plan+encode (one compute job) → transport (event loop, all shards in flight at once)
//   → combine (compute thread)
// Requests are taken from the transport before routing for every connected shard of the layer,
// so encoding joins the routing job (two thread hops per batch, not one more per shard); a
// shard that must connect first is encoded in a job of its own once it is.
// and answers one Result per request. Only the transport runs on the event loop, so the loop
// keeps accepting requests (which queue for the next batch) while a batch is gated or combined.
#pragma once

#include <kj/async.h>

#include <map>
#include <memory>
#include <vector>

#include "common/compute_executor.h"
#include "router_service/batcher.h"
#include "router_service/combine.h"
#include "router_service/router_metrics.h"
#include "router_service/router_model.h"
#include "router_service/shard_transport.h"

namespace moe::router {

class BatchPipeline {
 public:
  // `metrics` may be null (unit tests).
  BatchPipeline(const RouterModel& model, ShardTransport& transport, ComputeExecutor& executor,
                RouterMetrics* metrics);

  // Serves `batch`; calls `routed` (on the event loop) once its gate stage is over.
  kj::Promise<Batcher::Replies> run(Batch batch, kj::Function<void()> routed);

 private:
  struct State;
  void prepareRequests(State& st);
  static Result<RoutedBatch> routeAndEncode(State& st, float scale, uint32_t H);
  kj::Promise<Batcher::Replies> fanOut(std::shared_ptr<State> st);
  kj::Promise<ShardTransport::RunResponse> encodeAndSend(std::shared_ptr<State> st, size_t work);
  kj::Promise<void> callShard(std::shared_ptr<State> st, size_t work);
  void recordRouting(const State& st);

  const RouterModel& model_;
  ShardTransport& transport_;
  ComputeExecutor& executor_;
  RouterMetrics* metrics_;
  std::map<uint32_t, std::vector<uint32_t>> layerShards_;  // MoE layer -> shards it may call
};

}  // namespace moe::router
