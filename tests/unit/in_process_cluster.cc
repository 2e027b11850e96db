// InProcessCluster: see in_process_cluster.h.
#include "tests/unit/in_process_cluster.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>

#include "common/rpc_status.h"
#include "common/tensor_wire.h"
#include "expert_service/shard_server.h"
#include "router_service/router_server.h"
#include "router_service/shard_transport.h"

namespace moe::unit {
namespace {

// A scripted shard (see ShardFault); `real` answers its `info` when the fault allows.
class ScriptedShard final : public proto::ExpertShard::Server {
 public:
  ScriptedShard(ShardFault fault, proto::ExpertShard::Client real)
      : fault_(fault), real_(kj::mv(real)) {}
  kj::Promise<void> run(RunContext) override {
    if (fault_ == ShardFault::kStall) return kj::NEVER_DONE;
    throwStatus(StatusCode::kUnavailable, "scripted: connection refused");
  }
  kj::Promise<void> info(InfoContext context) override {
    if (fault_ == ShardFault::kDown) {
      throwStatus(StatusCode::kUnavailable, "scripted: connection refused");
    }
    return real_.infoRequest().send().then(
        [context](auto&& r) mutable { context.getResults().setInfo(r.getInfo()); });
  }

 private:
  ShardFault fault_;
  proto::ExpertShard::Client real_;
};

void shardYaml(std::ostream& y, const std::string& name, size_t port,
               const std::vector<uint32_t>& experts) {
  y << "  - name: " << name << "\n    listen: 127.0.0.1:" << port
    << "\n    device: reference\n    experts: [";
  for (size_t j = 0; j < experts.size(); ++j) y << (j ? ", " : "") << experts[j];
  y << "]\n";
}

// The router's YAML; with `spares`, the spare shards are listed after the others.
std::string clusterYaml(const InProcessClusterSpec& spec, bool spares = false) {
  std::ostringstream y;
  y << "model:\n  path: model\nrouter:\n  listen: 127.0.0.1:1\n  device: reference\n"
    << spec.extraYaml << "shards:\n";
  for (size_t i = 0; i < spec.shardExperts.size(); ++i) {
    shardYaml(y, "shard-" + std::to_string(i), 2 + i, spec.shardExperts[i]);
  }
  for (size_t k = 0; spares && k < spec.spareExperts.size(); ++k) {
    shardYaml(y, "spare-" + std::to_string(k), 1000 + k, spec.spareExperts[k]);
  }
  y << spec.routingYaml;
  y << "timeouts:\n  request_ms: " << spec.requestMs << "\n  shard_call_ms: " << spec.shardCallMs
    << "\n";
  return y.str();
}

}  // namespace

struct InProcessCluster::Parts {
  prometheus::Registry registry;
  prometheus::Registry routerRegistry;
  std::unique_ptr<router::RouterMetrics> routerMetrics;
  std::vector<std::unique_ptr<expert::ExpertMetrics>> shardMetrics;
};

InProcessCluster::InProcessCluster(const std::string& dir, const InProcessClusterSpec& spec,
                                   std::vector<ShardFault> faults)
    : io_(kj::setupAsyncIo()), parts_(std::make_unique<Parts>()), router_(nullptr) {
  auto written = writeSyntheticCheckpoint(spec.model, dir + "/model");
  if (!written) ADD_FAILURE() << written.message();
  std::ofstream(dir + "/cluster.yaml") << clusterYaml(spec);
  std::ofstream(dir + "/cluster-all.yaml") << clusterYaml(spec, /*spares=*/true);
  auto cluster = loadClusterConfig(dir + "/cluster.yaml");
  auto all = loadClusterConfig(dir + "/cluster-all.yaml");
  if (!cluster || !all) {
    ADD_FAILURE() << cluster.error() << all.error();
    return;
  }
  all_ = all.value();
  auto transport = std::make_unique<router::InProcessShardTransport>(io_.provider->getTimer(),
                                                                     cluster.value().timeouts);
  for (size_t i = 0; i < cluster.value().shards.size(); ++i) {
    const ShardFault fault = i < faults.size() ? faults[i] : ShardFault::kNone;
    auto loaded = loadShard(cluster.value(), i, fault, spec, dir);
    KJ_IF_MAYBE (shard, loaded) {
      if (fault == ShardFault::kNone || fault == ShardFault::kForeignModel) {
        transport->add(cluster.value().shards[i], kj::mv(*shard));
      } else {
        transport->add(cluster.value().shards[i], kj::heap<ScriptedShard>(fault, kj::mv(*shard)));
      }
    } else {
      return;
    }
  }
  for (size_t i = cluster.value().shards.size(); i < all_.shards.size(); ++i) {
    auto loaded = loadShard(all_, i, ShardFault::kNone, spec, dir);
    KJ_IF_MAYBE (shard, loaded) {
      transport->offer(all_.shards[i].name, kj::mv(*shard));
    }
  }
  auto model = router::RouterModel::load(cluster.value());
  if (!model) {
    ADD_FAILURE() << model.error();
    return;
  }
  model_ = model.value()->model;
  parts_->routerMetrics = std::make_unique<router::RouterMetrics>(
      parts_->routerRegistry, model_, cluster.value().shards, "reference");
  auto server =
      kj::heap<router::RouterServer>(std::move(model).value(), std::move(transport),
                                     io_.provider->getTimer(), parts_->routerMetrics.get());
  server_ = server.get();
  router_ = kj::mv(server);
  info();  // verifies the shards, as the service's prober does before any traffic
}

kj::Maybe<proto::ExpertShard::Client> InProcessCluster::loadShard(const ClusterConfig& cluster,
                                                                  size_t i, ShardFault fault,
                                                                  const InProcessClusterSpec& spec,
                                                                  const std::string& dir) {
  ClusterConfig c = cluster;
  if (fault == ShardFault::kForeignModel) {  // same shapes, other weights, its own directory
    SyntheticModelSpec other = spec.model;
    other.seed += 1;
    c.modelPath = dir + "/foreign-model";
    if (auto s = writeSyntheticCheckpoint(other, c.modelPath); !s) ADD_FAILURE() << s.message();
  }
  auto shard = expert::ShardModel::load(c, c.shards[i].name);
  if (!shard) {
    ADD_FAILURE() << shard.error();
    return nullptr;
  }
  parts_->shardMetrics.push_back(std::make_unique<expert::ExpertMetrics>(
      parts_->registry, *shard.value()->store, "reference"));
  return proto::ExpertShard::Client(kj::heap<expert::ShardServer>(
      std::move(shard).value(), *parts_->shardMetrics.back(), io_.provider->getTimer()));
}

double InProcessCluster::routerCounter(const std::string& name,
                                       const std::map<std::string, std::string>& labels) {
  double total = 0;
  for (const auto& family : parts_->routerRegistry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      bool match = true;
      for (const auto& [k, v] : labels) {
        match &= std::any_of(m.label.begin(), m.label.end(),
                             [&](const auto& l) { return l.name == k && l.value == v; });
      }
      if (match) total += m.counter.value;
    }
  }
  return total;
}

