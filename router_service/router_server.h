// RouterServer: the Router RPC. A forward call is decoded (decode.h), admitted to its layer's
// batcher (batcher.h), served as part of a merged batch by the pipeline (batch_pipeline.h:
// route → plan → encode → transport → combine) and answered (reply.h), within
// timeouts.request_ms. Errors leave as "Code: message" exceptions (common/rpc_status.h).
#pragma once

#include <kj/async-io.h>

#include <memory>
#include <vector>

#include "common/admin_server.h"
#include "common/compute_executor.h"
#include "common/proto/moe.capnp.h"
#include "router_service/batch_pipeline.h"
#include "router_service/batcher.h"
#include "router_service/router_metrics.h"
#include "router_service/router_model.h"
#include "router_service/shard_health.h"
#include "router_service/shard_prober.h"
#include "router_service/shard_transport.h"

namespace moe::router {

class RouterServer final : public proto::Router::Server {
 public:
  // Serves over Cap'n Proto connections to the configured shards.
  RouterServer(std::unique_ptr<RouterModel> model, kj::AsyncIoProvider& io, kj::Timer& timer,
               RouterMetrics& metrics);
  // Serves over the given transport (in-process shards in unit tests); `metrics` may be null.
  RouterServer(std::unique_ptr<RouterModel> model, std::unique_ptr<ShardTransport> transport,
               kj::Timer& timer, RouterMetrics* metrics);

  kj::Promise<void> forward(ForwardContext context) override;

  // SIGTERM: refuse new forward calls (Unavailable: another router takes them) and resolve once
  // every call in flight has been answered.
  void startDraining();
  kj::Promise<void> whenIdle();
  kj::Promise<void> info(InfoContext context) override;

  // Probes the shards forever (shard_prober.h: identity, draining, backoff) and keeps the admin
  // plane's readiness true (readiness.h). Every up shard is probed every `periodMs`.
  kj::Promise<void> watchShards(AdminServer* admin, uint32_t periodMs);

 private:
  static BatchingPolicy policyFor(const RouterConfig& router);
  BatchObserver observer();
  void connectStages();  // once the transport exists: prober, pipeline, connection-lost hook
  void updateReadiness(AdminServer* admin);
  // routing.missing_expert renormalize / reroute: a layer with some experts left still serves.
  bool degradedRoutingAllowed() const {
    return model_->cluster.routing.missingExpert != MissingExpertPolicy::kError;
  }

  void callEnded();

  std::unique_ptr<RouterModel> model_;
  kj::Timer& timer_;
  bool draining_ = false;
  uint64_t inFlight_ = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> idleWaiters_;
  RouterMetrics* metrics_;
  std::unique_ptr<ShardTransport> transport_;
  ShardHealth health_;
  std::unique_ptr<ShardProber> prober_;
  std::unique_ptr<BatchPipeline> pipeline_;
  ComputeExecutor executor_{"router-compute"};  // joined before the pipeline its jobs use goes
  Batcher batcher_;
};

}  // namespace moe::router
