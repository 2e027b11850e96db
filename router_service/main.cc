// moe-router: the router service process. Usage: moe-router --config cluster.yaml
#include <kj/async-io.h>

#include <cstring>
#include <iostream>
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "common/service_runtime.h"
#include "router_service/router_server.h"

int main(int argc, char** argv) {
  std::string configPath;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      configPath = argv[++i];
    } else {
      std::cerr << "usage: moe-router --config CLUSTER.yaml\n";
      return 2;
    }
  }
  if (configPath.empty()) {
    std::cerr << "usage: moe-router --config CLUSTER.yaml\n";
    return 2;
  }
  moe::setLogComponent("router");
  auto config = moe::loadClusterConfig(configPath);
  if (!config) {
    moe::logError(config.error());
    return 2;
  }
  auto model = moe::router::RouterModel::load(config.value());
  if (!model) {
    moe::logError("start-up failed: ", model.error());
    return 2;
  }
  moe::logInfo("model ", config.value().modelPath, ": ", model.value()->model.numExperts,
               " experts, top-", model.value()->model.topK, ", hidden ",
               model.value()->model.hiddenSize, ", ", model.value()->model.moeLayers.size(),
               " MoE layers; gating on ", model.value()->backend->name(), "; ",
               config.value().shards.size(), " shards");
  auto io = kj::setupAsyncIo();
  auto listen = config.value().router.listen;
  capnp::Capability::Client server = kj::heap<moe::router::RouterServer>(
      std::move(model).value(), *io.provider, io.provider->getTimer());
  return moe::serveUntilSignal(io, kj::mv(server), listen, "router");
}
