// AdminServer: the admin HTTP plane of every service — /metrics (Prometheus text), /healthz
// (liveness), /readyz (readiness), /v1/info (JSON) and the POST actions a service adds (the
// router's /admin/placement) — served by Boost.Asio/Beast on its own
// thread, so a busy or stuck KJ event loop never hides a service from its probes and scrapes.
// Optionally over HTTPS (config admin.tls, OpenSSL via boost::asio::ssl, client certificates
// required when client_auth) and limited to the paths in admin.expose_paths.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"

namespace prometheus {
class Registry;
}

namespace moe {

// Readiness as a small state machine (Triton-style): kStarting → kReady ⇄ kNotReady (e.g. a
// dependency lost) → kDraining (terminal). live = process up; ready = state == kReady.
enum class ServiceState { kStarting, kReady, kNotReady, kDraining };

const char* serviceStateName(ServiceState s);  // "starting", "ready", "not ready", "draining"

// Every member has a default so designated initializers ({.listen = ...}) stay warning-free.
struct AdminOptions {
  std::string listen = "127.0.0.1:0";                   // "host:port"; port 0 = pick one
  std::shared_ptr<prometheus::Registry> registry = {};  // what /metrics serves; null = empty
  // JSON body for /v1/info; called on the admin thread, so it must be thread-safe. Unset = "{}".
  std::function<std::string()> info = {};
  // Append the process_* families (CPU, RSS, open fds, start time; common/metrics_util.h) to
  // /metrics. Every service sets it; off by default so a bare registry serves exactly itself.
  bool processMetrics = false;
  // A connection that sends no complete request (or does not take its response) for this long is
  // closed, so a stuck or slow client cannot pin a connection.
  uint32_t idleTimeoutMs = 10000;
  // admin.tls: serve HTTPS with these PEM files; client_auth requires a client certificate that
  // `ca` signs. A plaintext or failed handshake closes only that connection. Unset: plain HTTP.
  std::optional<TlsConfig> tls = {};
  // Called (on the admin thread) once per failed TLS handshake, so the service can count it in
  // moe_tls_handshake_failures_total. A peer that closes before sending a byte is not counted
  // (a TCP connect check is not an attack). Must be thread-safe; unset: only logged.
  std::function<void()> onTlsHandshakeFailure = {};
  // admin.expose_paths: serve only these paths (GET endpoints and POST actions alike); any other
  // path is a 404 naming the exposed ones. Unset: every endpoint and action.
  std::optional<std::vector<std::string>> exposePaths = {};
};

// The answer to an admin action: a status (its HTTP status follows from the code) and a text body.
struct AdminReply {
  StatusCode code = StatusCode::kOk;
  std::string body;
};
// An admin action, run for a POST to its path with the request body. It must not block (it runs
// on the admin thread); it calls `done` exactly once, from any thread, when it has an answer.
using AdminAction = std::function<void(std::string body, std::function<void(AdminReply)> done)>;

class AdminServer {
 public:
  // Binds, then serves on its own thread. Fails (naming the address) when the address does not
  // parse or resolve, or cannot be bound.
  static Result<std::unique_ptr<AdminServer>> start(AdminOptions options);
  ~AdminServer();  // stops the io_context (dropping open connections) and joins the thread
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  uint16_t port() const;  // the bound port (the one picked when listen asked for port 0)

  // Thread-safe. `reason` is shown by /readyz while not ready. kDraining is terminal: once set,
  // later calls are ignored, so a late "dependency back" cannot make a stopping service ready.
  void setState(ServiceState s, std::string reason = "");
  ServiceState state() const;
  // Thread-safe: from now on a POST to `path` (e.g. "/admin/placement") runs `action`.
  void setAction(std::string path, AdminAction action);

  // Thread-safe: re-reads the admin.tls certificate, key and CA files (SIGHUP) for connections
  // accepted from now on; open ones keep the old ones. When a file cannot be read or the key does
  // not match the certificate, keeps serving the old ones and says why. A no-op without tls.
  Status reloadTls();
  bool tlsEnabled() const;

 private:
  struct Impl;
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
