// PrometheusRunner: runs a private Prometheus next to a local cluster (`moe-cluster --prometheus`).
// It writes a scrape config for the cluster's admin endpoints (job moe-router with shard="router",
// job moe-expert with shard=<name>) into a temporary directory, starts the `prometheus` binary
// from PATH as a child process with its TSDB in that directory, waits until /-/ready answers 200,
// and on stop() / destruction terminates it (SIGTERM, SIGKILL after a grace period) and removes
// the directory. Needs the Debian package `prometheus`.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "common/config.h"
#include "common/result.h"

namespace moe::deploy {

struct PrometheusOptions {
  std::string listen = "127.0.0.1:9090";  // --web.listen-address
  std::string scrapeInterval = "5s";  // a Prometheus duration; also the rule evaluation interval
  std::string rulesFile;              // e.g. deploy/prometheus/alerts.yml; "" = no rules
  std::string binary = "prometheus";  // a path, or a name looked up on PATH
  std::string logDir;  // Prometheus logs to <logDir>/prometheus.log; "" = into its temp dir
  uint32_t readyTimeoutMs = 60000;
};

class PrometheusRunner {
 public:
  // Fails (with the reason and, when Prometheus itself failed, the end of its log) when the
  // binary is missing, no admin address is configured, or Prometheus is not ready in time.
  static Result<std::unique_ptr<PrometheusRunner>> start(const ClusterConfig& config,
                                                         const PrometheusOptions& options);
  ~PrometheusRunner();
  PrometheusRunner(const PrometheusRunner&) = delete;
  PrometheusRunner& operator=(const PrometheusRunner&) = delete;

  void stop();  // idempotent
  std::string url() const { return "http://" + options_.listen; }
  pid_t pid() const { return pid_; }
  const std::string& logPath() const { return logPath_; }
  // True once when Prometheus has exited on its own (reaps it); `why` says how.
  bool reapExited(std::string* why);

  // The executable `binary` resolves to (a path as is, else the first match on PATH), or an error
  // telling how to install it. Cheap: call it before starting the cluster to fail fast.
  static Result<std::string> findBinary(const std::string& binary);
  // The prometheus.yml for `config`; `rulesPath` "" = no rule_files. Exposed for tests.
  static std::string renderConfig(const ClusterConfig& config, const std::string& scrapeInterval,
                                  const std::string& rulesPath);

 private:
  PrometheusRunner() = default;
  std::string logTail() const;

  PrometheusOptions options_;
  std::string dir_;  // temp dir: prometheus.yml, data/, maybe prometheus.log
  std::string logPath_;
  pid_t pid_ = -1;
};

}  // namespace moe::deploy
