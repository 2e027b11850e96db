// Mutual TLS on every RPC port (config `tls:`) over real processes, with certificates made at test
// time by scripts/make-tls-certs.sh (a cluster CA, a rogue CA, and a second CA for a rotation):
// moe-client --config works; plaintext peers, certificates of another CA and (with client_auth)
// clients without one are refused at the handshake on the router's and the shards' ports, each
// counted in moe_tls_handshake_failures_total while everyone else is served; with
// client_auth: false a client without a certificate is served; SIGHUP rotates the certificates
// (new connections use them, open ones keep theirs, a broken file keeps the old ones).
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "client/client.h"
#include "common/rpc_tls.h"
#include "tests/integration/metrics_text.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

constexpr uint32_t kH = 32;
namespace fs = std::filesystem;

// A new CA and cluster certificate in `dir` (ca.pem, cluster.pem, cluster.key).
void makeCerts(const std::string& dir) {
  const auto [status, out] =
      runCommand(std::string(MOE_SOURCE_DIR) + "/scripts/make-tls-certs.sh " + dir);
  ASSERT_EQ(status, 0) << out;
}

void copyCerts(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const char* f : {"ca.pem", "cluster.pem", "cluster.key"}) {
    fs::copy_file(fs::path(from) / f, fs::path(to) / f, fs::copy_options::overwrite_existing);
  }
}

std::string fileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

ClusterSpec tlsCluster(const std::string& certs, bool clientAuth) {
  ClusterSpec spec;
  spec.model.hiddenSize = kH;
  spec.model.intermediateSize = 48;
  spec.model.numExperts = 4;
  spec.model.topK = 2;
  spec.model.numLayers = 2;
  spec.shardExperts = {{0, 1}, {2, 3}};
  spec.maxTokens = 256;
  spec.adminPorts = true;
  spec.topLevelYaml = "tls:\n  ca: " + certs + "/ca.pem\n  cert: " + certs +
                      "/cluster.pem\n  key: " + certs + "/cluster.key\n" +
                      (clientAuth ? "" : "  client_auth: false\n");
  return spec;
}

// Who connects: the kinds of peer the ports must tell apart.
enum class Peer {
  kPlaintext,      // no TLS at all
  kCluster,        // the cluster's CA and certificate
  kRogueSigned,    // trusts the cluster's CA, presents a certificate another CA signed
  kNoCertificate,  // trusts the cluster's CA, presents none
  kTrustsRogueCa,  // does not trust the cluster's CA (and presents the rogue certificate)
  kBundleCa,       // the cluster's certificate; its CA file holds the rogue CA first, then ours
};

RpcClientTls clientTls(Peer peer, const std::string& cluster, const std::string& rogue) {
  TlsConfig t;
  switch (peer) {
    case Peer::kPlaintext:
      return {};
    case Peer::kCluster:
      t = {cluster + "/ca.pem", cluster + "/cluster.pem", cluster + "/cluster.key", true};
      break;
    case Peer::kRogueSigned:
      t = {cluster + "/ca.pem", rogue + "/cluster.pem", rogue + "/cluster.key", true};
      break;
    case Peer::kNoCertificate:
      t = {cluster + "/ca.pem", "", "", true};
      break;
    case Peer::kTrustsRogueCa:
      t = {rogue + "/ca.pem", rogue + "/cluster.pem", rogue + "/cluster.key", true};
      break;
    case Peer::kBundleCa: {
      const std::string bundle = rogue + "/bundle.pem";  // as during a CA rotation
      std::ofstream(bundle) << fileText(rogue + "/ca.pem") << fileText(cluster + "/ca.pem");
      t = {bundle, cluster + "/cluster.pem", cluster + "/cluster.key", true};
      break;
    }
  }
  auto tls = RpcTls::load(t);
  EXPECT_TRUE(tls) << tls.error();
  return {tls ? std::move(tls).value() : nullptr};
}

// `f()` on a thread of its own: a TestClient runs its own event loop, one per thread, and a test
// may hold one open while it makes others.
template <typename F>
auto onThread(F f) {
  decltype(f()) out;
  std::thread t([&]() { out = f(); });
  t.join();
  return out;
}

