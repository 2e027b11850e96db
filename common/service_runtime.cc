// Service process runtime: signal handling and the serve loop.
#include "common/service_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "common/version.h"

namespace moe {

const char* const kMoeVersion = MOE_VERSION;

namespace {
// The write end of the signal pipe. A signal handler can reach nothing else, so this one
// process-wide value is unavoidable; it is set once before the handler is installed.
int gSignalPipeWrite = -1;

void onSignal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] auto n = write(gSignalPipeWrite, &b, 1);
  errno = saved;
}
}  // namespace

namespace {
// Reads signal numbers off the pipe until one ends the process.
kj::Promise<int> nextTermination(kj::Own<kj::AsyncInputStream> stream,
                                 std::function<void()> onHangup) {
  auto buf = kj::heapArray<unsigned char>(1);
  auto read = stream->tryRead(buf.begin(), 1, 1);
  return read.then([buf = kj::mv(buf), stream = kj::mv(stream),
                    onHangup = std::move(onHangup)](size_t n) mutable -> kj::Promise<int> {
    if (n != 1) return 0;
    if (buf[0] != SIGHUP) return static_cast<int>(buf[0]);
    if (onHangup) {
      logInfo("received SIGHUP; reloading");
      onHangup();
    } else {
      logInfo("received SIGHUP; nothing to reload, ignored");
    }
    return nextTermination(kj::mv(stream), std::move(onHangup));
  });
}
}  // namespace

