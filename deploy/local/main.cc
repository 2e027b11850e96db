// moe-cluster: starts a local cluster (router + every shard) from one YAML, waits until it is
// ready, then either runs a command against it (`-- CMD ARGS...`, exit status = the command's) or
// serves until Ctrl-C / SIGTERM. Any process dying on its own stops the whole cluster.
// --prometheus also runs a private Prometheus scraping every admin endpoint (PrometheusRunner).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "common/cli.h"
#include "common/log.h"
#include "common/service_flags.h"
#include "deploy/local/local_cluster.h"
#include "deploy/local/prometheus_runner.h"

namespace {

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
  moe::deploy::PrometheusOptions promOptions;
  // Everything after the first "--" is the command to run; CLI11 sees only what comes before.
  int ownArgs = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      ownArgs = i;
      command.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  CLI::App app{
      "Starts every shard and the router of a cluster YAML on this machine and waits until all\n"
      "are ready. With -- CMD ARGS...: runs CMD once the cluster is ready, then stops it; exits\n"
      "with CMD's status. Without: serves until Ctrl-C or SIGTERM. Any process dying on its own\n"
      "stops the whole cluster.",
      "moe-cluster"};
  moe::cli::setUp(app);
  app.footer("Usage with a command: moe-cluster --config CLUSTER.yaml [OPTIONS] -- CMD ARGS...");
  app.add_option("--config", options.configPath, "Cluster YAML")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--log-dir", options.logDir,
                 "Each process logs to DIR/<name>.log (default: to this terminal)")
      ->transform(moe::cli::nonEmpty());
  uint32_t readySeconds = options.readyTimeoutMs / 1000;
  app.add_option("--ready-timeout-s", readySeconds, "Seconds to wait for every process to be ready")
      ->transform(moe::cli::unsignedInteger(1, 86400));
  std::string promListen;
  auto* prometheus =
      app.add_option("--prometheus", promListen,
                     "Also run Prometheus (Debian package prometheus) on HOST:PORT (default " +
                         promOptions.listen +
                         ") scraping the router.admin and shards[].admin endpoints")
          ->expected(0, 1)
          ->transform(moe::hostPortValidator());
  app.add_option("--prometheus-rules", promOptions.rulesFile,
                 "Alert rules for Prometheus (e.g. deploy/prometheus/alerts.yml)")
      ->check(CLI::ExistingFile);
  app.add_option("--prometheus-scrape-interval", promOptions.scrapeInterval,
                 "Prometheus scrape and rule evaluation interval (a Prometheus duration)")
      ->transform(CLI::Validator(
          [](std::string& s) {
            static const std::regex duration("([0-9]+(ms|s|m|h|d|w|y))+");
            return std::regex_match(s, duration)
                       ? std::string()
                       : "'" + s + "' is not a Prometheus duration (e.g. 5s, 1m30s, 500ms)";
          },
          "DURATION"));
  if (auto status = moe::cli::parse(app, ownArgs, argv)) return *status;
  options.readyTimeoutMs = readySeconds * 1000;
  const bool prometheusOn = prometheus->count() > 0;
  if (!promListen.empty()) promOptions.listen = promListen;
  moe::setLogComponent("moe-cluster");
  if (prometheusOn) {  // fail before starting anything
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
  if (prometheusOn) {
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
