// LocalCluster: starts a whole cluster from one YAML on this machine — every shard process, then
// the router — waits until each answers its info RPC (the router: with every expert reachable),
// and stops them all (SIGTERM, then SIGKILL after a grace period). Used by the moe-cluster
// launcher and by the integration tests, so tests exercise exactly what users run.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_tls.h"

namespace moe::deploy {

struct LocalClusterOptions {
  std::string configPath;
  std::string binDir;  // where moe-router and moe-expert live; default: beside this binary
  uint32_t readyTimeoutMs = 120000;
  std::string logDir;  // when set, each process logs to <logDir>/<name>.log, else inherits
};

class LocalCluster {
 public:
  static Result<std::unique_ptr<LocalCluster>> start(const LocalClusterOptions& options);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  void stop();  // idempotent
  const ClusterConfig& config() const { return config_; }
  const std::string& routerAddress() const { return config_.router.listen; }
  // How to connect to the cluster's ports: TLS with the config's certificates under `tls:`.
  RpcClientTls clientTls() const { return {tls_}; }

  // For fault-injection tests and the launcher's watch loop.
  pid_t pidOf(const std::string& name) const;    // "router" or a shard name; -1 if unknown
  Status restartShard(const std::string& name);  // start a stopped shard again and wait for it
  Status restartRouter();  // start the router again (once it has exited) and wait until ready
  // Name of a child that exited on its own since the last call (reaps it), or "".
  std::string reapExited();

 private:
  struct Child {
    std::string name;
    std::vector<std::string> argv;
    pid_t pid = -1;
  };
  LocalCluster() = default;
  Status spawn(Child& child);
  Status waitReady(Child& child, bool router);

  LocalClusterOptions options_;
  ClusterConfig config_;
  std::shared_ptr<RpcTls> tls_;  // config `tls:`; null: plaintext
  std::vector<Child> children_;  // shards first, router last
};

// Directory of the running executable.
std::string selfDir();

}  // namespace moe::deploy
