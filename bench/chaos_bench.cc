// moe-chaos-bench: latency through faults, on a replicated cluster (default:
// deploy/local/replicated-cluster.yaml: the default model, every expert on 2 of 3 shards). Per
// event, 4 clients keep requests of 16 tokens in flight for --seconds while the event happens
// half a second in; the report gives requests, failures and p50/p99 next to steady state, and
// how long a restarted shard, once ready, took to get rows again (read from the router's
// /metrics with curl). Not a test: no thresholds.
#include <kj/async-io.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "bench/concurrency_scenario.h"
#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "deploy/local/local_cluster.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Event {
  std::string name;
  std::function<void(moe::deploy::LocalCluster&)> inject;  // runs 0.5 s into the traffic
  bool restart;                                            // the shard is started again after
};

// moe_shard_rows_sent_total{shard="<name>"} from the router's /metrics (curl), or -1.
double rowsSentTo(const std::string& admin, const std::string& shard) {
  const std::string cmd = "curl -s --max-time 2 http://" + admin + "/metrics";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return -1;
  const std::string want = "moe_shard_rows_sent_total{shard=\"" + shard + "\"} ";
  char line[512];
  double value = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    const std::string l(line);
    if (l.rfind(want, 0) == 0) value = std::stod(l.substr(want.size()));
  }
  pclose(f);
  return value;
}

// Seconds, after the shard is ready again, until the router sends it rows under light traffic
// (the background prober's doing: nothing here asks the router to probe). -1: not within 10 s.
double secondsUntilServing(kj::WaitScope& ws, moe::proto::Router::Client& router, uint32_t H,
                           const std::string& admin, const std::string& shard) {
  const double before = rowsSentTo(admin, shard);
  const auto t0 = Clock::now();
  while (Clock::now() - t0 < 10s) {
    moe::bench::runScenario(ws, router, 0, H, {4, 16}, 4);
    if (rowsSentTo(admin, shard) > before) {
      return std::chrono::duration<double>(Clock::now() - t0).count();
    }
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "deploy/local/replicated-cluster.yaml";
  uint64_t requests = 400;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--config")
      config = argv[i + 1];
    else if (a == "--requests")
      requests = std::stoull(argv[i + 1]);
  }
  moe::setLogLevel(moe::LogLevel::kWarn);
  moe::deploy::LocalClusterOptions opts;
  opts.configPath = config;
  opts.logDir = "/tmp/moe-chaos-bench-logs";
  auto cluster = moe::deploy::LocalCluster::start(opts);
  if (!cluster) {
    std::cerr << "moe-chaos-bench: " << cluster.error() << "\n";
    return 1;
  }
  auto& c = *cluster.value();
  const std::string victim = c.config().shards[1].name;
  auto io = kj::setupAsyncIo();
  auto conn = moe::connectRpc(*io.provider, io.provider->getTimer(), c.routerAddress(), 5000)
                  .wait(io.waitScope);
  auto router = conn->bootstrap<moe::proto::Router>();
  const uint32_t H = router.infoRequest().send().wait(io.waitScope).getInfo().getHiddenSize();
  const moe::bench::ConcurrencyScenario load{4, 16};
  const std::vector<Event> events = {
      {"steady state", {}, false},
      {"kill -9 " + victim, [&](auto& cl) { kill(cl.pidOf(victim), SIGKILL); }, true},
      {"SIGSTOP " + victim + " for 1 s",
       [&](auto& cl) {
         const pid_t pid = cl.pidOf(victim);
         kill(pid, SIGSTOP);
         std::this_thread::sleep_for(1s);
         kill(pid, SIGCONT);
       },
       false},
      {"SIGTERM (drain) " + victim, [&](auto& cl) { kill(cl.pidOf(victim), SIGTERM); }, true},
  };
  moe::bench::runScenario(io.waitScope, router, 0, H, load, 8);  // warm-up
  std::printf("moe-chaos-bench — %s; 4 clients × 16 tokens, %llu requests per event\n\n",
              config.c_str(), static_cast<unsigned long long>(requests));
  std::printf(
      "| event | requests | failed | p50 ms | p99 ms | p99 / steady | back in rotation |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  double steadyP99 = 0;
  for (const Event& e : events) {
    std::thread injector;
    if (e.inject) {
      injector = std::thread([&]() {
        std::this_thread::sleep_for(500ms);
        e.inject(c);
      });
    }
    auto r = moe::bench::runScenario(io.waitScope, router, 0, H, load, requests);
    if (injector.joinable()) injector.join();
    if (!e.inject) steadyP99 = r.p99Ms;
    std::string back = "—";
    if (e.restart) {
      if (auto s = c.restartShard(victim); !s) {
        std::cerr << "moe-chaos-bench: restart: " << s.message() << "\n";
        return 1;
      }
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.2f s",
                    secondsUntilServing(io.waitScope, router, H, c.config().router.admin, victim));
      back = buf;
    }
    std::printf("| %s | %llu | %llu | %.2f | %.2f | %.2f | %s |\n", e.name.c_str(),
                static_cast<unsigned long long>(r.requests),
                static_cast<unsigned long long>(r.errors), r.p50Ms, r.p99Ms,
                steadyP99 > 0 ? r.p99Ms / steadyP99 : 0.0, back.c_str());
  }
  c.stop();
  return 0;
}