// Router.info over a new connection: "" when it answered, else why not.
std::string callRouter(const std::string& address, const RpcClientTls& tls) {
  return onThread([&]() -> std::string {
    try {
      TestClient c(address, tls);
      auto r = c.routerInfo();
      return r.value ? "" : r.error;
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
  });
}

// Router.info says ready and a forward call succeeds, over a new connection.
bool routerServes(const std::string& address, const RpcClientTls& tls) {
  return onThread([&]() {
    try {
      TestClient c(address, tls);
      auto info = c.routerInfo();
      return info.value && info.value->getInfo().getReady() &&
             c.forward(0, randomTokens(8, kH, 3), 8, kH).value.has_value();
    } catch (const kj::Exception&) {
      return false;
    }
  });
}

// A valid ExpertShard.run (4 rows to expert 0) over a new connection: "" when it answered.
std::string callShard(const std::string& address, const RpcClientTls& tls) {
  return onThread([&]() -> std::string {
    try {
      TestClient c(address, tls);
      auto r = c.run([](proto::ExpertShard::RunParams::Builder p) {
        p.setLayer(0);
        auto t = p.initRows();
        t.setDtype(proto::DType::F32);
        auto s = t.initShape(2);
        s.set(0, 4), s.set(1, kH);
        auto d = t.initData(4 * kH * 4);
        std::memset(d.begin(), 0, d.size());
        auto seg = p.initSegments(1);
        seg[0].setExpert(0);
        auto idx = seg[0].initRowIndex(4);
        auto w = seg[0].initWeight(4);
        for (uint32_t i = 0; i < 4; ++i) idx.set(i, i), w.set(i, 1.0f);
      });
      return r.value ? "" : r.error;
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
  });
}

double tlsFailures(const std::string& admin, const MetricLabels& match) {
  auto [status, body] = httpGet(admin, "/metrics");
  EXPECT_EQ(status, 200);
  return sampleSum(body, "moe_tls_handshake_failures_total", match).value_or(-1);
}

// Polls `done` every 50 ms for up to `ms`; its last answer.
template <typename F>
bool within(int ms, F done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(freshDir("tls-certs"));
    makeCerts(*dir_ + "/cluster");
    makeCerts(*dir_ + "/rogue");
    yaml_ = new std::string(writeCluster("tls", tlsCluster(*dir_ + "/cluster", true)));
    cluster_ = startCluster(*yaml_).release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete yaml_;
    delete dir_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }
  RpcClientTls tls(Peer p) { return clientTls(p, *dir_ + "/cluster", *dir_ + "/rogue"); }

  static std::string* dir_;
  static std::string* yaml_;
  static deploy::LocalCluster* cluster_;
};
std::string* TlsTest::dir_ = nullptr;
std::string* TlsTest::yaml_ = nullptr;
deploy::LocalCluster* TlsTest::cluster_ = nullptr;

// Done when: with tls: configured, `moe-client --config` (the same YAML) works with 0 errors,
// and without TLS it cannot complete a call.
TEST_F(TlsTest, MoeClientWithTheConfigChecksParityAndPlaintextFails) {
  const std::string bin = deploy::selfDir() + "/moe-client";
  const auto [status, out] =
      runCommand(bin + " --config " + *yaml_ + " --check --tokens 256 --batch 32 --json --quiet");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"errors\": 0,"), std::string::npos) << out;
  const auto [plainStatus, plainOut] =
      runCommand(bin + " --router " + cluster_->routerAddress() + " --tokens 32 --quiet");
  EXPECT_NE(plainStatus, 0) << plainOut;
}

// Every RPC port refuses every peer that is not the cluster's at the handshake, counts it on the
// refusing process, and goes on serving the cluster's own peers.
TEST_F(TlsTest, PortsRefuseForeignPeersAndCountThem) {
  struct Port {
    std::string name, address, admin;
    std::string (*call)(const std::string&, const RpcClientTls&);
  };
  const auto& cfg = cluster_->config();
  const std::vector<Port> ports = {
      {"router", cfg.router.listen, cfg.router.admin, callRouter},
      {"shard-0", cfg.shards[0].listen, cfg.shards[0].admin, callShard},  // holds expert 0
  };
  struct Case {
    const char* name;
    Peer peer;
    bool served;
  };
  const std::vector<Case> cases = {
      {"the cluster's certificate", Peer::kCluster, true},
      {"plaintext", Peer::kPlaintext, false},
      {"a certificate the rogue CA signed", Peer::kRogueSigned, false},
      {"no client certificate (client_auth: true)", Peer::kNoCertificate, false},
      {"a client that does not trust the cluster's CA", Peer::kTrustsRogueCa, false},
      {"a CA bundle with the cluster's CA second", Peer::kBundleCa, true},
      {"the cluster's certificate again, after all that", Peer::kCluster, true},
  };
  const MetricLabels server{{"side", "server"}};
  for (const auto& port : ports) {
    for (const auto& tc : cases) {
      SCOPED_TRACE(port.name + ": " + tc.name);
      const double before = tlsFailures(port.admin, server);
      const std::string error = port.call(port.address, tls(tc.peer));
      if (tc.served) {
        EXPECT_EQ(error, "");
        EXPECT_EQ(tlsFailures(port.admin, server), before) << "a handshake that worked counted";
      } else {
        EXPECT_NE(error, "") << "the call was served";
        EXPECT_TRUE(within(3000, [&]() { return tlsFailures(port.admin, server) > before; }))
            << "moe_tls_handshake_failures_total{side=\"server\"} did not rise from " << before;
      }
    }
  }
  // Traffic through the router (router → shard over TLS) still works, and the router's own
  // connections to the shards never failed a handshake.
  TestClient c(cfg.router.listen, tls(Peer::kCluster));
  auto r = c.forward(0, randomTokens(16, kH, 1), 16, kH);
  EXPECT_TRUE(r.value) << r.error;
  for (const auto& s : cfg.shards) {
    EXPECT_EQ(tlsFailures(cfg.router.admin, {{"side", "client"}, {"shard", s.name}}), 0);
  }
}

