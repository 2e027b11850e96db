// The `limits:` section over real processes: a shard call whose size the caller chooses (10^6
// one-row segments, an expert named twice, too many rows) is refused at once with
// ResourceExhausted or InvalidArgument naming the limit while other clients are served; a router
// refuses connections beyond limits.max_connections, drops a peer that declares a message larger
// than limits.max_message_bytes, and closes one that declares a message and sends nothing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/config.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

constexpr uint32_t kH = 32;

// A loopback TCP connection that the test drives byte by byte.
class RawSocket {
 public:
  explicit RawSocket(const std::string& address) {
    auto hp = parseHostPort(address);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(hp.value().second);
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawSocket() { ::close(fd_); }
  bool connected() const { return connected_; }
  void send(const void* data, size_t n) {
    ASSERT_EQ(::send(fd_, data, n, MSG_NOSIGNAL), ssize_t(n));
  }
  // True once the peer has closed the connection (a read returns 0 or fails), waiting at most
  // `ms` milliseconds.
  bool closedByPeerWithin(int ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) {
        char buf[256];
        if (::recv(fd_, buf, sizeof buf, 0) <= 0) return true;
      }
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// A Cap'n Proto stream frame header: one segment of `words` words, and no segment bytes.
void declareSegment(RawSocket& s, uint32_t words) {
  const uint32_t header[2] = {0, words};  // segment count − 1, then each segment's size in words
  s.send(header, sizeof header);
}

uint64_t rssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

void setRows(proto::Tensor::Builder t, uint32_t rows) {
  t.setDtype(proto::DType::F32);
  auto s = t.initShape(2);
  s.set(0, rows), s.set(1, kH);
  auto d = t.initData(rows * kH * 4);
  std::memset(d.begin(), 0, d.size());
}

class LimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterSpec spec;
    spec.model.hiddenSize = kH;
    spec.model.intermediateSize = 48;
    spec.model.numExperts = 4;
    spec.model.topK = 2;
    spec.model.numLayers = 2;
    spec.shardExperts = {{0, 1}, {2, 3}};
    spec.maxTokens = 512;
    spec.routerYaml = "  batching: {max_tokens: 512}\n";  // max_rows_per_shard_call = 512
    spec.requestMs = 2000;
    spec.shardCallMs = 1500;
    spec.topLevelYaml =
        "limits:\n  max_connections: 16\n  idle_timeout_ms: 3000\n"
        "  max_message_bytes: 67108864\n";
    yaml_ = new std::string(writeCluster("limits", spec));
    cluster_ = startCluster(*yaml_).release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete yaml_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  static std::string* yaml_;
  static deploy::LocalCluster* cluster_;
};
std::string* LimitsTest::yaml_ = nullptr;
deploy::LocalCluster* LimitsTest::cluster_ = nullptr;

// The probe of issue 15: one ExpertShard.run with 10^6 one-row segments used to take 28–36 s of
// compute while every other request timed out. Now it is refused before any work, and requests
// through the router meanwhile all succeed.
TEST_F(LimitsTest, MillionSegmentShardCallIsRefusedAtOnceWhileOthersAreServed) {
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0};
  std::string firstError;
  std::thread others([&]() {
    TestClient c(cluster_->routerAddress());
    auto x = randomTokens(64, kH, 3);
    while (!stop) {
      auto r = c.forward(0, x, 64, kH);
      if (r.value) {
        ++served;
      } else if (failed++ == 0) {
        firstError = r.error;
      }
    }
  });
  constexpr uint32_t kSegments = 1000000, kRows = 512;
  TestClient shard(cluster_->config().shards[0].listen);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = shard.run([](proto::ExpertShard::RunParams::Builder p) {
    p.setLayer(0);
    setRows(p.initRows(), kRows);
    auto segs = p.initSegments(kSegments);
    for (uint32_t s = 0; s < kSegments; ++s) {
      segs[s].setExpert(s % 2);
      segs[s].initRowIndex(1).set(0, s % kRows);
      segs[s].initWeight(1).set(0, 1.0f);
    }
  });
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // Let the other client overlap the refusal, then a little more.
  while (served < 20) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop = true;
  others.join();
  ASSERT_FALSE(r.value);
  EXPECT_EQ(r.error,
            "remote exception: ResourceExhausted: segments: 1000000 segments exceeds "
            "limits.max_segments_per_shard_call = 1024");
  EXPECT_LT(ms, 1000.0) << "building, sending and refusing the call took " << ms << " ms";
  std::cout << "10^6-segment call refused in " << ms << " ms (message built, sent, refused); "
            << served << " other requests served meanwhile, " << failed << " failed\n";
  EXPECT_EQ(failed, 0) << firstError;
  EXPECT_GE(served, 20);
}