capnp::Response<proto::Router::InfoResults> InProcessCluster::info() {
  return router_.infoRequest().send().wait(io_.waitScope);
}

kj::Promise<Result<std::string>> InProcessCluster::reloadAsync(
    const std::vector<std::string>& shardNames) {
  ClusterConfig next = all_;
  next.shards.clear();
  for (const std::string& name : shardNames) {
    const ShardConfig* s = all_.findShard(name);
    if (s != nullptr) {
      next.shards.push_back(*s);
    } else {  // a shard nobody serves: same experts as shard-0, an address where nothing listens
      ShardConfig ghost = all_.shards[0];
      ghost.name = name;
      ghost.listen = "127.0.0.1:9";
      next.shards.push_back(ghost);
    }
  }
  return server_->reloadShards(std::move(next));
}

Result<std::string> InProcessCluster::reload(const std::vector<std::string>& shardNames) {
  return reloadAsync(shardNames).wait(io_.waitScope);
}

InProcessCluster::~InProcessCluster() = default;

prometheus::Registry& InProcessCluster::registry() {
  return parts_->registry;
}

kj::Promise<InProcessCluster::ForwardResponse> InProcessCluster::forward(
    uint32_t layer, const std::vector<float>& x, uint32_t T, bool returnRouting,
    uint64_t noiseSeed) {
  auto req = router_.forwardRequest();
  req.setLayer(layer);
  const uint32_t shape[2] = {T, model_.hiddenSize};
  auto rows = initF32(req.initHidden(), shape);
  std::copy(x.begin(), x.end(), rows.begin());
  req.getOptions().setReturnRouting(returnRouting);
  req.getOptions().setNoiseSeed(noiseSeed);
  return req.send();
}

}  // namespace moe::unit