// moe::Client (the library engines link) with ClientOptions::tls: served with the cluster's
// files, refused without TLS, and a file it cannot use is an error that names it.
TEST_F(TlsTest, CppClientLibrary) {
  const std::string cluster = *dir_ + "/cluster", address = cluster_->routerAddress();
  auto attempt = [&](std::optional<ClientTls> tls) {
    return onThread([&]() -> std::string {
      try {
        ClientOptions o;
        o.tls = tls;
        o.connectTimeout = std::chrono::milliseconds(3000);
        Client c(address, o);
        return c.info().ready ? "" : "not ready";
      } catch (const ClientError& e) {
        return e.what();
      }
    });
  };
  EXPECT_EQ(
      attempt(ClientTls{cluster + "/ca.pem", cluster + "/cluster.pem", cluster + "/cluster.key"}),
      "");
  EXPECT_NE(attempt(std::nullopt), "");
  EXPECT_EQ(attempt(ClientTls{cluster + "/nope.pem", "", ""}),
            "FailedPrecondition: tls.ca " + cluster +
                "/nope.pem: cannot read: No such file or "
                "directory");
}

// A TLS peer that never finishes its handshake (sends nothing) holds up nobody else.
TEST_F(TlsTest, SilentPeerDoesNotBlockOthers) {
  TestClient silent(cluster_->routerAddress());  // plaintext: connected, never says a TLS word
  EXPECT_EQ(callRouter(cluster_->routerAddress(), tls(Peer::kCluster)), "");
}

// client_auth: false: the server does not ask for a certificate (it still has to be the
// cluster's: the client verifies it), and a client without one is served.
TEST(TlsNoClientAuthTest, ClientWithoutCertificateIsServed) {
  const std::string dir = freshDir("tls-noauth-certs");
  makeCerts(dir + "/cluster");
  makeCerts(dir + "/rogue");
  auto cluster = startCluster(writeCluster("tls-noauth", tlsCluster(dir + "/cluster", false)));
  ASSERT_NE(cluster, nullptr);
  const auto& cfg = cluster->config();
  struct Case {
    Peer peer;
    bool served;
  };
  for (const auto& [peer, served] :
       {Case{Peer::kNoCertificate, true}, Case{Peer::kCluster, true}, Case{Peer::kPlaintext, false},
        Case{Peer::kTrustsRogueCa, false}}) {
    SCOPED_TRACE(static_cast<int>(peer));
    const auto t = clientTls(peer, dir + "/cluster", dir + "/rogue");
    EXPECT_EQ(callRouter(cfg.router.listen, t).empty(), served);
    EXPECT_EQ(callShard(cfg.shards[0].listen, t).empty(), served);
  }
}

