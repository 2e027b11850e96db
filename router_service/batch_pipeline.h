// BatchPipeline: serves one merged batch through the stages after admission —
//   choose replicas (event loop, from ShardHealth) → route+plan+encode (one compute job) →
//   transport (event loop, all shards in flight at once) → combine (compute thread)
// and answers one Result per request. Requests are taken from the transport before routing for
// each chosen replica, so encoding joins the routing job. A call that fails Unavailable marks its
// shard down and is sent again to other replicas of its experts (failover; results already
// received are kept); only requests whose tokens found no replica fail. A call that takes much
// longer than its shard usually does (2× its EWMA, at least 50 ms: a stalled or overloaded
// replica) is hedged: the same rows go to other replicas and the first complete answer wins.
// Under routing.missing_expert renormalize / reroute, a request that failed Unavailable because
// the last replica of one of its experts died mid-batch is routed and served once more, degraded
// (its experts' availability is read again), instead of failing.
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
#include "router_service/shard_health.h"
#include "router_service/shard_transport.h"

namespace moe::router {

class BatchPipeline {
 public:
  // `metrics` may be null (unit tests).
  BatchPipeline(const RouterModel& model, ShardTransport& transport, ShardHealth& health,
                ComputeExecutor& executor, kj::Timer& timer, RouterMetrics* metrics);

  // Serves `batch`; calls `routed` (on the event loop) once its gate stage is over.
  kj::Promise<Batcher::Replies> run(Batch batch, kj::Function<void()> routed);

 private:
  struct State;
  kj::Promise<Batcher::Replies> runOnce(Batch batch, kj::Function<void()> routed, bool retry);
  // The members of `st`'s batch that failed Unavailable, served again (missing_expert != error).
  kj::Promise<Batcher::Replies> retryUnavailable(std::shared_ptr<State> st,
                                                 Batcher::Replies replies);
  // The replicas a batch of `layer` uses now (and which experts are available).
  ReplicaChoice chooseReplicas(const Placement& p, uint32_t layer);
  struct Attempt;
  void prepareRequests(State& st);
  static Result<RoutedBatch> routeAndEncode(State& st, float scale, uint32_t H, DType wire);
  kj::Promise<Batcher::Replies> fanOut(std::shared_ptr<State> st);
  kj::Promise<void> send(std::shared_ptr<State> st, size_t attempt);
  kj::Promise<void> callOnce(std::shared_ptr<State> st, Attempt* attempt);
  kj::Promise<void> hedge(std::shared_ptr<State> st, size_t attempt);
  Result<std::vector<ShardWork>> otherReplicas(const State& st, const ShardWork& work);
  kj::Promise<void> failover(std::shared_ptr<State> st, size_t attempt);
  kj::Promise<void> encodeAndSend(std::shared_ptr<State> st, std::vector<size_t> attempts);
  kj::Promise<Batcher::Replies> combine(std::shared_ptr<State> st);
  static bool coveredByHedge(const State& st, const Attempt& a);
  void recordRouting(const State& st);

  const RouterModel& model_;
  ShardTransport& transport_;
  ShardHealth& health_;
  ComputeExecutor& executor_;
  kj::Timer& timer_;
  RouterMetrics* metrics_;
};

}  // namespace moe::router
