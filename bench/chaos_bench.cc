// moe-chaos-bench: latency through faults, on a replicated cluster (default:
// deploy/local/replicated-cluster.yaml: the default model, every expert on 2 of 3 shards). Per
// event (a shard killed, stopped or drained; a placement reload that removes a replica; the
// router's own drain), 4 clients keep requests of 16 tokens in flight until --requests are
// answered, while the event happens half a second in; --rounds rounds (default 3) run the events
// round-robin. The report gives requests and failures over all rounds and, per event, medians over
// the rounds of p50, p99, p99 over the same round's steady state, and how long a restarted shard,
// once ready, took to get rows again (read from the router's /metrics with curl). Not a test: no
// thresholds.
#include <kj/async-io.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "bench/concurrency_scenario.h"
#include "common/cli.h"
#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "deploy/local/local_cluster.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// What follows an event, once its traffic is done.
enum class After {
  kNothing,
  kRestartShard,   // the victim shard is started again; time until it gets rows
  kRelistShard,    // the router's placement is reloaded with the victim again; time until rows
  kRestartRouter,  // the router (exiting after its drain) is started again
};

struct Event {
  std::string name;
  std::function<void(moe::deploy::LocalCluster&)> inject;  // runs 0.5 s into the traffic
  After after = After::kNothing;
};

// The router's RPC connection; made again after the router restarts.
struct RouterLink {
  kj::Own<moe::RpcConnection> conn;
  moe::proto::Router::Client router{nullptr};
  void connect(kj::AsyncIoContext& io, const std::string& address, const moe::RpcClientTls& tls) {
    router = nullptr;
    conn = moe::connectRpc(*io.provider, io.provider->getTimer(), address, 5000, tls)
               .wait(io.waitScope);
    router = conn->bootstrap<moe::proto::Router>();
  }
};

// POST /admin/placement on the router's admin port (curl): `file` as the body, or none (the router
// re-reads its config file). True on 200.
bool postPlacement(const std::string& admin, const std::string& file) {
  const std::string body = file.empty() ? "--data-binary ''" : "--data-binary @" + file;
  const std::string cmd = "curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST " + body +
                          " http://" + admin + "/admin/placement";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return false;
  char code[8] = {0};
  const bool read = std::fgets(code, sizeof(code), f) != nullptr;
  pclose(f);
  return read && std::string(code) == "200";
}

// `config` without shard `victim`, written next to the logs (relative paths in it resolve against
// the router's own config folder, as the POST's do).
std::string withoutShard(const std::string& config, const std::string& victim) {
  YAML::Node root = YAML::LoadFile(config);
  YAML::Node kept(YAML::NodeType::Sequence);
  for (const auto& s : root["shards"]) {
    if (s["name"].as<std::string>() != victim) kept.push_back(s);
  }
  root["shards"] = kept;
  const std::string path = "/tmp/moe-chaos-bench-logs/without-" + victim + ".yaml";
  std::ofstream(path) << YAML::Dump(root) << "\n";
  return path;
}

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