// Rotation to a new CA with SIGHUP: shards first (the router, still on the old CA, then refuses a
// restarted shard's new certificate and counts it), then the router. New connections use the new
// certificates, open ones keep theirs, a broken file leaves the current ones in place.
TEST(TlsRotationTest, SighupReloadsCertificates) {
  const std::string dir = freshDir("tls-rotation-certs");
  makeCerts(dir + "/old");
  makeCerts(dir + "/new");
  copyCerts(dir + "/old", dir + "/live");
  const std::string yaml = writeCluster("tls-rotation", tlsCluster(dir + "/live", true));
  auto cluster = startCluster(yaml);
  ASSERT_NE(cluster, nullptr);
  const auto& cfg = cluster->config();
  auto asOld = [&]() { return clientTls(Peer::kCluster, dir + "/old", dir + "/new"); };
  auto asNew = [&]() { return clientTls(Peer::kCluster, dir + "/new", dir + "/old"); };
  TestClient open(cfg.router.listen, asOld());
  ASSERT_TRUE(open.routerInfo().value);

  // The shards move to the new CA; the router's open connections to them stay up.
  copyCerts(dir + "/new", dir + "/live");
  for (const auto& s : cfg.shards) ASSERT_EQ(kill(cluster->pidOf(s.name), SIGHUP), 0);
  EXPECT_TRUE(within(5000, [&]() { return callShard(cfg.shards[0].listen, asNew()).empty(); }));
  EXPECT_NE(callShard(cfg.shards[0].listen, asOld()), "");
  EXPECT_TRUE(open.forward(0, randomTokens(8, kH, 2), 8, kH).value);
  // A restarted shard-0 presents the new certificate, which the router does not trust yet.
  ASSERT_TRUE(cluster->restartShard("shard-0").isOk());
  const MetricLabels routerToShard0{{"side", "client"}, {"shard", "shard-0"}};
  EXPECT_TRUE(within(10000, [&]() { return tlsFailures(cfg.router.admin, routerToShard0) > 0; }))
      << "the router's failed handshakes with shard-0 were not counted";

  // The router moves too: new clients of the new CA are served, of the old one refused; the
  // connection opened before keeps working; shard-0 is back in rotation.
  ASSERT_EQ(kill(cluster->pidOf("router"), SIGHUP), 0);
  EXPECT_TRUE(within(5000, [&]() { return callRouter(cfg.router.listen, asNew()).empty(); }));
  EXPECT_NE(callRouter(cfg.router.listen, asOld()), "");
  EXPECT_TRUE(open.routerInfo().value) << "an open connection was cut by the reload";
  EXPECT_TRUE(within(15000, [&]() { return routerServes(cfg.router.listen, asNew()); }))
      << "the router did not reconnect to shard-0 with the new certificates";

  // A reload that cannot read its files logs the file and keeps the certificates it has.
  { std::ofstream(dir + "/live/cluster.key") << "not a key\n"; }
  ASSERT_EQ(kill(cluster->pidOf("router"), SIGHUP), 0);
  const std::string log = fs::path(yaml).parent_path().string() + "/logs/router.log";
  EXPECT_TRUE(within(5000, [&]() {
    const std::string text = fileText(log);
    return text.find("TLS certificate reload failed") != std::string::npos &&
           text.find("cluster.key") != std::string::npos;
  })) << fileText(log);
  EXPECT_EQ(callRouter(cfg.router.listen, asNew()), "");
}

// A certificate file that cannot be used ends the start-up of the router and of a shard with
// exit status 2 and a message naming the key and the file.
TEST(TlsStartupTest, UnusableFilesEndStartUpWithExit2NamingTheFile) {
  const std::string dir = freshDir("tls-startup-certs");
  makeCerts(dir + "/a");
  makeCerts(dir + "/b");
  { std::ofstream(dir + "/garbage.pem") << "this is not PEM\n"; }
  const std::string yaml = writeCluster("tls-startup", tlsCluster(dir + "/a", true));
  const std::string text = fileText(yaml);
  struct Case {
    std::string from, to, message;
  };
  const std::vector<Case> cases = {
      {dir + "/a/cluster.key", dir + "/a/missing.key",
       "tls.key " + dir + "/a/missing.key: cannot read: No such file or directory"},
      {dir + "/a/cluster.key", dir + "/b/cluster.key",
       "tls.key " + dir + "/b/cluster.key: does not match the certificate in tls.cert " + dir +
           "/a/cluster.pem"},
      {dir + "/a/cluster.pem", dir + "/garbage.pem",
       "tls.cert " + dir + "/garbage.pem: not a PEM certificate: "},
      {dir + "/a/ca.pem", dir + "/garbage.pem",
       "tls.ca " + dir + "/garbage.pem: no PEM certificate (BEGIN CERTIFICATE) in it"},
  };
  const std::string bin = deploy::selfDir();
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.message);
    std::string broken = text;
    broken.replace(broken.find(tc.from), tc.from.size(), tc.to);
    const std::string path = (fs::path(yaml).parent_path() / "broken.yaml").string();
    { std::ofstream(path) << broken; }
    for (const std::string& cmd : {bin + "/moe-router --config " + path,
                                   bin + "/moe-expert --config " + path + " --shard shard-0"}) {
      const auto [status, out] = runCommand(cmd);
      EXPECT_EQ(status, 2) << cmd << "\n" << out;
      EXPECT_NE(out.find(tc.message), std::string::npos) << cmd << "\n" << out;
    }
  }
}

}  // namespace
}  // namespace moe::testing
