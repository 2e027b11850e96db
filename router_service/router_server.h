// RouterServer: the Router RPC. Gates a batch, plans the dispatch, fans out one ExpertShard.run
// per shard (all in flight at once), combines the weighted partial sums and replies.
#pragma once

#include <kj/async-io.h>

#include <map>
#include <memory>
#include <vector>

#include "common/admin_server.h"
#include "common/checkpoint.h"
#include "common/compute_executor.h"
#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "kernels/backend.h"
#include "router_service/dispatch_plan.h"
#include "router_service/gate_network.h"
#include "router_service/router_metrics.h"
#include "router_service/shard_client.h"
#include "router_service/shared_expert.h"
#include "router_service/zero_compute_experts.h"

namespace moe::router {

// Everything the router loads at start-up; immutable once serving.
struct RouterModel {
  ClusterConfig cluster;
  ModelConfig model;
  std::unique_ptr<kernels::Backend> backend;
  std::map<uint32_t, std::unique_ptr<GateNetwork>> gates;    // MoE layer -> its router network
  std::map<uint32_t, std::unique_ptr<SharedExpert>> shared;  // MoE layer -> its shared expert
  std::map<uint32_t, std::vector<float>> bias;  // MoE layer -> [E] score correction (DeepSeek-V3)
  std::map<uint32_t, std::unique_ptr<ZeroComputeExperts>> zeroCompute;  // MoE++ layers

  // Opens the checkpoint, checks the placement and loads every MoE layer's gate network, shared
  // expert (its FFN only when no shard holds it) and MoE++ zero-computation experts.
  static Result<std::unique_ptr<RouterModel>> load(const ClusterConfig& cluster);
};

class RouterServer final : public proto::Router::Server {
 public:
  RouterServer(std::unique_ptr<RouterModel> model, kj::AsyncIoProvider& io, kj::Timer& timer,
               RouterMetrics& metrics);

  kj::Promise<void> forward(ForwardContext context) override;
  kj::Promise<void> info(InfoContext context) override;

  // Probes every shard every `periodMs`, forever: keeps moe_shard_up current and the admin
  // plane's readiness true to "every expert reachable on at least one shard".
  kj::Promise<void> watchShards(AdminServer* admin, uint32_t periodMs);

 private:
  kj::Promise<void> forwardUnbounded(ForwardContext context);
  // One info probe per shard: "" when reachable, else the error. Updates moe_shard_up.
  kj::Promise<kj::Array<std::string>> probeShards();
  // Empty when every (layer, expert) has a reachable holder, else why not.
  std::string unreachableExperts(const kj::Array<std::string>& shardErrors) const;
  kj::Promise<ShardClient::RunResponse> runOnShard(
      uint32_t shard, uint32_t rows, kj::Function<void(ShardClient::RunParams::Builder)> fill);

  std::unique_ptr<RouterModel> model_;
  kj::Timer& timer_;
  RouterMetrics& metrics_;
  Placement placement_;
  std::vector<std::unique_ptr<ShardClient>> shards_;
  ComputeExecutor executor_{"router-gate"};
};

}  // namespace moe::router
