// The admin plane of real processes: /readyz goes from not-ready to ready during start-up (the
// router waits for every expert's shard), back to not-ready when a shard is lost, and to
// "draining" on SIGTERM while requests are still served; /metrics and /v1/info answer.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "common/config.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

using namespace std::chrono_literals;

// Polls `path` until the status is `want` (or 20 s pass); returns the last (status, body).
// Polls until `path` answers `want` (and its body contains `text`, when given), at most 20 s.
std::pair<int, std::string> waitForStatus(const std::string& admin, const std::string& path,
                                          int want, const std::string& text = "") {
  std::pair<int, std::string> r;
  for (int i = 0; i < 200; ++i) {
    r = httpGet(admin, path);
    if (r.first == want && r.second.find(text) != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  return r;
}

TEST(AdminPlane, ReadinessFollowsStartupShardLossAndDrain) {
  ClusterSpec spec;
  spec.model.hiddenSize = 32;
  spec.model.intermediateSize = 48;
  spec.model.numExperts = 4;
  spec.model.topK = 2;
  spec.shardExperts = {{0, 1}, {2, 3}};
  const std::string yaml = writeCluster("admin", spec);
  const std::string dir = yaml.substr(0, yaml.rfind('/'));
  // Give every process an admin port and the router a drain period.
  std::ifstream in(yaml);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string routerAdmin = "127.0.0.1:" + std::to_string(freePort());
  const std::string shard0Admin = "127.0.0.1:" + std::to_string(freePort());
  text = std::regex_replace(text, std::regex("  device: cpu\n  max_tokens"),
                            "  device: cpu\n  admin: " + routerAdmin + "\n  max_tokens");
  text = std::regex_replace(text, std::regex("(name: shard-0\n    listen: [^\n]*\n)"),
                            "$1    admin: " + shard0Admin + "\n");
  text += "  drain_ms: 1500\n";
  std::ofstream(yaml) << text;

  const std::string bin = deploy::selfDir();
  // Router first: it is up but not ready until every expert's shard answers.
  pid_t router = spawn({bin + "/moe-router", "--config", yaml}, dir + "/router.log");
  // (While it loads its weights it answers 503 "starting"; on a loaded machine that takes a while.)
  auto r = waitForStatus(routerAdmin, "/readyz", 503, "no available replica");
  ASSERT_EQ(r.first, 503) << r.second;
  EXPECT_NE(r.second.find("no available replica"), std::string::npos) << r.second;
  EXPECT_EQ(httpGet(routerAdmin, "/healthz").first, 200);

  pid_t s0 = spawn({bin + "/moe-expert", "--config", yaml, "--shard", "shard-0"}, dir + "/s0.log");
  pid_t s1 = spawn({bin + "/moe-expert", "--config", yaml, "--shard", "shard-1"}, dir + "/s1.log");
  r = waitForStatus(shard0Admin, "/readyz", 200);
  EXPECT_EQ(r.first, 200) << r.second;
  r = waitForStatus(routerAdmin, "/readyz", 200);  // the router probes shards every 2 s
  ASSERT_EQ(r.first, 200) << r.second;

  // /v1/info and /metrics answer with what they should.
  auto info = httpGet(routerAdmin, "/v1/info");
  EXPECT_EQ(info.first, 200);
  EXPECT_NE(info.second.find("\"role\":\"router\""), std::string::npos) << info.second;
  EXPECT_NE(info.second.find("\"shard-1\""), std::string::npos) << info.second;
  {
    auto config = loadClusterConfig(yaml);
    ASSERT_TRUE(config.isOk()) << config.error();
    TestClient c(config.value().router.listen);
    auto x = randomTokens(16, 32, 1);
    ASSERT_TRUE(c.forward(0, x, 16, 32).value);
  }
  auto metrics = httpGet(routerAdmin, "/metrics");
  EXPECT_NE(metrics.second.find("moe_router_requests_total{code=\"ok\"} 1"), std::string::npos);

  // Losing a shard makes the router not ready, naming what is unreachable.
  kill(s1, SIGKILL);
  waitpid(s1, nullptr, 0);
  r = waitForStatus(routerAdmin, "/readyz", 503, "shard-1");
  EXPECT_EQ(r.first, 503);
  EXPECT_NE(r.second.find("shard-1"), std::string::npos) << r.second;
  s1 = spawn({bin + "/moe-expert", "--config", yaml, "--shard", "shard-1"}, dir + "/s1.log");
  r = waitForStatus(routerAdmin, "/readyz", 200);
  EXPECT_EQ(r.first, 200) << r.second;

  // SIGTERM: draining (503) while still answering, then the process exits 0.
  kill(router, SIGTERM);
  r = waitForStatus(routerAdmin, "/readyz", 503);
  EXPECT_EQ(r.first, 503);
  EXPECT_NE(r.second.find("draining"), std::string::npos) << r.second;
  EXPECT_EQ(httpGet(routerAdmin, "/healthz").first, 200);
  int status = 0;
  waitpid(router, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(httpGet(routerAdmin, "/healthz").first, -1);  // gone

  kill(s0, SIGTERM);
  kill(s1, SIGTERM);
  waitpid(s0, nullptr, 0);
  waitpid(s1, nullptr, 0);
}

}  // namespace
}  // namespace moe::testing
