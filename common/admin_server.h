// AdminServer: the admin HTTP plane of every service — /metrics (Prometheus text), /healthz
// (liveness), /readyz (readiness), /v1/info (JSON) and the POST actions a service adds (the
// router's /admin/placement) — served by Boost.Asio/Beast on its own
// thread, so a busy or stuck KJ event loop never hides a service from its probes and scrapes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

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

 private:
  struct Impl;
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
