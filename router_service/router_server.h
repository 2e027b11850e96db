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
#include "router_service/shard_reload.h"
#include "router_service/shard_transport.h"

namespace moe::router {

class RouterServer final : public proto::Router::Server {
 public:
  // Serves over Cap'n Proto connections to the configured shards.
  // With `tls` (config `tls:`) every shard connection is TLS; failed handshakes are counted in
  // metrics (side="client").
  RouterServer(std::unique_ptr<RouterModel> model, kj::AsyncIoProvider& io, kj::Timer& timer,
               RouterMetrics& metrics, std::shared_ptr<const RpcTls> tls = nullptr);
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

  // Replaces the shard list with `next.shards` (SIGHUP, POST /admin/placement) without dropping
  // a request: shards new to the list join and are probed first (each must prove its identity
  // before it gets a token); then the new placement serves every batch that starts from then on,
  // and shards no longer listed are removed — they get no new work and are disconnected once
  // their calls are answered. Batches already running finish on the placement they started
  // with. Fails, changing nothing, when `next` is not valid for this router (shard_reload.h) or
  // another reload is running. Resolves to a one-line summary of what changed.
  kj::Promise<Result<std::string>> reloadShards(ClusterConfig next);

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
  // The second half of reloadShards, once the new and changed shards were probed.
  std::string applyPlacement(const ClusterConfig& next, const ShardReload& plan);

  std::unique_ptr<RouterModel> model_;
  kj::Timer& timer_;
  bool draining_ = false;
  bool reloading_ = false;
  AdminServer* admin_ = nullptr;  // readiness reported here, when the admin plane is on
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
