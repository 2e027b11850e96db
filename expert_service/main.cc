// moe-expert: one expert shard process. Usage: moe-expert --config cluster.yaml --shard NAME
#include <kj/async-io.h>

#include <cstring>
#include <iostream>
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "common/service_runtime.h"
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
  auto model = moe::expert::ShardModel::load(config.value(), shard);
  if (!model) {
    moe::logError("start-up failed: ", model.error());
    return 2;
  }
  size_t pairs = 0;
  for (const auto& [layer, experts] : model.value()->store->experts()) pairs += experts.size();
  moe::logInfo("loaded ", pairs, " (layer, expert) pairs from ", config.value().modelPath, " onto ",
               model.value()->backend->name());
  auto listen = model.value()->shard.listen;
  auto io = kj::setupAsyncIo();
  capnp::Capability::Client server = kj::heap<moe::expert::ShardServer>(std::move(model).value());
  return moe::serveUntilSignal(io, kj::mv(server), listen, "expert shard " + shard);
}