// Under the segment limit, an expert named in many segments would multiply the work just the
// same: one segment per expert, and the rows bound as well.
TEST_F(LimitsTest, ShardCallSizeIsBoundedByRowsAndHeldExperts) {
  TestClient shard(cluster_->config().shards[0].listen);
  struct Case {
    const char* expect;
    uint32_t rows;
    std::vector<uint32_t> experts;  // one segment each, naming every row
  };
  const std::vector<Case> cases = {
      {"ResourceExhausted: rows: 513 rows exceeds limits.max_rows_per_shard_call = 512", 513, {0}},
      {"InvalidArgument: segment 1: expert 0 already named by segment 0 (one segment per expert)",
       4,
       {0, 0}},
      {"InvalidArgument: segment 2: expert 1 already named by segment 1", 4, {0, 1, 1, 0}},
      {"", 512, {0, 1}},  // the most a router sends this shard: accepted
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.expect);
    auto r = shard.run([&](proto::ExpertShard::RunParams::Builder p) {
      p.setLayer(0);
      setRows(p.initRows(), tc.rows);
      auto segs = p.initSegments(static_cast<unsigned>(tc.experts.size()));
      for (unsigned s = 0; s < tc.experts.size(); ++s) {
        segs[s].setExpert(tc.experts[s]);
        auto idx = segs[s].initRowIndex(tc.rows);
        auto wt = segs[s].initWeight(tc.rows);
        for (uint32_t i = 0; i < tc.rows; ++i) idx.set(i, i), wt.set(i, 0.5f);
      }
    });
    if (*tc.expect == '\0') {
      EXPECT_TRUE(r.value) << r.error;
    } else {
      ASSERT_FALSE(r.value);
      EXPECT_NE(r.error.find(tc.expect), std::string::npos) << r.error;
    }
  }
}

// Too many tokens in one forward: ResourceExhausted naming the limit, before any value is read.
TEST_F(LimitsTest, TooManyTokensNamesTheLimit) {
  TestClient c(cluster_->routerAddress());
  auto x = randomTokens(513, kH, 4);
  auto r = c.forward(0, x, 513, kH);
  ASSERT_FALSE(r.value);
  EXPECT_NE(r.error.find("ResourceExhausted: hidden: 513 tokens exceeds "
                         "limits.max_tokens_per_request = 512; split the batch"),
            std::string::npos)
      << r.error;
}

// A peer that declares a message over limits.max_message_bytes is dropped at once; peers that
// declare a large one and send nothing cost no memory and are closed after idle_timeout_ms.
TEST_F(LimitsTest, HugeDeclaredSegmentsAreDropped) {
  const pid_t router = cluster_->pidOf("router");
  const uint64_t rssBefore = rssKiB(router);
  {
    RawSocket over(cluster_->routerAddress());
    ASSERT_TRUE(over.connected());
    declareSegment(over, (1u << 30) / 8);  // 1 GiB
    EXPECT_TRUE(over.closedByPeerWithin(2000)) << "a 1 GiB declared segment was not refused";
  }
  std::vector<std::unique_ptr<RawSocket>> silent;
  for (int i = 0; i < 4; ++i) {
    silent.push_back(std::make_unique<RawSocket>(cluster_->routerAddress()));
    ASSERT_TRUE(silent.back()->connected());
    declareSegment(*silent.back(), (60u << 20) / 8);  // 60 MiB: under the limit, never sent
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const uint64_t rssDuring = rssKiB(router);
  std::cout << "router RSS " << rssBefore / 1024 << " MiB before, " << rssDuring / 1024
            << " MiB with 4 peers declaring 60 MiB each\n";
  EXPECT_LT(rssDuring, rssBefore + 64 * 1024);
  // idle_timeout_ms = 3000: each is closed after 3 s without a byte (allow for a slow machine).
  for (auto& s : silent) EXPECT_TRUE(s->closedByPeerWithin(15000)) << "a silent peer was kept";
  TestClient c(cluster_->routerAddress());
  auto x = randomTokens(8, kH, 5);
  auto ok = c.forward(0, x, 8, kH);
  EXPECT_TRUE(ok.value) << ok.error;
}

// limits.max_connections = 16: the 17th connection is closed before its first call; once the
// others close, calls succeed again.
TEST_F(LimitsTest, ConnectionsBeyondTheLimitAreClosed) {
  std::vector<std::unique_ptr<RawSocket>> held;
  for (int i = 0; i < 16; ++i) {
    held.push_back(std::make_unique<RawSocket>(cluster_->routerAddress()));
    ASSERT_TRUE(held.back()->connected());
  }
  {
    RawSocket extra(cluster_->routerAddress());
    ASSERT_TRUE(extra.connected());  // the kernel accepts; the router closes it at once
    EXPECT_TRUE(extra.closedByPeerWithin(5000)) << "connection 17 was served";
  }
  held.clear();
  // The router notices the closed connections on its next turns; a fresh client then succeeds.
  bool ok = false;
  std::string error;
  for (int attempt = 0; attempt < 50 && !ok; ++attempt) {
    TestClient c(cluster_->routerAddress());
    auto x = randomTokens(8, kH, 6);
    auto r = c.forward(0, x, 8, kH);
    ok = r.value.has_value();
    error = r.error;
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(ok) << error;
}

}  // namespace
}  // namespace moe::testing