// One event's traffic: what the clients saw, and (restart events) how soon the shard served again.
struct EventRun {
  uint64_t requests = 0, errors = 0, refused = 0;
  double p50Ms = 0, p99Ms = 0, backSeconds = -1;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// What follows the event's traffic (see After).
double recover(moe::deploy::LocalCluster& c, kj::AsyncIoContext& io, RouterLink& link, uint32_t H,
               const Event& e, const std::string& victim) {
  const std::string& admin = c.config().router.admin;
  auto fail = [](const std::string& what) {
    std::cerr << "moe-chaos-bench: " << what << "\n";
    std::exit(1);
  };
  switch (e.after) {
    case After::kNothing:
      return -1;
    case After::kRestartShard:
      if (auto s = c.restartShard(victim); !s) fail("restart: " + s.message());
      return secondsUntilServing(io.waitScope, link.router, H, admin, victim);
    case After::kRelistShard: {
      const auto t0 = Clock::now();
      if (!postPlacement(admin, "")) fail("POST /admin/placement (relist) failed");
      const double posted = std::chrono::duration<double>(Clock::now() - t0).count();
      return posted + secondsUntilServing(io.waitScope, link.router, H, admin, victim);
    }
    case After::kRestartRouter: {
      const auto t0 = Clock::now();
      while (c.reapExited() != "router") {
        if (Clock::now() - t0 > 30s) fail("the router did not exit after its drain");
        std::this_thread::sleep_for(50ms);
      }
      if (auto s = c.restartRouter(); !s) fail("router restart: " + s.message());
      link.connect(io, c.routerAddress(), c.clientTls());
      return -1;
    }
  }
  return -1;
}

EventRun runEvent(moe::deploy::LocalCluster& c, kj::AsyncIoContext& io, RouterLink& link,
                  uint32_t H, const Event& e, const std::string& victim, uint64_t requests) {
  std::thread injector;
  if (e.inject) {
    injector = std::thread([&]() {
      std::this_thread::sleep_for(500ms);
      e.inject(c);
    });
  }
  // Clients of a draining router go elsewhere once it refuses them (one router here: they stop).
  const moe::bench::ConcurrencyScenario traffic{4, 16, e.after == After::kRestartRouter};
  auto r = moe::bench::runScenario(io.waitScope, link.router, 0, H, traffic, requests);
  if (injector.joinable()) injector.join();
  EventRun run{r.requests, r.errors, r.refused, r.p50Ms, r.p99Ms, -1};
  run.backSeconds = recover(c, io, link, H, e, victim);
  return run;
}

// Per event: requests and failures summed over the rounds; medians of p50, p99, p99 over the
// same round's steady p99, and the time back in rotation.
void printReport(const std::vector<Event>& events, const std::vector<std::vector<EventRun>>& runs) {
  std::printf(
      "| event | requests | failed | refused | p50 ms | p99 ms | p99 / steady | back in rotation "
      "|\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < events.size(); ++i) {
    uint64_t requests = 0, errors = 0, refused = 0;
    std::vector<double> p50, p99, ratio, back;
    for (size_t r = 0; r < runs[i].size(); ++r) {
      const EventRun& x = runs[i][r];
      requests += x.requests;
      errors += x.errors;
      refused += x.refused;
      p50.push_back(x.p50Ms);
      p99.push_back(x.p99Ms);
      ratio.push_back(x.p99Ms / runs[0][r].p99Ms);  // events[0] is steady state
      back.push_back(x.backSeconds);
    }
    char backText[32] = "—";
    if (events[i].after == After::kRestartShard || events[i].after == After::kRelistShard)
      std::snprintf(backText, sizeof(backText), "%.2f s", median(back));
    std::printf("| %s | %llu | %llu | %llu | %.2f | %.2f | %.2f | %s |\n", events[i].name.c_str(),
                static_cast<unsigned long long>(requests), static_cast<unsigned long long>(errors),
                static_cast<unsigned long long>(refused), median(p50), median(p99), median(ratio),
                backText);
  }
  std::printf(
      "\nrefused: requests a draining router turned away after drain_ms (Unavailable: the client "
      "goes to another router; here it stops)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "deploy/local/replicated-cluster.yaml";
  uint64_t requests = 200;
  int rounds = 3;
  CLI::App app{
      "Latency through faults on a replicated cluster: per event (steady state, kill -9, SIGSTOP,\n"
      "SIGTERM drain of one shard, a placement reload that removes it, the router's own drain),\n"
      "4 clients keep requests of 16 tokens in flight while the event happens; --rounds rounds\n"
      "run the events round-robin. Not a test: no thresholds.",
      "moe-chaos-bench"};
  moe::cli::setUp(app);
  app.add_option("--config", config, "Cluster YAML (every expert on at least 2 shards)")
      ->check(CLI::ExistingFile);
  app.add_option("--requests", requests, "Requests per event and round")
      ->transform(moe::cli::unsignedInteger(1, 1000000));
  app.add_option("--rounds", rounds, "Rounds over the events (medians are reported)")
      ->transform(moe::cli::integer(1, 1000));
  if (auto status = moe::cli::parse(app, argc, argv)) return *status;
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
  RouterLink link;
  link.connect(io, c.routerAddress(), c.clientTls());
  const uint32_t H = link.router.infoRequest().send().wait(io.waitScope).getInfo().getHiddenSize();
  const std::string admin = c.config().router.admin;
  const std::string without = withoutShard(config, victim);
  const std::vector<Event> events = {
      {"steady state", {}, After::kNothing},
      {"kill -9 " + victim, [&](auto& cl) { kill(cl.pidOf(victim), SIGKILL); },
       After::kRestartShard},
      {"SIGSTOP " + victim + " for 1 s",
       [&](auto& cl) {
         const pid_t pid = cl.pidOf(victim);
         kill(pid, SIGSTOP);
         std::this_thread::sleep_for(1s);
         kill(pid, SIGCONT);
       },
       After::kNothing},
      {"SIGTERM (drain) " + victim, [&](auto& cl) { kill(cl.pidOf(victim), SIGTERM); },
       After::kRestartShard},
      {"placement reload without " + victim + ", then with it",
       [&](auto&) {
         if (!postPlacement(admin, without)) std::cerr << "moe-chaos-bench: POST failed\n";
       },
       After::kRelistShard},
      {"SIGTERM (drain) router", [&](auto& cl) { kill(cl.pidOf("router"), SIGTERM); },
       After::kRestartRouter},
  };
  if (admin.empty()) {
    std::cerr << "moe-chaos-bench: " << config << ": the router needs an admin address\n";
    return 2;
  }
  moe::bench::runScenario(io.waitScope, link.router, 0, H, {4, 16}, 8);  // warm-up
  // Round-robin over the events, so the machine's noise spreads over all of them.
  std::vector<std::vector<EventRun>> runs(events.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < events.size(); ++i)
      runs[i].push_back(runEvent(c, io, link, H, events[i], victim, requests));
  }
  std::printf(
      "moe-chaos-bench — %s; 4 clients × 16 tokens, %llu requests per event and round, %d "
      "rounds\n\n",
      config.c_str(), static_cast<unsigned long long>(requests), rounds);
  printReport(events, runs);
  c.stop();
  return 0;
}
