// Batching across concurrent requests over real processes (router + shards on loopback): clients
// of mixed sizes in flight together are merged into shared batches, and each still gets exactly
// its own routing (bit-identical gate logits, experts and weights) and its output within 1e-6 of
// the same request served alone; a request's deadline and a stalled shard fail only the requests
// they concern.
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <vector>

#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

constexpr uint32_t kH = 64;

ClusterSpec batchingSpec() {
  ClusterSpec spec;
  spec.model = smallF32Model();
  spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6}, {7}};
  spec.routerYaml = "  batching: {window_us: 20000, max_tokens: 256}\n";
  spec.requestMs = 1500;
  spec.shardCallMs = 10000;
  return spec;
}

struct Routing {
  std::vector<uint32_t> experts;
  std::vector<float> weights, logits, output;
  uint32_t batchRequests = 0;
};

Routing routingOf(const TestClient::ForwardResponse& r) {
  Routing out;
  for (auto e : r.getRouting().getExperts()) out.experts.push_back(e);
  for (auto w : r.getRouting().getWeights()) out.weights.push_back(w);
  out.logits = gateLogitValues(r);
  out.output = outputValues(r);
  out.batchRequests = r.getStats().getBatchRequests();
  return out;
}

class BatchingTest : public ::testing::Test {
 protected:
  void SetUp() override { cluster_ = startCluster(writeCluster("batching", batchingSpec())); }
  std::unique_ptr<deploy::LocalCluster> cluster_;
};

TEST_F(BatchingTest, ConcurrentMixedSizesAreMergedAndBatchInvariant) {
  ASSERT_NE(cluster_, nullptr);
  TestClient c(cluster_->routerAddress());
  const std::vector<uint32_t> sizes = {1, 7, 3, 33, 1, 5, 2, 17, 1, 64, 4, 9};
  ForwardExtras extras;
  extras.returnRouting = true;
  std::vector<std::vector<float>> xs;
  std::vector<Routing> alone;
  for (size_t i = 0; i < sizes.size(); ++i) {
    xs.push_back(randomTokens(sizes[i], kH, 40 + i));
    auto r = c.forward(i % 2, xs[i], sizes[i], kH, extras);
    ASSERT_TRUE(r.value) << r.error;
    alone.push_back(routingOf(*r.value));
  }
  kj::Vector<kj::Promise<TestClient::ForwardResponse>> calls;
  for (size_t i = 0; i < sizes.size(); ++i)
    calls.add(c.forwardAsync(i % 2, xs[i], sizes[i], kH, extras));
  auto replies = c.waitAll(calls.releaseAsArray());
  uint32_t merged = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i) + " of " + std::to_string(sizes[i]) + " tokens");
    ASSERT_TRUE(replies[i].value) << replies[i].error;
    const Routing together = routingOf(*replies[i].value);
    merged = std::max(merged, together.batchRequests);
    EXPECT_EQ(together.experts, alone[i].experts);
    EXPECT_EQ(together.weights, alone[i].weights);
    EXPECT_EQ(together.logits, alone[i].logits);
    EXPECT_LE(maxRelErr(together.output, alone[i].output), 1e-6);
  }
  EXPECT_GT(merged, 1u) << "no concurrent requests were merged into one batch";
}

// shard-1 (expert 7 only) stalls: requests in flight together with tokens on expert 7 end with
// DeadlineExceeded at their own deadline; the others, merged with them, are served.
TEST_F(BatchingTest, AStalledShardFailsOnlyTheRequestsThatNeedIt) {
  ASSERT_NE(cluster_, nullptr);
  TestClient c(cluster_->routerAddress());
  const pid_t pid = cluster_->pidOf("shard-1");
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  ForwardExtras extras;
  extras.returnRouting = true;
  kj::Vector<kj::Promise<TestClient::ForwardResponse>> calls;
  for (uint32_t i = 0; i < 16; ++i)
    calls.add(c.forwardAsync(0, randomTokens(1, kH, 300 + i), 1, kH, extras));
  auto replies = c.waitAll(calls.releaseAsArray());
  kill(pid, SIGCONT);
  int served = 0, expired = 0;
  for (const auto& r : replies) {
    if (r.value) {
      for (auto e : r.value->getRouting().getExperts()) EXPECT_NE(e, 7u);
      ++served;
    } else {
      EXPECT_NE(r.error.find("DeadlineExceeded: forward did not complete within"),
                std::string::npos)
          << r.error;
      ++expired;
    }
  }
  EXPECT_GT(expired, 0);
  EXPECT_GT(served, 0);
}

}  // namespace
}  // namespace moe::testing
