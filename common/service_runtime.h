// What every service process does around its RPC object: listen on an address, serve until
// SIGINT/SIGTERM, and describe the model in ServiceInfo replies.
#pragma once

#include <capnp/capability.h>
#include <kj/async-io.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/admin_server.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_tls.h"

namespace moe {

// Resolves when the process receives SIGINT or SIGTERM; on each SIGHUP before that, calls
// `onHangup` (or logs that there is nothing to reload). Works whichever thread the signal lands
// on (BLAS and CUDA start threads of their own before main runs), via a handler and a pipe.
kj::Promise<int> onTerminationSignal(kj::LowLevelAsyncIoProvider& io,
                                     std::function<void()> onHangup = {});

struct ServeOptions {
  std::string listen;              // RPC address
  std::string what;                // for logs: "router", "expert shard shard-0"
  AdminServer* admin = nullptr;    // readiness to report, if the admin plane is on
  bool readyWhenListening = true;  // false: someone else decides readiness (the router's probes)
  uint32_t drainMs = 0;            // after SIGTERM: the longest the process keeps serving
  // Called once on SIGTERM/SIGINT, when set: the service stops taking new work and returns a
  // promise that resolves once the work it had already accepted is done. The process then returns
  // as soon as that promise resolves and the replies are written, or after drainMs at the latest
  // (0: no limit). Unset: the process keeps serving for drainMs, then returns.
  std::function<kj::Promise<void>()> drain = {};
  // Called on the event loop on every SIGHUP, when set (the router reloads its shard list); it
  // must not block. Unset: SIGHUP is logged and ignored rather than ending the process. Either
  // way an admin plane with admin.tls re-reads its certificate files first.
  std::function<void()> reload = {};
  // Connection count, idle time-out and message size allowed to peers (config `limits:`).
  ListenerLimits limits = {};
  // Config `tls:` (null: plaintext): every connection completes a TLS handshake first; on SIGHUP
  // the certificates are read again (before `reload` runs) and new connections use them.
  std::shared_ptr<RpcTls> tls = nullptr;
  std::function<void()> onTlsHandshakeFailure = {};  // counts moe_tls_handshake_failures_total
};

// Config `tls:` read and checked (null when unset); errors name the key, the file and the reason.
Result<std::shared_ptr<RpcTls>> loadRpcTls(const ClusterConfig& cluster);

// SIGHUP: reads the certificates of `tls` again and logs the outcome; on failure the ones in use
// stay (new connections keep using them) and the log names the file and the reason.
void reloadRpcTls(RpcTls& tls);

// The listener limits of `limits:`.
ListenerLimits listenerLimits(const LimitsConfig& limits);

// Listens, serves `bootstrap` on every connection, logs "<what> ready on <addr>", and on
// SIGINT/SIGTERM drains (admin state kDraining, then options.drain or drainMs as above) and
// returns. Returns a process exit code.
int serveUntilSignal(kj::AsyncIoContext& io, capnp::Capability::Client bootstrap,
                     const ServeOptions& options);

// Text shared between the service thread (writer) and the admin thread (reader).
class SharedText {
 public:
  void set(std::string text) {
    std::lock_guard<std::mutex> lock(mutex_);
    text_ = std::move(text);
  }
  std::string get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return text_;
  }

 private:
  mutable std::mutex mutex_;
  std::string text_ = "{}";
};

// /v1/info body: version, role, this process's name and backend, the model and the placement;
// "fingerprint" (modelFingerprint of the loaded checkpoint) and "dtype" (the experts' compute
// dtype) when given.
std::string serviceInfoJson(const ClusterConfig& cluster, const ModelConfig* model,
                            std::string_view role, std::string_view name, std::string_view backend,
                            std::string_view fingerprint = {}, std::string_view dtype = {});

// Starts the admin plane on `listen` (state kStarting, `reason`), serving `registry` and `info`,
// over HTTPS when cluster.admin.tls is set and limited to admin.expose_paths. Refuses a
// non-loopback `listen` (e.g. from --admin) when tls: is set without admin.tls.
// `onTlsHandshakeFailure` counts failed admin handshakes (moe_tls_handshake_failures_total).
// serveUntilSignal reloads its certificates on SIGHUP.
Result<std::unique_ptr<AdminServer>> startAdminPlane(
    const std::string& listen, const ClusterConfig& cluster,
    std::shared_ptr<prometheus::Registry> registry, std::shared_ptr<SharedText> info,
    const std::string& reason, std::function<void()> onTlsHandshakeFailure = {});

// Model facts shared by every ServiceInfo reply.
void fillModelInfo(proto::ServiceInfo::Builder info, const ModelConfig& model);

extern const char* const kMoeVersion;

}  // namespace moe