kj::Promise<int> onTerminationSignal(kj::LowLevelAsyncIoProvider& io,
                                     std::function<void()> onHangup) {
  int fds[2];
  KJ_SYSCALL(pipe2(fds, O_CLOEXEC | O_NONBLOCK));
  gSignalPipeWrite = fds[1];
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  auto stream = io.wrapInputFd(fds[0], kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  return nextTermination(kj::mv(stream), std::move(onHangup));
}

namespace {
// The service's own drain, then its last replies leaving, bounded by drainMs (0: unbounded).
kj::Promise<int> drainAccepted(kj::AsyncIoContext& io, RpcListener& listener,
                               const ServeOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  auto flushed = [&listener]() { return listener.whenWritesFlushed(); };
  auto done = [start]() {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    logInfo("drained in ", ms.count(), " ms");
    return 0;
  };
  auto failed = [](kj::Exception&& e) {
    logError("drain failed: ", e.getDescription().cStr());
    return 1;
  };
  // Moved in: then() on an lvalue lambda stores a reference to it, which would dangle once this
  // function returns (ASan: stack-use-after-scope when the drain finished).
  kj::Promise<int> drained = kj::evalNow([&options]() { return options.drain(); })
                                 .then(kj::mv(flushed))
                                 .then(kj::mv(done), kj::mv(failed));
  if (options.drainMs == 0) return drained;
  const uint32_t ms = options.drainMs;
  return drained.exclusiveJoin(
      io.provider->getTimer().afterDelay(ms * kj::MILLISECONDS).then([ms]() {
        logWarn("drain deadline of ", ms, " ms reached with work still in flight; stopping");
        return 0;
      }));
}
}  // namespace

Result<std::shared_ptr<RpcTls>> loadRpcTls(const ClusterConfig& cluster) {
  if (!cluster.tls) return std::shared_ptr<RpcTls>();
  auto tls = RpcTls::load(*cluster.tls);
  if (!tls) return makeError(tls.status());
  const TlsConfig& c = *cluster.tls;
  logInfo("TLS on every RPC port: CA ", c.ca, ", certificate ", c.cert,
          c.clientAuth ? "; clients must present a certificate the CA signed"
                       : "; client certificates not required (tls.client_auth: false)");
  return tls;
}

void reloadRpcTls(RpcTls& tls) {
  Status s = tls.reload();
  if (s) {
    logInfo("TLS certificates reloaded (", tls.config().cert, "); new connections use them");
  } else {
    logError("TLS certificate reload failed, the previous certificates stay in use: ", s.message());
  }
}

int serveUntilSignal(kj::AsyncIoContext& io, capnp::Capability::Client bootstrap,
                     const ServeOptions& options) {
  std::function<void()> onHangup = options.reload;
  const bool adminTls = options.admin != nullptr && options.admin->tlsEnabled();
  if (options.tls || adminTls) {
    onHangup = [tls = options.tls, admin = adminTls ? options.admin : nullptr,
                reload = options.reload]() {
      if (tls) reloadRpcTls(*tls);
      if (admin != nullptr) (void)admin->reloadTls();  // a failure is logged; old certs stay
      if (reload) reload();
    };
  }
  auto signal = onTerminationSignal(*io.lowLevelProvider, std::move(onHangup));
  kj::Own<kj::ConnectionReceiver> receiver;
  try {
    auto addr = io.provider->getNetwork().parseAddress(options.listen).wait(io.waitScope);
    receiver = addr->listen();
  } catch (const kj::Exception& e) {
    logError("cannot listen on ", options.listen, ": ", e.getDescription().cStr());
    return 1;
  }
  ListenerTls tls;
  tls.tls = options.tls;
  tls.onHandshakeFailure = options.onTlsHandshakeFailure;
  auto listener = kj::heap<RpcListener>(kj::mv(receiver), kj::mv(bootstrap),
                                        io.provider->getTimer(), options.limits, std::move(tls));
  auto serving = listener->run().then([]() { return 0; },
                                      [](kj::Exception&& e) {
                                        logError("listener failed: ", e.getDescription().cStr());
                                        return 1;
                                      });
  logInfo(options.what, " ready on ", options.listen);
  if (options.admin != nullptr && options.readyWhenListening) {
    options.admin->setState(ServiceState::kReady);
  }
  int sig = 0;
  auto forked = serving.fork();
  int code = signal
                 .then([&sig](int s) {
                   sig = s;
                   return 0;
                 })
                 .exclusiveJoin(forked.addBranch())
                 .wait(io.waitScope);
  if (sig == 0) return code;
  logInfo("received signal ", sig, "; draining");
  if (options.admin != nullptr) options.admin->setState(ServiceState::kDraining);
  if (options.drain) {
    code =
        drainAccepted(io, *listener, options).exclusiveJoin(forked.addBranch()).wait(io.waitScope);
  } else if (options.drainMs > 0) {
    // Not ready, still serving: load balancers stop sending new work while calls already routed
    // here complete.
    code = io.provider->getTimer()
               .afterDelay(options.drainMs * kj::MILLISECONDS)
               .then([]() { return 0; })
               .exclusiveJoin(forked.addBranch())
               .wait(io.waitScope);
  }
  logInfo("stopped");
  return code;
}

ListenerLimits listenerLimits(const LimitsConfig& limits) {
  return {limits.maxMessageBytes, limits.maxConnections, limits.idleTimeoutMs};
}

std::string serviceInfoJson(const ClusterConfig& cluster, const ModelConfig* model,
                            std::string_view role, std::string_view name, std::string_view backend,
                            std::string_view fingerprint, std::string_view dtype) {
  nlohmann::json j;
  j["version"] = kMoeVersion;
  j["role"] = role;
  j["name"] = name;
  j["backend"] = backend;
  if (!fingerprint.empty()) j["fingerprint"] = fingerprint;
  if (!dtype.empty()) j["dtype"] = dtype;
  j["config"] = cluster.sourcePath;
  if (model != nullptr) {
    j["model"] = {{"path", cluster.modelPath},
                  {"type", model->modelType},
                  {"family", model->familyName},
                  {"routing", model->routing.describe()},
                  {"hidden_size", model->hiddenSize},
                  {"intermediate_size", model->intermediateSize},
                  {"num_experts", model->numExperts},
                  {"ffn_experts", model->numFfnExperts},
                  {"top_k", model->topK},
                  {"moe_layers", model->moeLayers}};
  } else {
    j["model"] = {{"path", cluster.modelPath}};
  }
  j["router"] = {{"listen", cluster.router.listen},
                 {"admin", cluster.router.admin},
                 {"device", cluster.router.device.str()},
                 {"max_tokens", cluster.router.maxTokens}};
  auto& shards = j["placement"] = nlohmann::json::array();
  for (const auto& s : cluster.shards) {
    nlohmann::json layers = "all";
    if (s.layers) layers = *s.layers;
    shards.push_back({{"name", s.name},
                      {"listen", s.listen},
                      {"admin", s.admin},
                      {"device", s.device.str()},
                      {"experts", s.experts},
                      {"layers", layers},
                      {"shared_expert", s.sharedExpert}});
  }
  const RoutingOptions& r = cluster.routing;
  j["routing"] = {{"noisy_topk", r.noisyTopk ? nlohmann::json{{"seed", r.noiseSeed}} : nullptr},
                  {"capacity_factor", r.capacityFactor},
                  {"capacity_renormalize", r.capacityRenormalize},
                  {"missing_expert", std::string(missingExpertPolicyName(r.missingExpert))}};
  j["timeouts"] = {{"request_ms", cluster.timeouts.requestMs},
                   {"shard_call_ms", cluster.timeouts.shardCallMs},
                   {"connect_ms", cluster.timeouts.connectMs},
                   {"drain_ms", cluster.timeouts.drainMs}};
  return j.dump();
}

Result<std::unique_ptr<AdminServer>> startAdminPlane(const std::string& listen,
                                                     const ClusterConfig& cluster,
                                                     std::shared_ptr<prometheus::Registry> registry,
                                                     std::shared_ptr<SharedText> info,
                                                     const std::string& reason,
                                                     std::function<void()> onTlsHandshakeFailure) {
  // The YAML's addresses were checked when it was parsed; this catches a --admin override.
  if (cluster.tls && !cluster.admin.tls && !isLoopbackAddress(listen)) {
    return makeError(StatusCode::kFailedPrecondition,
                     "admin address " + listen + " is not loopback: " + kAdminLoopbackRule);
  }
  AdminOptions o;
  o.listen = listen;
  o.registry = std::move(registry);
  o.processMetrics = true;
  o.info = [info]() { return info->get(); };
  o.tls = cluster.admin.tls;
  o.exposePaths = cluster.admin.exposePaths;
  o.onTlsHandshakeFailure = std::move(onTlsHandshakeFailure);
  auto admin = AdminServer::start(std::move(o));
  if (!admin) return makeError(admin.status());
  admin.value()->setState(ServiceState::kStarting, reason);
  std::string paths = "/metrics /healthz /readyz /v1/info";
  if (cluster.admin.exposePaths) {
    paths.clear();
    for (const auto& p : *cluster.admin.exposePaths) paths += (paths.empty() ? "" : " ") + p;
  }
  logInfo("admin plane on port ", admin.value()->port(), " (", listen, ", ",
          cluster.admin.tls
              ? (cluster.admin.tls->clientAuth ? "HTTPS, client certificates" : "HTTPS")
              : "HTTP",
          "): ", paths);
  return admin;
}

void fillModelInfo(proto::ServiceInfo::Builder info, const ModelConfig& model) {
  info.setVersion(kMoeVersion);
  info.setModelType(model.modelType);
  info.setFamilyName(model.familyName);
  info.setRoutingRecipe(model.routing.describe());
  info.setHiddenSize(model.hiddenSize);
  info.setIntermediateSize(model.intermediateSize);
  info.setNumExperts(model.numExperts);
  info.setTopK(model.topK);
  info.setNumLayers(model.numLayers);
  auto layers = info.initMoeLayers(static_cast<unsigned>(model.moeLayers.size()));
  for (size_t i = 0; i < model.moeLayers.size(); ++i)
    layers.set(static_cast<unsigned>(i), model.moeLayers[i]);
}

}  // namespace moe
