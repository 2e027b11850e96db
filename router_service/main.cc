// moe-router: the router service process. Usage: moe-router --config cluster.yaml
// SIGTERM drains; SIGHUP (or POST /admin/placement) reloads the shard list.
#include <kj/async-io.h>
#include <prometheus/registry.h>

#include <iostream>
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics_util.h"
#include "common/service_flags.h"
#include "common/service_runtime.h"
#include "router_service/placement_reloader.h"
#include "router_service/router_metrics.h"
#include "router_service/router_server.h"

int main(int argc, char** argv) {
  // --help, --version and usage errors end here (common/cli.h).
  auto flags = moe::parseServiceFlags("moe-router", argc, argv, /*expert=*/false);
  if (!flags) return flags.exitStatus();
  moe::setLogComponent("router");
  auto config = moe::loadClusterConfig(flags.value().config);
  if (!config) {
    moe::logError(config.error());
    return 2;
  }
  // Bind overrides (a pod binds 0.0.0.0 while the YAML says how others reach it).
  if (!flags.value().listen.empty()) config.value().router.listen = flags.value().listen;
  if (!flags.value().admin.empty()) config.value().router.admin = flags.value().admin;
  const moe::ClusterConfig& cluster = config.value();
  // The certificates first: a file that cannot be used ends start-up before any weight is read.
  auto tls = moe::loadRpcTls(cluster);
  if (!tls) {
    moe::logError("start-up failed: ", tls.error());
    return 2;
  }

  // The admin plane comes up first, so probes see "starting" while weights load.
  auto registry = std::make_shared<prometheus::Registry>();
  auto info = std::make_shared<moe::SharedText>();
  info->set(moe::serviceInfoJson(cluster, nullptr, "router", "router", ""));
  std::unique_ptr<moe::AdminServer> admin;
  if (!cluster.router.admin.empty()) {
    auto a = moe::startAdminPlane(cluster.router.admin, cluster, registry, info,
                                  "loading gate weights", moe::adminTlsFailureCounter(*registry));
    if (!a) {
      moe::logError("start-up failed: ", a.error());
      return 2;
    }
    admin = std::move(a).value();
  }

  auto model = moe::router::RouterModel::load(cluster);
  if (!model) {
    moe::logError("start-up failed: ", model.error());
    return 2;
  }
  const auto& m = model.value()->model;
  const std::string backend(model.value()->backend->name());
  moe::logInfo("model ", cluster.modelPath, " (", m.modelType, "): ", m.numExperts, " experts (",
               m.numFfnExperts, " FFN), top-", m.topK, ", hidden ", m.hiddenSize, ", ",
               m.moeLayers.size(), " MoE layers; gating on ", backend, "; ", cluster.shards.size(),
               " shards");
  const moe::RoutingOptions& r = cluster.routing;
  if (r.noisyTopk || r.capacityFactor > 0) {
    moe::logInfo("routing options: noisy top-k ",
                 r.noisyTopk ? "on, seed " + std::to_string(r.noiseSeed) : std::string("off"),
                 "; capacity factor ", r.capacityFactor,
                 r.capacityRenormalize ? " (kept weights renormalized)" : "");
  }
  info->set(moe::serviceInfoJson(cluster, &m, "router", "router", backend));
  std::string why;
  const bool perExpert =
      moe::resolvePerExpertMetrics(cluster.metrics, m, &why) == moe::PerExpertMetrics::kAll;
  if (!why.empty()) moe::logInfo(why);
  moe::router::RouterMetrics metrics(
      *registry, m, cluster.shards, backend,
      {perExpert, {cluster.router.maxTokens, cluster.router.batching.maxTokens}});
  if (admin) admin->setState(moe::ServiceState::kNotReady, "waiting for every expert's shard");

  auto io = kj::setupAsyncIo();
  auto server = kj::heap<moe::router::RouterServer>(std::move(model).value(), *io.provider,
                                                    io.provider->getTimer(), metrics, tls.value());
  auto& router = *server;
  capnp::Capability::Client bootstrap = kj::mv(server);
  auto watch = router.watchShards(admin.get(), 2000).eagerlyEvaluate([](kj::Exception&& e) {
    moe::logError("shard watcher stopped: ", e.getDescription().cStr());
  });
  // SIGHUP and POST /admin/placement: a new shard list, without a restart.
  moe::router::PlacementReloader reloader(
      router, flags.value().config, [&info, &cluster, &m, backend](const moe::ClusterConfig& next) {
        moe::ClusterConfig now = cluster;
        now.shards = next.shards;
        info->set(moe::serviceInfoJson(now, &m, "router", "router", backend));
      });
  if (admin) reloader.serveOn(*admin);
  // SIGTERM: /readyz says draining and requests are still served for drain_ms (while load
  // balancers stop sending here); then new requests are refused (Unavailable) and the process
  // exits once every request in flight is answered — each is bounded by timeouts.request_ms, so
  // the drain itself needs no deadline.
  moe::ServeOptions serve{cluster.router.listen, "router", admin.get(),
                          /*readyWhenListening=*/false, /*drainMs=*/0};
  serve.limits = moe::listenerLimits(cluster.limits);
  // SIGHUP also re-reads the certificates: for the router's port and its shard connections.
  serve.tls = tls.value();
  serve.onTlsHandshakeFailure = [&metrics]() { metrics.tlsServerHandshakeFailures.Increment(); };
  const uint32_t drainMs = cluster.timeouts.drainMs;
  kj::Timer& timer = io.provider->getTimer();
  serve.reload = [&reloader]() { reloader.onHangup(); };
  serve.drain = [&router, &timer, drainMs]() {
    return timer.afterDelay(drainMs * kj::MILLISECONDS).then([&router]() {
      router.startDraining();
      return router.whenIdle();
    });
  };
  return moe::serveUntilSignal(io, kj::mv(bootstrap), serve);
}
