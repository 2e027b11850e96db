// Fault tolerance over real processes (router + 3 shards on loopback, every expert on 2 of the 3
// shards), under 4 concurrent clients: a shard killed with SIGKILL and then restarted, a stalled
// replica, a foreign shard on a listed address, replicas added and removed at run time (SIGHUP,
// POST /admin/placement) and the router's own SIGTERM drain lose no request — calls in flight fail
// over to the other replica inside the request — and every answer equals the healthy cluster's.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "client/reference/in_process_layer.h"
#include "deploy/local/local_cluster.h"
#include "kernels/backend.h"
#include "tests/integration/test_cluster.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::testing {
namespace {

using namespace std::chrono_literals;
constexpr uint32_t kH = 64;
constexpr uint32_t kTokens = 6;
constexpr int kInputs = 8;

ClusterSpec replicatedSpec() {
  ClusterSpec spec;
  spec.model = smallF32Model();
  spec.shardExperts = {{0, 1, 2, 3, 4, 5}, {2, 3, 4, 5, 6, 7}, {0, 1, 6, 7}};
  spec.requestMs = 10000;
  spec.shardCallMs = 5000;
  return spec;
}

// The healthy cluster's answer to each of the kInputs requests the traffic sends.
std::vector<std::vector<float>> healthyAnswers(const std::string& router) {
  std::vector<std::vector<float>> want;
  TestClient c(router);
  for (int i = 0; i < kInputs; ++i) {
    auto r = c.forward(0, randomTokens(kTokens, kH, 100 + i), kTokens, kH);
    EXPECT_TRUE(r.value) << r.error;
    want.push_back(r.value ? outputValues(*r.value) : std::vector<float>{});
  }
  return want;
}

// 4 clients sending the same kInputs requests round and round until told to stop.
class Traffic {
 public:
  // Each answer must equal want[i], or alsoOk[i] when given (routed before or after an event).
  Traffic(const std::string& router, const std::vector<std::vector<float>>& want,
          const std::vector<std::vector<float>>* alsoOk = nullptr)
      : router_(router), want_(want), alsoOk_(alsoOk) {}
  void start() {
    for (int c = 0; c < 4; ++c) threads_.emplace_back([this, c]() { client(c); });
  }
  ~Traffic() { stop(); }  // a failed assertion returns early: the clients still stop
  // The clients send nothing new; stop() waits for their last answers.
  void requestStop() { stop_ = true; }
  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  int sent() const { return sent_; }
  int failed() const { return failed_; }
  int wrong() const { return wrong_; }
  std::string firstError() {
    std::lock_guard<std::mutex> l(mutex_);
    return firstError_;
  }

 private:
  void client(int c) {
    TestClient tc(router_);
    for (int i = c; !stop_; i = (i + 1) % kInputs) {
      auto r = tc.forward(0, randomTokens(kTokens, kH, 100 + i), kTokens, kH);
      ++sent_;
      if (!r.value) {
        ++failed_;
        std::lock_guard<std::mutex> l(mutex_);
        if (firstError_.empty()) firstError_ = r.error;
      } else if (maxRelErr(outputValues(*r.value), want_[i]) > 1e-6 &&
                 (alsoOk_ == nullptr || maxRelErr(outputValues(*r.value), (*alsoOk_)[i]) > 1e-5)) {
        ++wrong_;
      }
    }
  }
  std::string router_;
  const std::vector<std::vector<float>>& want_;
  const std::vector<std::vector<float>>* alsoOk_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0}, failed_{0}, wrong_{0};
  std::mutex mutex_;
  std::string firstError_;
};

// Every request the traffic sent was answered, and rightly; the event's line for the log.
void expectNoLoss(Traffic& traffic, const char* event) {
  EXPECT_EQ(traffic.failed(), 0) << traffic.firstError();
  EXPECT_EQ(traffic.wrong(), 0);
  std::printf("chaos %s: %d requests, %d failed, %d wrong\n", event, traffic.sent(),
              traffic.failed(), traffic.wrong());
}

