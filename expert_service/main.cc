// moe-expert: one expert shard process. Usage: moe-expert --config cluster.yaml --shard NAME
#include <kj/async-io.h>
#include <prometheus/registry.h>

#include <iostream>
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics_util.h"
#include "common/service_flags.h"
#include "common/service_runtime.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/shard_server.h"

int main(int argc, char** argv) {
  // --help, --version and usage errors end here (common/cli.h).
  auto flags = moe::parseServiceFlags("moe-expert", argc, argv, /*expert=*/true);
  if (!flags) return flags.exitStatus();
  auto config = moe::loadClusterConfig(flags.value().config);
  if (!config) {
    moe::setLogComponent("expert");
    moe::logError(config.error());
    return 2;
  }
  auto shardName = moe::resolveShardName(flags.value(), config.value());
  if (!shardName) {
    moe::setLogComponent("expert");
    moe::logError(shardName.error());
    return 2;
  }
  const std::string shard = shardName.value();
  moe::setLogComponent("expert[" + shard + "]");
  // Bind overrides (a pod binds 0.0.0.0 while the YAML says how the router reaches it).
  for (auto& s : config.value().shards) {
    if (s.name != shard) continue;
    if (!flags.value().listen.empty()) s.listen = flags.value().listen;
    if (!flags.value().admin.empty()) s.admin = flags.value().admin;
  }
  const moe::ClusterConfig& cluster = config.value();
  const moe::ShardConfig* self = cluster.findShard(shard);
  // The certificates first: a file that cannot be used ends start-up before any weight is read.
  auto tls = moe::loadRpcTls(cluster);
  if (!tls) {
    moe::logError("start-up failed: ", tls.error());
    return 2;
  }

  // The admin plane comes up first, so probes see "starting" while weights load.
  auto registry = std::make_shared<prometheus::Registry>();
  auto info = std::make_shared<moe::SharedText>();
  info->set(moe::serviceInfoJson(cluster, nullptr, "expert", shard, ""));
  std::unique_ptr<moe::AdminServer> admin;
  if (!self->admin.empty()) {
    auto a = moe::startAdminPlane(self->admin, cluster, registry, info, "loading expert weights",
                                  moe::adminTlsFailureCounter(*registry));
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
               backend, "; model fingerprint ", model.value()->fingerprint);
  info->set(moe::serviceInfoJson(cluster, &model.value()->model, "expert", shard, backend,
                                 model.value()->fingerprint, model.value()->dtype));
  std::string why;
  const bool perExpert = moe::resolvePerExpertMetrics(cluster.metrics, model.value()->model,
                                                      &why) == moe::PerExpertMetrics::kAll;
  if (!why.empty()) moe::logInfo(why);
  moe::expert::ExpertMetrics metrics(*registry, *model.value()->store, backend,
                                     {perExpert, {self->batching.maxRows}});

  auto io = kj::setupAsyncIo();
  auto own = kj::heap<moe::expert::ShardServer>(std::move(model).value(), metrics,
                                                io.provider->getTimer());
  moe::expert::ShardServer& shardServer = *own;  // the RPC system holds it while serving
  capnp::Capability::Client server = kj::mv(own);
  moe::ServeOptions serve{self->listen, "expert shard " + shard, admin.get(),
                          /*readyWhenListening=*/true, cluster.timeouts.drainMs};
  serve.limits = moe::listenerLimits(cluster.limits);
  serve.tls = tls.value();  // SIGHUP re-reads its certificates
  serve.onTlsHandshakeFailure = [&metrics]() { metrics.tlsHandshakeFailures.Increment(); };
  // SIGTERM: refuse new calls at once (the router fails over), finish the accepted ones, exit.
  serve.drain = [&shardServer]() {
    shardServer.startDraining();
    return shardServer.whenIdle().attach(
        kj::defer([&shardServer]() { shardServer.logDrainOutcome(); }));
  };
  return moe::serveUntilSignal(io, kj::mv(server), serve);
}
