// moe-expert: one expert shard process. Usage: moe-expert --config cluster.yaml --shard NAME
#include <kj/async-io.h>
#include <prometheus/registry.h>

#include <cstring>
#include <iostream>
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "common/service_runtime.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/shard_server.h"

int main(int argc, char** argv) {
  std::string configPath, shard;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      configPath = argv[++i];
    } else if (std::strcmp(argv[i], "--shard") == 0 && i + 1 < argc) {
      shard = argv[++i];
    } else {
      configPath.clear();
      break;
    }
  }
  if (configPath.empty() || shard.empty()) {
    std::cerr << "usage: moe-expert --config CLUSTER.yaml --shard NAME\n";
    return 2;
  }
  moe::setLogComponent("expert[" + shard + "]");
  auto config = moe::loadClusterConfig(configPath);
  if (!config) {
    moe::logError(config.error());
    return 2;
  }
  const moe::ClusterConfig& cluster = config.value();
  const moe::ShardConfig* self = cluster.findShard(shard);
  if (self == nullptr) {
    moe::logError(configPath, ": no shard named '", shard, "'");
    return 2;
  }

  // The admin plane comes up first, so probes see "starting" while weights load.
  auto registry = std::make_shared<prometheus::Registry>();
  auto info = std::make_shared<moe::SharedText>();
  info->set(moe::serviceInfoJson(cluster, nullptr, "expert", shard, ""));
  std::unique_ptr<moe::AdminServer> admin;
  if (!self->admin.empty()) {
    auto a = moe::startAdminPlane(self->admin, registry, info, "loading expert weights");
    if (!a) {
      moe::logError("start-up failed: ", a.error());
      return 2;
    }
    admin = std::move(a).value();
  }

  auto model = moe::expert::ShardModel::load(cluster, shard);
  if (!model) {
    moe::logError("start-up failed: ", model.error());
    return 2;
  }
  size_t pairs = 0;
  for (const auto& [layer, experts] : model.value()->store->experts()) pairs += experts.size();
  const std::string backend(model.value()->backend->name());
  moe::logInfo("loaded ", pairs, " (layer, expert) pairs from ", cluster.modelPath, " onto ",
               backend);
  info->set(moe::serviceInfoJson(cluster, &model.value()->model, "expert", shard, backend));
  moe::expert::ExpertMetrics metrics(*registry, *model.value()->store, backend);

  auto io = kj::setupAsyncIo();
  capnp::Capability::Client server =
      kj::heap<moe::expert::ShardServer>(std::move(model).value(), metrics);
  moe::ServeOptions serve{self->listen, "expert shard " + shard, admin.get(),
                          /*readyWhenListening=*/true, cluster.timeouts.drainMs};
  return moe::serveUntilSignal(io, kj::mv(server), serve);
}
