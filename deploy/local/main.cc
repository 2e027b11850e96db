// moe-cluster: starts a local cluster (router + every shard) from one YAML, waits until it is
// ready, then either runs a command against it (`-- CMD ARGS...`, exit status = the command's) or
// serves until Ctrl-C / SIGTERM. Any process dying on its own stops the whole cluster.
// --prometheus also runs a private Prometheus scraping every admin endpoint (PrometheusRunner).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "deploy/local/local_cluster.h"
#include "deploy/local/prometheus_runner.h"

namespace {

int usage() {
  std::cerr
      << "usage: moe-cluster --config CLUSTER.yaml [--log-dir DIR] [--ready-timeout-s N]\n"
         "                   [--prometheus[=HOST:PORT]] [--prometheus-rules FILE]\n"
         "                   [--prometheus-scrape-interval DURATION] [-- CMD ARGS...]\n"
         "  Starts every shard and the router on this machine and waits until all are ready.\n"
         "  With -- CMD: runs CMD once the cluster is ready, then stops it; exits with CMD's "
         "status.\n"
         "  Without: serves until Ctrl-C or SIGTERM.\n"
         "  --prometheus: also runs Prometheus (Debian package prometheus) on HOST:PORT (default\n"
         "  127.0.0.1:9090) scraping the router.admin and shards[].admin endpoints every\n"
         "  DURATION (default 5s), with alert rules from FILE (e.g. "
         "deploy/prometheus/alerts.yml).\n";
  return 2;
}

// Runs argv with the default signal mask; returns its exit status (128+signal if killed).
int runCommand(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(argv[0], argv.data());
    std::cerr << "moe-cluster: cannot run " << args[0] << ": " << std::strerror(errno) << "\n";
    _exit(127);
  }
  // While the command runs, SIGINT/SIGTERM (blocked here) stay pending; the command gets its own.
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int main(int argc, char** argv) {
  moe::deploy::LocalClusterOptions options;
  std::vector<std::string> command;
  bool prometheus = false;
  moe::deploy::PrometheusOptions promOptions;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      options.configPath = argv[++i];
    } else if (a == "--log-dir" && i + 1 < argc) {
      options.logDir = argv[++i];
    } else if (a == "--ready-timeout-s" && i + 1 < argc) {
      const std::string v = argv[++i];
      unsigned seconds = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), seconds);
      if (ec != std::errc() || p != v.data() + v.size() || seconds == 0 || seconds > 86400) {
        std::cerr << "moe-cluster: --ready-timeout-s: '" << v << "' is not a number of seconds\n";
        return usage();
      }
      options.readyTimeoutMs = seconds * 1000;
    } else if (a == "--prometheus") {
      prometheus = true;
    } else if (a.rfind("--prometheus=", 0) == 0) {
      prometheus = true;
      promOptions.listen = a.substr(std::strlen("--prometheus="));
    } else if (a == "--prometheus-rules" && i + 1 < argc) {
      promOptions.rulesFile = argv[++i];
    } else if (a == "--prometheus-scrape-interval" && i + 1 < argc) {
      promOptions.scrapeInterval = argv[++i];
    } else if (a == "--") {
      command.assign(argv + i + 1, argv + argc);
      break;
    } else {
      return usage();
    }
  }
  if (options.configPath.empty()) return usage();
  moe::setLogComponent("moe-cluster");
  if (prometheus) {  // fail before starting anything
    auto bin = moe::deploy::PrometheusRunner::findBinary(promOptions.binary);
    if (!bin) {
      moe::logError(bin.error());
      return 1;
    }
    if (!promOptions.rulesFile.empty() && access(promOptions.rulesFile.c_str(), R_OK) != 0) {
      moe::logError("--prometheus-rules ", promOptions.rulesFile, ": ", std::strerror(errno));
      return 2;
    }
    promOptions.logDir = options.logDir;
  }

  // Block the signals we wait for before any child exists; children reset their mask.
  sigset_t waitFor;
  sigemptyset(&waitFor);
  sigaddset(&waitFor, SIGINT);
  sigaddset(&waitFor, SIGTERM);
  sigaddset(&waitFor, SIGCHLD);
  sigprocmask(SIG_BLOCK, &waitFor, nullptr);

  auto cluster = moe::deploy::LocalCluster::start(options);
  if (!cluster) {
    moe::logError("cluster failed to start: ", cluster.error());
    return 1;
  }
  auto& c = *cluster.value();
  std::unique_ptr<moe::deploy::PrometheusRunner> prom;
  if (prometheus) {
    auto started = moe::deploy::PrometheusRunner::start(c.config(), promOptions);
    if (!started) {
      moe::logError(started.error());
      c.stop();
      return 1;
    }
    prom = std::move(started).value();
    moe::logInfo("prometheus ready at ", prom->url(), " (scrape interval ",
                 promOptions.scrapeInterval, ", log ", prom->logPath(), ")");
  }
  std::string shards;
  for (const auto& s : c.config().shards) shards += " " + s.name + "@" + s.listen;
  moe::logInfo("cluster ready: router at ", c.routerAddress(), "; shards:", shards);

  if (!command.empty()) {
    int code = runCommand(command);
    moe::logInfo("command exited with status ", code, "; stopping the cluster");
    c.stop();
    return code;
  }
  moe::logInfo("serving; press Ctrl-C to stop");
  while (true) {
    siginfo_t info{};
    int sig = sigwaitinfo(&waitFor, &info);
    if (sig == SIGCHLD) {
      if (std::string why; prom && prom->reapExited(&why)) {
        moe::logWarn(why, "\n  the cluster keeps serving without Prometheus");
      }
      std::string dead = c.reapExited();
      if (dead.empty()) continue;
      moe::logError(dead, " exited unexpectedly; stopping the cluster");
      c.stop();
      return 1;
    }
    if (sig == SIGINT || sig == SIGTERM) {
      moe::logInfo("received ", sig == SIGINT ? "SIGINT" : "SIGTERM", "; stopping the cluster");
      c.stop();
      moe::logInfo("all processes stopped");
      return 0;
    }
  }
}
