// BatchPipeline: serves one merged batch through the stages after admission —
//   route+plan (compute thread) → per shard: encode (compute thread) → transport (event loop,
//   all shards in flight at once) → combine (compute thread)
// and answers one Result per request. Only the transport runs on the event loop, so the loop
// keeps accepting requests (which queue for the next batch) while a batch is gated or combined.
#pragma once

#include <kj/async.h>

#include <memory>

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
  kj::Promise<Batcher::Replies> fanOut(std::shared_ptr<State> st);
  kj::Promise<void> callShard(std::shared_ptr<State> st, size_t work);
  void recordRouting(const State& st);

  const RouterModel& model_;
  ShardTransport& transport_;
  ComputeExecutor& executor_;
  RouterMetrics* metrics_;
};

}  // namespace moe::router