TEST(Chaos, KillNineAndRestartUnderLoadLoseNoRequest) {
  auto cluster = startCluster(writeCluster("chaos-kill", replicatedSpec()));
  ASSERT_NE(cluster, nullptr);
  std::vector<std::vector<float>> want;
  ASSERT_NO_FATAL_FAILURE(want = healthyAnswers(cluster->routerAddress()));
  Traffic traffic(cluster->routerAddress(), want);
  traffic.start();
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(kill(cluster->pidOf("shard-1"), SIGKILL), 0);
  std::this_thread::sleep_for(1000ms);
  const int duringOutage = traffic.sent();
  ASSERT_TRUE(cluster->restartShard("shard-1").isOk());
  // Back in rotation (verified again) within 2 s of being ready.
  TestClient c(cluster->routerAddress());
  bool back = false;
  for (int i = 0; i < 40 && !back; ++i) {
    std::this_thread::sleep_for(50ms);
    auto info = c.routerInfo();
    back = info.value && info.value->getInfo().getShards()[1].getReachable();
  }
  EXPECT_TRUE(back) << "the restarted shard was not back in rotation within 2 s";
  std::this_thread::sleep_for(500ms);
  traffic.stop();
  EXPECT_GT(duringOutage, 20) << "too little traffic to mean anything";
  RecordProperty("requests", traffic.sent());
  expectNoLoss(traffic, "kill -9 + restart");
}

// A replica stopped with SIGSTOP (slow, not dead) for 1.5 s: calls stuck on it are hedged to the
// other replica, new sub-batches avoid it (its rows in flight only grow), and no request fails.
TEST(Chaos, AStalledReplicaIsHedgedAroundWithoutFailures) {
  auto cluster = startCluster(writeCluster("chaos-stop", replicatedSpec()));
  ASSERT_NE(cluster, nullptr);
  std::vector<std::vector<float>> want;
  ASSERT_NO_FATAL_FAILURE(want = healthyAnswers(cluster->routerAddress()));
  Traffic traffic(cluster->routerAddress(), want);
  traffic.start();
  std::this_thread::sleep_for(500ms);
  const pid_t pid = cluster->pidOf("shard-1");
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  std::this_thread::sleep_for(1500ms);
  kill(pid, SIGCONT);
  std::this_thread::sleep_for(500ms);
  traffic.stop();
  expectNoLoss(traffic, "SIGSTOP 1.5 s");
}

// A shard of another model (same shapes, other weights) answers on shard-2's address: the router
// never sends it a token (its fingerprint differs), says why, every answer stays the healthy
// cluster's and `moe-client --check` passes.
TEST(Chaos, AForeignShardOnAListedAddressIsNeverServedFrom) {
  ClusterSpec spec = replicatedSpec();
  const std::string yaml = writeCluster("chaos-foreign", spec);
  auto cluster = startCluster(yaml);
  ASSERT_NE(cluster, nullptr);
  std::vector<std::vector<float>> want;
  ASSERT_NO_FATAL_FAILURE(want = healthyAnswers(cluster->routerAddress()));
  TestClient c(cluster->routerAddress());
  // The impostor: the same YAML, but its model path points at other weights of the same shapes.
  const std::string dir = yaml.substr(0, yaml.rfind('/'));
  SyntheticModelSpec other = spec.model;
  other.seed += 7;
  ASSERT_TRUE(writeSyntheticCheckpoint(other, dir + "/foreign").isOk());
  std::ifstream in(yaml);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("path: model"), 11, "path: foreign");
  std::ofstream(dir + "/foreign.yaml") << text;
  ASSERT_EQ(kill(cluster->pidOf("shard-2"), SIGKILL), 0);
  const pid_t impostor = spawn(
      {deploy::selfDir() + "/moe-expert", "--config", dir + "/foreign.yaml", "--shard", "shard-2"},
      dir + "/impostor.log");
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {  // until the router has met it
    std::this_thread::sleep_for(100ms);
    auto info = c.routerInfo();
    refused = info.value && std::string(info.value->getInfo().getShards()[2].getError().cStr())
                                    .find("model fingerprint") != std::string::npos;
  }
  EXPECT_TRUE(refused) << "the router never found the impostor out";
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < kInputs; ++i) {
      auto r = c.forward(0, randomTokens(kTokens, kH, 100 + i), kTokens, kH);
      ASSERT_TRUE(r.value) << r.error;
      EXPECT_LE(maxRelErr(outputValues(*r.value), want[i]), 1e-6) << "input " << i;
    }
  }
  // What a user runs: the parity check passes with the impostor present.
  const auto [status, out] = runCommand(deploy::selfDir() + "/moe-client --config " + yaml +
                                        " --tokens 256 --batch 32 --concurrency 4 --check --quiet");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("identical for 256/256 tokens OK"), std::string::npos) << out;
  kill(impostor, SIGKILL);
  waitpid(impostor, nullptr, 0);
}

