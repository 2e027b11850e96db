// Fault tolerance over real processes (router + 3 shards on loopback, every expert on 2 of the 3
// shards), under 4 concurrent clients: a shard killed with SIGKILL and then restarted loses no
// request — calls in flight to it fail over to the other replica inside the request — and every
// answer equals the healthy cluster's; the restarted shard is verified and back in rotation.
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
#include <thread>
#include <vector>

#include "deploy/local/local_cluster.h"
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
  Traffic(const std::string& router, const std::vector<std::vector<float>>& want)
      : router_(router), want_(want) {}
  void start() {
    for (int c = 0; c < 4; ++c) threads_.emplace_back([this, c]() { client(c); });
  }
  void stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
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
      } else if (maxRelErr(outputValues(*r.value), want_[i]) > 1e-6) {
        ++wrong_;
      }
    }
  }
  std::string router_;
  const std::vector<std::vector<float>>& want_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0}, failed_{0}, wrong_{0};
  std::mutex mutex_;
  std::string firstError_;
};

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
  EXPECT_EQ(traffic.failed(), 0) << traffic.firstError();
  EXPECT_EQ(traffic.wrong(), 0);
  RecordProperty("requests", traffic.sent());
  std::printf("chaos kill -9 + restart: %d requests, %d failed, %d wrong\n", traffic.sent(),
              traffic.failed(), traffic.wrong());
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
  EXPECT_EQ(traffic.failed(), 0) << traffic.firstError();
  EXPECT_EQ(traffic.wrong(), 0);
  std::printf("chaos SIGSTOP 1.5 s: %d requests, %d failed, %d wrong\n", traffic.sent(),
              traffic.failed(), traffic.wrong());
}

// A shard of another model (same shapes, other weights) answers on shard-2's address: the router
// never sends it a token (its fingerprint differs), says why, and every answer stays the healthy
// cluster's.
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
  kill(impostor, SIGKILL);
  waitpid(impostor, nullptr, 0);
}

}  // namespace
}  // namespace moe::testing
