// InProcessCluster: see in_process_cluster.h.
#include "tests/unit/in_process_cluster.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

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

// A shard that fails every run with Unavailable, or never answers (the deadline must end it).
class ScriptedShard final : public proto::ExpertShard::Server {
 public:
  explicit ScriptedShard(ShardFault fault) : fault_(fault) {}
  kj::Promise<void> run(RunContext) override {
    if (fault_ == ShardFault::kUnavailable) {
      throwStatus(StatusCode::kUnavailable, "scripted: connection refused");
    }
    return kj::NEVER_DONE;
  }
  kj::Promise<void> info(InfoContext) override {
    throwStatus(StatusCode::kUnavailable, "scripted: connection refused");
  }

 private:
  ShardFault fault_;
};

std::string clusterYaml(const InProcessClusterSpec& spec) {
  std::ostringstream y;
  y << "model:\n  path: model\nrouter:\n  listen: 127.0.0.1:1\n  device: reference\n"
    << spec.extraYaml << "shards:\n";
  for (size_t i = 0; i < spec.shardExperts.size(); ++i) {
    y << "  - name: shard-" << i << "\n    listen: 127.0.0.1:" << (2 + i)
      << "\n    device: reference\n    experts: [";
    for (size_t j = 0; j < spec.shardExperts[i].size(); ++j)
      y << (j ? ", " : "") << spec.shardExperts[i][j];
    y << "]\n";
  }
  y << spec.routingYaml;
  y << "timeouts:\n  request_ms: " << spec.requestMs << "\n  shard_call_ms: " << spec.shardCallMs
    << "\n";
  return y.str();
}

}  // namespace

struct InProcessCluster::Parts {
  prometheus::Registry registry;
  std::vector<std::unique_ptr<expert::ExpertMetrics>> shardMetrics;
};

InProcessCluster::InProcessCluster(const std::string& dir, const InProcessClusterSpec& spec,
                                   std::vector<ShardFault> faults)
    : io_(kj::setupAsyncIo()), parts_(std::make_unique<Parts>()), router_(nullptr) {
  auto written = writeSyntheticCheckpoint(spec.model, dir + "/model");
  if (!written) ADD_FAILURE() << written.message();
  std::ofstream(dir + "/cluster.yaml") << clusterYaml(spec);
  auto cluster = loadClusterConfig(dir + "/cluster.yaml");
  if (!cluster) {
    ADD_FAILURE() << cluster.error();
    return;
  }
  auto transport = std::make_unique<router::InProcessShardTransport>(io_.provider->getTimer(),
                                                                     cluster.value().timeouts);
  for (size_t i = 0; i < cluster.value().shards.size(); ++i) {
    const ShardConfig& sc = cluster.value().shards[i];
    if (i < faults.size() && faults[i] != ShardFault::kNone) {
      transport->add(sc, kj::heap<ScriptedShard>(faults[i]));
      continue;
    }
    auto shard = expert::ShardModel::load(cluster.value(), sc.name);
    if (!shard) {
      ADD_FAILURE() << shard.error();
      return;
    }
    parts_->shardMetrics.push_back(std::make_unique<expert::ExpertMetrics>(
        parts_->registry, *shard.value()->store, "reference"));
    transport->add(
        sc, kj::heap<expert::ShardServer>(std::move(shard).value(), *parts_->shardMetrics.back(),
                                          io_.provider->getTimer()));
  }
  auto model = router::RouterModel::load(cluster.value());
  if (!model) {
    ADD_FAILURE() << model.error();
    return;
  }
  model_ = model.value()->model;
  router_ = kj::heap<router::RouterServer>(std::move(model).value(), std::move(transport),
                                           io_.provider->getTimer(), nullptr);
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

std::vector<float> tokens(uint32_t T, uint32_t H, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(size_t{T} * H);
  for (float& v : x) v = n(rng);
  return x;
}

std::vector<float> outputOf(const InProcessCluster::ForwardResponse& r) {
  auto view = decodeTensor(r.getOutput(), "output");
  if (!view) return {};
  F32Rows rows(view.value());
  return {rows.values().begin(), rows.values().end()};
}

}  // namespace moe::unit
