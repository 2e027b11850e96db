// The admin plane of real processes: /readyz goes from not-ready to ready during start-up (the
// router waits for every expert's shard), back to not-ready when a shard is lost, and to
// "draining" on SIGTERM while requests are still served; /metrics and /v1/info answer. A shard
// with admin.tls and admin.expose_paths, checked with curl, reloads its certificate on SIGHUP.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "common/config.h"
#include "deploy/local/prometheus_runner.h"
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

// A real shard with admin.tls (client certificates required) and admin.expose_paths, checked with
// curl: HTTPS with a client certificate answers, only the exposed paths are served, plain HTTP
// and a client without a certificate get no answer; after its certificate files are replaced by
// one from another CA, SIGHUP makes new connections use it.
TEST(AdminPlane, HttpsWithClientCertificatesExposePathsAndSighupReload) {
  ClusterSpec spec;
  spec.model.hiddenSize = 32;
  spec.model.intermediateSize = 48;
  spec.model.numExperts = 4;
  spec.model.topK = 2;
  spec.shardExperts = {{0, 1, 2, 3}};
  spec.topLevelYaml =
      "admin:\n  tls: {ca: ca1.pem, cert: admin.pem, key: admin.key}\n"
      "  expose_paths: [/healthz, /readyz]\n";
  const std::string yaml = writeCluster("admin-tls", spec);
  const std::string dir = yaml.substr(0, yaml.rfind('/'));
  const std::string admin = "127.0.0.1:" + std::to_string(freePort());
  std::ifstream in(yaml);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text = std::regex_replace(text, std::regex("(name: shard-0\n    listen: [^\n]*\n)"),
                            "$1    admin: " + admin + "\n");
  std::ofstream(yaml) << text;

  auto sh = [&dir](const std::string& command) {
    auto r = runCommand("(cd '" + dir + "' && " + command + ")");
    EXPECT_EQ(r.first, 0) << command << "\n" << r.second;
  };
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  for (const std::string ca : {"ca1", "ca2"}) {
    sh("openssl req -x509 " + ec + " -days 2 -subj /CN=" + ca + " -keyout " + ca + ".key -out " +
       ca + ".pem");
  }
  int serial = 0;
  auto leaf = [&](const std::string& name, const std::string& ca, const std::string& ext) {
    sh("printf '" + ext + "\\n' > " + name + ".ext && openssl req " + ec + " -subj /CN=" + name +
       " -keyout " + name + ".key -out " + name + ".csr && openssl x509 -req -days 2 -in " + name +
       ".csr -CA " + ca + ".pem -CAkey " + ca + ".key -set_serial " + std::to_string(++serial) +
       " -extfile " + name + ".ext -out " + name + ".pem");
  };
  leaf("server1", "ca1", "subjectAltName=IP:127.0.0.1");
  leaf("server2", "ca2", "subjectAltName=IP:127.0.0.1");
  leaf("client", "ca1", "extendedKeyUsage=clientAuth");
  sh("cp server1.pem admin.pem && cp server1.key admin.key");
  if (::testing::Test::HasFailure()) return;  // no certificates, nothing to test with

  // The HTTP status curl got ("000": no HTTP answer at all).
  auto status = [&](const std::string& scheme, const std::string& path,
                    const std::string& options) {
    auto r = runCommand("cd '" + dir + "' && curl -s -o /dev/null -w '%{http_code}' -m 5 " +
                        options + " " + scheme + "://" + admin + path);
    return r.second;
  };
  const std::string trusted = "--cacert ca1.pem --cert client.pem --key client.key";

  const std::string bin = deploy::selfDir();
  pid_t s0 = spawn({bin + "/moe-expert", "--config", yaml, "--shard", "shard-0"}, dir + "/s0.log");
  std::string got;
  for (int i = 0; i < 200 && (got = status("https", "/readyz", trusted)) != "200"; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(got, "200") << "the shard never became ready over HTTPS; see " << dir << "/s0.log";
  EXPECT_EQ(status("https", "/healthz", trusted), "200");
  EXPECT_EQ(status("https", "/v1/info", trusted), "404");  // not in expose_paths
  EXPECT_EQ(status("https", "/metrics", trusted), "404");
  EXPECT_EQ(status("https", "/healthz", "--cacert ca1.pem"), "000");  // no client certificate
  EXPECT_EQ(status("http", "/healthz", ""), "000");                   // plain HTTP

  // moe-cluster --prometheus scrapes it over HTTPS with the admin certificate: promtool accepts
  // the rendered config (it opens the files), and the plane accepts those files as a client's.
  auto config = loadClusterConfig(yaml);
  EXPECT_TRUE(config.isOk()) << config.error();  // not ASSERT: the shard must still be stopped
  if (config.isOk()) {
    const std::string rendered = deploy::PrometheusRunner::renderConfig(config.value(), "1s", "");
    EXPECT_NE(rendered.find("scheme: https"), std::string::npos) << rendered;
    std::ofstream(dir + "/prometheus.yml") << rendered;
    auto check = runCommand("promtool check config '" + dir + "/prometheus.yml'");
    EXPECT_EQ(check.first, 0) << check.second << rendered;
  }
  EXPECT_EQ(status("https", "/healthz", "--cacert ca1.pem --cert admin.pem --key admin.key"),
            "200");

  // New files from another CA, then SIGHUP: new connections get the new certificate.
  sh("cp server2.pem admin.pem && cp server2.key admin.key");
  const std::string trusted2 = "--cacert ca2.pem --cert client.pem --key client.key";
  EXPECT_EQ(status("https", "/healthz", trusted2), "000");  // not before the signal
  kill(s0, SIGHUP);
  for (int i = 0; i < 100 && (got = status("https", "/healthz", trusted2)) != "200"; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(got, "200") << "SIGHUP did not reload the admin certificate";
  EXPECT_EQ(status("https", "/healthz", trusted), "000");  // the old CA no longer verifies it

  kill(s0, SIGTERM);
  int exit = 0;
  waitpid(s0, &exit, 0);
  EXPECT_TRUE(WIFEXITED(exit) && WEXITSTATUS(exit) == 0) << exit;  // SIGHUP did not end it
}

}  // namespace
}  // namespace moe::testing
