// An in-process cluster for unit tests of the router's stages: a tiny synthetic checkpoint, a
// real RouterServer and real ShardServers in this process, joined by the in-process shard
// transport (no sockets, no child processes). Any shard can be replaced by a scripted one that
// fails or stalls, to test partial failures and deadlines.
#pragma once

#include <kj/async-io.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "tests/integration/test_cluster.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::router {
class RouterServer;
}

namespace moe::unit {

struct InProcessClusterSpec {
  SyntheticModelSpec model;
  std::vector<std::vector<uint32_t>> shardExperts = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  // Shards "spare-<k>" that run and can be reached but are not in the router's list (a reload
  // adds them).
  std::vector<std::vector<uint32_t>> spareExperts;
  std::string extraYaml;  // appended to the router: section (e.g. "  batching: {enabled: false}\n")
  std::string routingYaml;  // a whole `routing:` section, or empty
  uint32_t requestMs = 20000;
  uint32_t shardCallMs = 10000;
};

// How a scripted shard behaves instead of the real one: kDown refuses everything (never
// verified); kRunUnavailable and kStall answer `info` as the real shard would (so they are
// verified and chosen) but fail or never answer `run`; kForeignModel is a real shard of another
// checkpoint with the same shapes (seed + 1).
enum class ShardFault { kNone, kDown, kRunUnavailable, kStall, kForeignModel };

class InProcessCluster {
 public:
  // Writes the checkpoint under `dir` and builds router + shards; `faults[i]` scripts shard i.
  InProcessCluster(const std::string& dir, const InProcessClusterSpec& spec,
                   std::vector<ShardFault> faults = {});
  ~InProcessCluster();

  kj::WaitScope& waitScope() { return io_.waitScope; }
  kj::Timer& timer() { return io_.provider->getTimer(); }
  proto::Router::Client& router() { return router_; }
  const ModelConfig& model() const { return model_; }
  prometheus::Registry& registry();

  using ForwardResponse = capnp::Response<proto::Router::ForwardResults>;
  // A forward call in flight: f32 rows [T, H].
  kj::Promise<ForwardResponse> forward(uint32_t layer, const std::vector<float>& x, uint32_t T,
                                       bool returnRouting = true, uint64_t noiseSeed = 0);
  // A router counter's value (its labels given), from the router's metrics.
  double routerCounter(const std::string& name, const std::map<std::string, std::string>& labels);
  // Router.info: probes every shard now (identity, health) and reports them.
  capnp::Response<proto::Router::InfoResults> info();
  // Reloads the router's shard list (as SIGHUP does) with the named shards ("shard-<i>",
  // "spare-<k>"; another name is a shard nobody serves); the reload's summary or error.
  Result<std::string> reload(const std::vector<std::string>& shardNames);
  // Starts a reload without waiting for it.
  kj::Promise<Result<std::string>> reloadAsync(const std::vector<std::string>& shardNames);

 private:
  struct Parts;
  kj::Maybe<proto::ExpertShard::Client> loadShard(const ClusterConfig& cluster, size_t i,
                                                  ShardFault fault,
                                                  const InProcessClusterSpec& spec,
                                                  const std::string& dir);
  kj::AsyncIoContext io_;
  ModelConfig model_;
  ClusterConfig all_;  // the router's config with the spare shards listed too
  std::unique_ptr<Parts> parts_;
  proto::Router::Client router_;
  router::RouterServer* server_ = nullptr;  // owned by router_
};

// The integration tests' helpers serve these tests too (same Router.forward results type).
using testing::maxRelErr;
using testing::outputValues;
using testing::randomTokens;

}  // namespace moe::unit