// The YAML of `path` with its shard list replaced by `shards` (name, address and experts each).
std::string withShards(const std::string& path, const std::vector<ShardConfig>& shards) {
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string out = text.substr(0, text.find("shards:\n")) + "shards:\n";
  for (const ShardConfig& s : shards) {
    out +=
        "  - name: " + s.name + "\n    listen: " + s.listen + "\n    device: cpu\n    experts: [";
    for (size_t j = 0; j < s.experts.size(); ++j) {
      out += (j ? ", " : "") + std::to_string(s.experts[j]);
    }
    out += "]\n";
  }
  return out + text.substr(text.find("timeouts:"));
}

// Until Router.info lists exactly `names`, each in rotation (at most 10 s).
bool waitForShards(TestClient& c, const std::vector<std::string>& names) {
  for (int i = 0; i < 200; ++i) {
    auto info = c.routerInfo();
    if (info.value) {
      std::vector<std::string> up;
      for (auto s : info.value->getInfo().getShards()) {
        if (s.getReachable()) up.emplace_back(s.getName().cStr());
      }
      if (up == names && info.value->getInfo().getShards().size() == names.size()) return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Replicas added and removed at run time under 4 clients: SIGHUP swaps shard-1 for a new shard-3
// (which must prove its identity first); shard-1, removed, is then killed without costing a
// request; POST /admin/placement lists it again once restarted. Nothing fails, every answer is
// the healthy cluster's, and the new replica takes traffic.
TEST(Chaos, ReplicasAddedAndRemovedAtRunTimeLoseNoRequest) {
  ClusterSpec spec = replicatedSpec();
  const std::string admin = "127.0.0.1:" + std::to_string(freePort());
  spec.routerYaml = "  admin: " + admin + "\n";
  const std::string yaml = writeCluster("chaos-reload", spec);
  auto cluster = startCluster(yaml);
  ASSERT_NE(cluster, nullptr);
  const std::string dir = yaml.substr(0, yaml.rfind('/'));
  std::vector<ShardConfig> shards = cluster->config().shards;
  ShardConfig extra = shards[0];
  extra.name = "shard-3";
  extra.listen = "127.0.0.1:" + std::to_string(freePort());
  extra.experts = {0, 1, 2, 3, 4, 5, 6, 7};
  std::ofstream(dir + "/grown.yaml") << withShards(yaml, {shards[0], shards[1], shards[2], extra});
  const pid_t shard3 = spawn(
      {deploy::selfDir() + "/moe-expert", "--config", dir + "/grown.yaml", "--shard", "shard-3"},
      dir + "/logs/shard-3.log");
  auto reap = kj::defer([shard3]() {
    kill(shard3, SIGKILL);
    waitpid(shard3, nullptr, 0);
  });

  std::vector<std::vector<float>> want;
  ASSERT_NO_FATAL_FAILURE(want = healthyAnswers(cluster->routerAddress()));
  Traffic traffic(cluster->routerAddress(), want);
  traffic.start();
  std::this_thread::sleep_for(300ms);
  const std::string swapped = withShards(yaml, {shards[0], shards[2], extra});
  std::ofstream(yaml) << swapped;
  ASSERT_EQ(kill(cluster->pidOf("router"), SIGHUP), 0);
  TestClient c(cluster->routerAddress());
  EXPECT_TRUE(waitForShards(c, {"shard-0", "shard-2", "shard-3"}))
      << "SIGHUP did not swap shard-1 for shard-3";
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(kill(cluster->pidOf("shard-1"), SIGKILL), 0);  // removed: nobody needs it now
  std::this_thread::sleep_for(500ms);

  const std::string all = withShards(yaml, {shards[0], shards[1], shards[2], extra});
  std::ofstream(yaml) << all;
  ASSERT_TRUE(cluster->restartShard("shard-1").isOk());
  const auto [code, body] = httpPost(admin, "/admin/placement", all);
  EXPECT_EQ(code, 200) << body;
  EXPECT_EQ(body, "placement reloaded: listed again shard-1\n");
  EXPECT_TRUE(waitForShards(c, {"shard-0", "shard-1", "shard-2", "shard-3"}));
  const auto [badCode, badBody] = httpPost(admin, "/admin/placement", "shards: [");
  EXPECT_EQ(badCode, 400) << badBody;
  EXPECT_NE(badBody.find("POST /admin/placement"), std::string::npos) << badBody;
  std::this_thread::sleep_for(300ms);
  traffic.stop();

  const auto [mcode, metrics] = httpGet(admin, "/metrics");
  EXPECT_EQ(mcode, 200);
  EXPECT_NE(metrics.find("moe_shard_rows_sent_total{shard=\"shard-3\"}"), std::string::npos);
  EXPECT_EQ(metrics.find("moe_shard_rows_sent_total{shard=\"shard-3\"} 0\n"), std::string::npos)
      << "shard-3 never took traffic";
  expectNoLoss(traffic, "SIGHUP swap + POST re-add");
}

// The router on SIGTERM under 4 clients: it keeps serving for timeouts.drain_ms while /readyz
// says draining, then refuses new requests — and every request sent before that is answered,
// including those still in flight when the refusal starts (every shard is stopped for 300 ms
// just before, so the last requests outlive it); then it exits on its own.
TEST(Chaos, RouterSigtermAnswersEveryRequestItAccepted) {
  ClusterSpec spec = replicatedSpec();
  const std::string admin = "127.0.0.1:" + std::to_string(freePort());
  spec.routerYaml = "  admin: " + admin + "\n";
  const std::string yaml = writeCluster("chaos-router-term", spec);
  std::ofstream(yaml, std::ios::app) << "  drain_ms: 1000\n";  // timeouts: is the last section
  auto cluster = startCluster(yaml);
  ASSERT_NE(cluster, nullptr);
  std::vector<std::vector<float>> want;
  ASSERT_NO_FATAL_FAILURE(want = healthyAnswers(cluster->routerAddress()));
  Traffic traffic(cluster->routerAddress(), want);
  traffic.start();
  std::this_thread::sleep_for(500ms);
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(cluster->pidOf("router"), SIGTERM), 0);
  std::this_thread::sleep_for(200ms);
  const auto [code, body] = httpGet(admin, "/readyz");
  EXPECT_EQ(code, 503);
  EXPECT_EQ(body, "draining\n");
  // The last requests leave at ~900 ms and are held by stopped shards past the 1 s refusal.
  std::this_thread::sleep_for(700ms);
  traffic.requestStop();
  for (const auto& s : cluster->config().shards) kill(cluster->pidOf(s.name), SIGSTOP);
  std::this_thread::sleep_for(300ms);
  for (const auto& s : cluster->config().shards) kill(cluster->pidOf(s.name), SIGCONT);
  traffic.stop();
  const double stoppedMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - signalled)
          .count();
  bool exited = false;
  for (int i = 0; i < 100 && !exited; ++i) {
    exited = cluster->reapExited() == "router";
    if (!exited) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(exited) << "the router did not exit after its drain";
  EXPECT_GT(stoppedMs, 1000) << "no request was in flight when the router began refusing";
  EXPECT_GT(traffic.sent(), 8);
  expectNoLoss(traffic, "router SIGTERM");
  std::printf("chaos router SIGTERM: last answer %.0f ms after the signal\n", stoppedMs);
}

// A counter's value summed over its series whose labels include `labels` (Prometheus text).
double scraped(const std::string& metrics, const std::string& name, const std::string& labels) {
  double total = 0;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0 || line.find(labels) == std::string::npos) continue;
    total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

// Both replicas of experts 6 and 7 killed (shard-1 and shard-2, SIGKILL) under 4 clients, under
// routing.missing_expert renormalize and reroute: no request fails — those in flight when the
// last replica died are routed again, degraded — every answer is the healthy cluster's or the
// reference's degraded computation (client/reference, experts 6 and 7 unavailable), every answer
// after the event is the degraded one, and the two counters move. Under `error`, a request needing
// them fails with Unavailable naming the layer and the experts.
TEST(Chaos, BothReplicasGoneDegradeAsTheReferenceDoes) {
  for (auto policy : {MissingExpertPolicy::kRenormalize, MissingExpertPolicy::kReroute,
                      MissingExpertPolicy::kError}) {
    const std::string name(missingExpertPolicyName(policy));
    SCOPED_TRACE(name);
    ClusterSpec spec = replicatedSpec();
    spec.routing.missingExpert = policy;
    const std::string admin = "127.0.0.1:" + std::to_string(freePort());
    spec.routerYaml = "  admin: " + admin + "\n";
    auto cluster = startCluster(writeCluster("chaos-degraded", spec));
    ASSERT_NE(cluster, nullptr);
    std::vector<std::vector<float>> want, degraded;
    ASSERT_NO_FATAL_FAILURE(want = healthyAnswers(cluster->routerAddress()));
    auto backend = kernels::createBackend(kernels::BackendKind::kReference);
    ASSERT_TRUE(backend.isOk());
    RoutingOptions ro;
    ro.missingExpert = policy;
    auto ref = client::InProcessModel::load(cluster->config().modelPath, std::move(backend).value(),
                                            {0}, ro);
    ASSERT_TRUE(ref.isOk()) << ref.error();
    const std::vector<uint8_t> available = {1, 1, 1, 1, 1, 1, 0, 0};
    for (int i = 0; i < kInputs; ++i) {
      std::vector<float> out(size_t{kTokens} * kH);
      client::ReferenceRequest req;
      req.available = available;
      auto s = ref.value()->forward(0, randomTokens(kTokens, kH, 100 + i), kTokens, out, req);
      if (policy != MissingExpertPolicy::kError) {
        ASSERT_TRUE(s.isOk()) << s.message();
      }
      degraded.push_back(std::move(out));
    }
    if (policy == MissingExpertPolicy::kError) {
      ASSERT_EQ(kill(cluster->pidOf("shard-1"), SIGKILL), 0);
      ASSERT_EQ(kill(cluster->pidOf("shard-2"), SIGKILL), 0);
      TestClient c(cluster->routerAddress());
      bool named = false;
      for (int i = 0; i < 40 && !named; ++i) {
        auto r = c.forward(0, randomTokens(64, kH, 7), 64, kH);  // 64 tokens: some need 6 or 7
        named = !r.value && r.error.find("Unavailable") != std::string::npos &&
                r.error.find("layer 0") != std::string::npos &&
                r.error.find("experts 6, 7") != std::string::npos;
        if (!named) std::this_thread::sleep_for(50ms);
      }
      EXPECT_TRUE(named) << "no request failed naming layer 0 and experts 6, 7";
      continue;
    }
    Traffic traffic(cluster->routerAddress(), want, &degraded);
    traffic.start();
    std::this_thread::sleep_for(500ms);
    ASSERT_EQ(kill(cluster->pidOf("shard-1"), SIGKILL), 0);
    ASSERT_EQ(kill(cluster->pidOf("shard-2"), SIGKILL), 0);
    std::this_thread::sleep_for(1000ms);
    traffic.stop();
    expectNoLoss(traffic, ("both replicas gone, " + name).c_str());
    TestClient c(cluster->routerAddress());
    for (int i = 0; i < kInputs; ++i) {
      auto r = c.forward(0, randomTokens(kTokens, kH, 100 + i), kTokens, kH);
      ASSERT_TRUE(r.value) << r.error;
      EXPECT_LE(maxRelErr(outputValues(*r.value), degraded[i]), 1e-5) << "input " << i;
    }
    const std::string metrics = httpGet(admin, "/metrics").second;
    EXPECT_GT(scraped(metrics, "moe_missing_expert_assignments_total", "layer=\"0\""), 0);
    EXPECT_GT(scraped(metrics, "moe_missing_routing_weight_total", "layer=\"0\""), 0);
  }
}

}  // namespace
}  // namespace moe::testing
