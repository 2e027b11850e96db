// ShardProber: keeps ShardHealth true. Every shard that is not up is probed as its backoff allows
// (100 ms, doubling to 1 s), every up shard every period; a probe is one ExpertShard.info, which
// opens the connection when there is none — so every (re)connect is verified before the shard
// gets a token: its model fingerprint must equal the router's, its name and the experts it holds
// must be what the placement says. A mismatch keeps it out of rotation, is logged once and counted
// (moe_shard_identity_mismatch_total); a shard that says it is draining gets no new work.
#pragma once

#include <kj/async.h>
#include <kj/function.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/proto/moe.capnp.h"
#include "router_service/router_metrics.h"
#include "router_service/router_model.h"
#include "router_service/shard_health.h"
#include "router_service/shard_transport.h"

namespace moe::router {

// Why `info` does not prove it is the shard `config` of this cluster serving the model with
// `fingerprint`, or "" when it does.
std::string identityProblem(proto::ServiceInfo::Reader info, const std::string& fingerprint,
                            const ShardConfig& config, const std::vector<uint32_t>& moeLayers);

class ShardProber final : private kj::TaskSet::ErrorHandler {
 public:
  ShardProber(ShardTransport& transport, ShardHealth& health, kj::Timer& timer,
              const RouterModel& model, RouterMetrics* metrics);

  // Probes forever (state changes reach ShardHealth::onChange).
  kj::Promise<void> run(uint32_t periodMs);
  // Probes every shard now; resolves when all answered or failed.
  kj::Promise<void> probeAll();
  // A reload added shards or changed what some hold: grows to the transport's shards and probes
  // each of `shards` now; resolves when all answered or failed.
  kj::Promise<void> probeNow(const std::vector<uint32_t>& shards);

 private:
  void grow();  // to the transport's shard count (a reload adds shards)
  kj::Promise<void> probe(uint32_t shard);
  void apply(uint32_t shard, proto::ServiceInfo::Reader info);
  kj::Promise<void> tick(uint32_t periodMs);
  void taskFailed(kj::Exception&& exception) override;

  ShardTransport& transport_;
  ShardHealth& health_;
  kj::Timer& timer_;
  const RouterModel& model_;
  RouterMetrics* metrics_;
  std::vector<bool> probing_;
  std::vector<ShardHealth::Clock::time_point> lastProbe_;
  std::map<uint32_t, kj::ForkedPromise<void>> inflight_;  // shard -> its last probe
  kj::TaskSet tasks_;
};

}  // namespace moe::router
