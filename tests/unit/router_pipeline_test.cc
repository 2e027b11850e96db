// The router's request path end to end in one process (tests/unit/in_process_cluster.h): real
// RouterServer and ShardServers over the in-process transport. Batching across concurrent
// requests (merging, batch invariance of routing, per-request options and errors), partial
// shard failures and per-request deadlines — without processes or sockets.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "client/reference/in_process_layer.h"
#include "common/tensor_wire.h"
#include "kernels/backend.h"
#include "tests/unit/in_process_cluster.h"
#include "tests/unit/test_util.h"

namespace moe::unit {
namespace {

InProcessClusterSpec tinySpec() {
  InProcessClusterSpec s;
  s.model = testing::smallF32Model();
  return s;
}

struct Served {
  std::vector<uint32_t> ids;
  std::vector<float> weights;
  std::vector<float> logits;
  std::vector<float> output;
  uint32_t batchRequests = 0;
};

Served served(const InProcessCluster::ForwardResponse& r) {
  Served s;
  auto routing = r.getRouting();
  for (auto v : routing.getExperts()) s.ids.push_back(v);
  for (auto v : routing.getWeights()) s.weights.push_back(v);
  auto view = decodeTensor(r.getGateLogits(), "gateLogits");
  EXPECT_TRUE(view.isOk());
  if (view) {
    F32Rows rows(view.value());
    s.logits.assign(rows.values().begin(), rows.values().end());
  }
  s.output = outputValues(r);
  s.batchRequests = r.getStats().getBatchRequests();
  return s;
}

class RouterPipeline : public ScratchDirTest {};

// Requests of mixed sizes in flight together are merged (some batch holds several of them) and
// each gets exactly the routing it gets alone, bit for bit, and its output within 1e-6.
TEST_F(RouterPipeline, ConcurrentRequestsAreMergedAndBatchInvariant) {
  InProcessCluster c(dir_.string(), tinySpec());
  const uint32_t H = 64;
  const std::vector<uint32_t> sizes = {1, 7, 3, 16, 1, 5, 2, 9, 1, 4};
  std::vector<std::vector<float>> xs;
  std::vector<Served> alone;
  for (size_t i = 0; i < sizes.size(); ++i) {
    xs.push_back(randomTokens(sizes[i], H, 100 + i));
    alone.push_back(served(c.forward(0, xs[i], sizes[i]).wait(c.waitScope())));
    EXPECT_EQ(alone.back().batchRequests, 1u);
  }
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (size_t i = 0; i < sizes.size(); ++i) inFlight.add(c.forward(0, xs[i], sizes[i]));
  auto replies = kj::joinPromises(inFlight.releaseAsArray()).wait(c.waitScope());
  uint32_t largestBatch = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Served together = served(replies[i]);
    largestBatch = std::max(largestBatch, together.batchRequests);
    EXPECT_EQ(together.ids, alone[i].ids) << "request " << i;
    EXPECT_EQ(together.weights, alone[i].weights) << "request " << i;
    EXPECT_EQ(together.logits, alone[i].logits) << "request " << i;
    EXPECT_LE(maxRelErr(together.output, alone[i].output), 1e-6) << "request " << i;
  }
  EXPECT_GT(largestBatch, 1u) << "no two concurrent requests were merged";
}

// Capacity and noisy top-k are per request even when merged: capacity counts the request's own
// tokens, the noise is drawn from its own seed and its tokens' indices within it.
TEST_F(RouterPipeline, CapacityAndNoiseStayPerRequestWhenMerged) {
  auto spec = tinySpec();
  spec.model.noiseWeights = true;
  spec.routingYaml = "routing:\n  noisy_topk: {seed: 5}\n  capacity_factor: 1.0\n";
  InProcessCluster c(dir_.string(), spec);
  const std::vector<uint32_t> sizes = {9, 3, 16, 5, 12, 7};
  std::vector<std::vector<float>> xs;
  std::vector<InProcessCluster::ForwardResponse> alone;
  for (size_t i = 0; i < sizes.size(); ++i) {
    xs.push_back(randomTokens(sizes[i], 64, 700 + i));
    alone.push_back(c.forward(0, xs[i], sizes[i], true, 11 + i).wait(c.waitScope()));
  }
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (size_t i = 0; i < sizes.size(); ++i)
    inFlight.add(c.forward(0, xs[i], sizes[i], true, 11 + i));
  auto together = kj::joinPromises(inFlight.releaseAsArray()).wait(c.waitScope());
  uint32_t dropped = 0, merged = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const Served a = served(alone[i]), t = served(together[i]);
    EXPECT_EQ(t.ids, a.ids);
    EXPECT_EQ(t.weights, a.weights);
    auto da = alone[i].getRouting().getDropped(), dt = together[i].getRouting().getDropped();
    ASSERT_EQ(da.size(), dt.size());
    for (unsigned j = 0; j < da.size(); ++j) EXPECT_EQ(dt[j], da[j]) << "assignment " << j;
    EXPECT_EQ(together[i].getStats().getDroppedAssignments(),
              alone[i].getStats().getDroppedAssignments());
    EXPECT_LE(maxRelErr(t.output, a.output), 1e-6);
    dropped += together[i].getStats().getDroppedAssignments();
    merged = std::max(merged, t.batchRequests);
  }
  EXPECT_GT(dropped, 0u) << "capacity 1.0 dropped nothing: the case tests too little";
  EXPECT_GT(merged, 1u);
}

// With batching off every request is its own batch.
TEST_F(RouterPipeline, BatchingOffServesEachRequestAlone) {
  auto spec = tinySpec();
  spec.extraYaml = "  batching: {enabled: false}\n";
  InProcessCluster c(dir_.string(), spec);
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (int i = 0; i < 6; ++i) inFlight.add(c.forward(0, randomTokens(3, 64, i), 3));
  for (auto& r : kj::joinPromises(inFlight.releaseAsArray()).wait(c.waitScope())) {
    EXPECT_EQ(r.getStats().getBatchRequests(), 1u);
  }
}

// router.wire_dtype: bf16 rows and results cross to and from the shards in half the bytes of f32
// (moe_shard_sent_bytes_total / moe_shard_received_bytes_total count the payload), the experts
// chosen are the same and the output is within bf16 rounding of the f32 wire's.
TEST_F(RouterPipeline, Bf16WireHalvesTheBytesAndKeepsTheRouting) {
  std::map<std::string, Served> out;
  std::map<std::string, double> sent, received;
  for (const char* wire : {"f32", "bf16"}) {
    auto spec = tinySpec();
    spec.extraYaml = std::string("  wire_dtype: ") + wire + "\n";
    InProcessCluster c((dir_ / wire).string(), spec);
    out[wire] = served(c.forward(0, randomTokens(16, 64, 5), 16).wait(c.waitScope()));
    for (const char* shard : {"shard-0", "shard-1"}) {
      sent[wire] += c.routerCounter("moe_shard_sent_bytes_total", {{"shard", shard}});
      received[wire] += c.routerCounter("moe_shard_received_bytes_total", {{"shard", shard}});
    }
  }
  EXPECT_GT(sent["f32"], 0);
  EXPECT_EQ(sent["bf16"], sent["f32"] / 2);
  EXPECT_EQ(received["bf16"], received["f32"] / 2);
  EXPECT_EQ(received["f32"], sent["f32"]);  // one result row back per row sent
  EXPECT_EQ(out["bf16"].ids, out["f32"].ids);
  EXPECT_LE(maxRelErr(out["bf16"].output, out["f32"].output), 2e-2);
  EXPECT_GT(maxRelErr(out["bf16"].output, out["f32"].output), 0) << "the bf16 wire was not used";
}

// max_tokens caps a merged batch.
TEST_F(RouterPipeline, MergedBatchesRespectMaxTokens) {
  auto spec = tinySpec();
  spec.extraYaml = "  batching: {max_tokens: 8}\n";
  InProcessCluster c(dir_.string(), spec);
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (int i = 0; i < 8; ++i) inFlight.add(c.forward(0, randomTokens(3, 64, i), 3));
  for (auto& r : kj::joinPromises(inFlight.releaseAsArray()).wait(c.waitScope())) {
    EXPECT_LE(r.getStats().getBatchTokens(), 8u);
  }
}

// A shard that is down fails only the requests that needed it; the rest are served.
TEST_F(RouterPipeline, AShardFailureFailsOnlyTheRequestsThatNeededIt) {
  auto spec = tinySpec();
  // shard-0 holds experts 0-6, the scripted shard-1 only expert 7.
  spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6}, {7}};
  InProcessCluster c(dir_.string(), spec, {ShardFault::kNone, ShardFault::kDown});
  // Requests of one token each, in flight together (merged): those routed to expert 7 fail.
  std::vector<std::vector<float>> xs;
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (int i = 0; i < 24; ++i) {
    xs.push_back(randomTokens(1, 64, 500 + i));
    inFlight.add(c.forward(0, xs.back(), 1));
  }
  int ok = 0, failed = 0;
  auto all = inFlight.releaseAsArray();
  for (auto& p : all) {
    try {
      auto r = p.wait(c.waitScope());
      for (auto e : r.getRouting().getExperts()) EXPECT_NE(e, 7u);
      ++ok;
    } catch (const kj::Exception& e) {
      EXPECT_TRUE(contains(e.getDescription().cStr(),
                           "Unavailable: layer 0: expert 7 has no available replica"));
      ++failed;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(failed, 0);
}

// No replica of expert 7 left: under renormalize and reroute every request is served, its routing
// degraded exactly as the independent reference degrades it, its output equal to the reference's,
// and the tokens that lost expert 7 are marked.
TEST_F(RouterPipeline, DegradedRoutingMatchesTheReferenceWhenAnExpertIsGone) {
  for (auto policy : {MissingExpertPolicy::kRenormalize, MissingExpertPolicy::kReroute}) {
    SCOPED_TRACE(std::string(missingExpertPolicyName(policy)));
    auto spec = tinySpec();
    spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6}, {7}};
    spec.routingYaml =
        "routing:\n  missing_expert: " + std::string(missingExpertPolicyName(policy)) + "\n";
    const auto dir = dir_ / std::string(missingExpertPolicyName(policy));
    InProcessCluster c(dir.string(), spec, {ShardFault::kNone, ShardFault::kDown});
    auto backend = kernels::createBackend(kernels::BackendKind::kReference);
    ASSERT_TRUE(backend.isOk());
    RoutingOptions ro;
    ro.missingExpert = policy;
    auto ref =
        client::InProcessModel::load((dir / "model").string(), std::move(backend).value(), {0}, ro);
    ASSERT_TRUE(ref.isOk()) << ref.error();
    const std::vector<uint8_t> available = {1, 1, 1, 1, 1, 1, 1, 0};
    uint32_t affected = 0;
    for (int i = 0; i < 6; ++i) {
      const uint32_t T = 7;
      auto x = randomTokens(T, 64, 80 + i);
      auto r = c.forward(0, x, T).wait(c.waitScope());
      std::vector<float> want(size_t{T} * 64);
      client::ReferenceRequest req;
      req.available = available;
      client::ReferenceRouting routing;
      ASSERT_TRUE(ref.value()->forward(0, x, T, want, req, &routing).isOk());
      const Served got = served(r);
      EXPECT_EQ(got.ids, routing.ids);
      for (size_t j = 0; j < got.weights.size(); ++j)
        EXPECT_NEAR(got.weights[j], routing.weights[j], 1e-6) << "assignment " << j;
      EXPECT_LE(maxRelErr(got.output, want), 1e-5);
      auto marks = r.getRouting().getAffected();
      for (unsigned t = 0; t < marks.size(); ++t) {
        EXPECT_EQ(marks[t], !routing.affected.empty() && routing.affected[t] != 0);
        affected += marks[t];
      }
    }
    EXPECT_GT(affected, 0u) << "no token needed expert 7: the case tests nothing";
    EXPECT_GE(c.routerCounter("moe_missing_expert_assignments_total", {{"layer", "0"}}), affected);
    EXPECT_GT(c.routerCounter("moe_missing_routing_weight_total", {{"layer", "0"}}), 0.0);
  }
}

// Every expert on both shards; shard-1 fails every run with Unavailable: its calls fail over to
// shard-0 within the same request, which is served exactly as by a healthy cluster.
TEST_F(RouterPipeline, AFailedReplicaFailsOverWithinTheRequest) {
  auto spec = tinySpec();
  spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}};
  std::vector<std::vector<float>> want;
  {
    InProcessCluster healthy((dir_ / "healthy").string(), spec);
    for (int i = 0; i < 12; ++i)
      want.push_back(outputValues(
          healthy.forward(0, randomTokens(3, 64, 40 + i), 3).wait(healthy.waitScope())));
  }
  InProcessCluster c((dir_ / "faulty").string(), spec,
                     {ShardFault::kNone, ShardFault::kRunUnavailable});
  for (int i = 0; i < 12; ++i) {
    auto r = c.forward(0, randomTokens(3, 64, 40 + i), 3).wait(c.waitScope());
    EXPECT_LE(maxRelErr(outputValues(r), want[i]), 1e-6) << "request " << i;
  }
  // shard-1 was chosen and failed (then probed back, since its info answers): failover happened.
  EXPECT_GT(c.routerCounter("moe_shard_rpc_errors_total", {{"shard", "shard-1"}}), 0);
}

// A shard of another model (same shapes, other weights) at a shard's place is never sent a
// token: its experts count as unavailable and the router says why.
TEST_F(RouterPipeline, AForeignShardIsNeverServedFrom) {
  auto spec = tinySpec();
  spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}};
  std::vector<std::vector<float>> want;
  {
    InProcessCluster healthy((dir_ / "healthy").string(), spec);
    for (int i = 0; i < 8; ++i)
      want.push_back(outputValues(
          healthy.forward(0, randomTokens(5, 64, 60 + i), 5).wait(healthy.waitScope())));
  }
  InProcessCluster c((dir_ / "mixed").string(), spec,
                     {ShardFault::kNone, ShardFault::kForeignModel});
  auto info = c.info();
  ASSERT_FALSE(info.getInfo().getShards()[1].getReachable());
  EXPECT_TRUE(contains(info.getInfo().getShards()[1].getError().cStr(), "model fingerprint"));
  for (int i = 0; i < 8; ++i) {
    auto r = c.forward(0, randomTokens(5, 64, 60 + i), 5).wait(c.waitScope());
    EXPECT_LE(maxRelErr(outputValues(r), want[i]), 1e-6) << "request " << i;
  }
}

// A stalled shard: the request's own deadline ends it with DeadlineExceeded; a request that
// does not need the stalled shard, in flight at the same time, is served.
TEST_F(RouterPipeline, EachRequestKeepsItsOwnDeadline) {
  auto spec = tinySpec();
  spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6}, {7}};
  spec.requestMs = 300;
  spec.shardCallMs = 5000;
  InProcessCluster c(dir_.string(), spec, {ShardFault::kNone, ShardFault::kStall});
  int deadline = 0, ok = 0;
  for (int i = 0; i < 16; ++i) {
    try {
      c.forward(0, randomTokens(1, 64, 900 + i), 1).wait(c.waitScope());
      ++ok;
    } catch (const kj::Exception& e) {
      EXPECT_TRUE(
          contains(e.getDescription().cStr(), "DeadlineExceeded: forward did not complete"));
      ++deadline;
    }
  }
  EXPECT_GT(deadline, 0);
  EXPECT_GT(ok, 0);
}

// Bad input fails alone, at decode, with InvalidArgument; a good request right after is served.
TEST_F(RouterPipeline, BadInputFailsAloneWithInvalidArgument) {
  InProcessCluster c(dir_.string(), tinySpec());
  auto bad = randomTokens(2, 64, 1);
  bad[70] = NAN;
  auto badCall = c.forward(0, bad, 2);
  auto goodCall = c.forward(0, randomTokens(4, 64, 2), 4);
  try {
    badCall.wait(c.waitScope());
    ADD_FAILURE() << "a NaN was accepted";
  } catch (const kj::Exception& e) {
    EXPECT_TRUE(contains(e.getDescription().cStr(), "InvalidArgument: hidden: token 1"));
  }
  EXPECT_EQ(goodCall.wait(c.waitScope()).getStats().getTokens(), 4u);
}

// Too many tokens waiting: refused at once with ResourceExhausted, nothing else fails.
TEST_F(RouterPipeline, AFullQueueRefusesWithResourceExhausted) {
  auto spec = tinySpec();
  spec.extraYaml = "  max_queued_tokens: 10\n";
  InProcessCluster c(dir_.string(), spec);
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (int i = 0; i < 6; ++i) inFlight.add(c.forward(0, randomTokens(4, 64, i), 4));
  int ok = 0, refused = 0;
  for (auto& p : inFlight.releaseAsArray()) {
    try {
      p.wait(c.waitScope());
      ++ok;
    } catch (const kj::Exception& e) {
      EXPECT_TRUE(contains(e.getDescription().cStr(), "ResourceExhausted: router queue full"));
      EXPECT_TRUE(contains(e.getDescription().cStr(), "router.max_queued_tokens = 10"));
      ++refused;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(refused, 0);
}

// The shard names Router.info lists, and whether each is in rotation.
std::vector<std::pair<std::string, bool>> listedShards(InProcessCluster& c) {
  std::vector<std::pair<std::string, bool>> out;
  auto info = c.info();
  for (auto s : info.getInfo().getShards()) out.emplace_back(s.getName().cStr(), s.getReachable());
  return out;
}

// A reload (SIGHUP) replaces a replica while requests are in flight: nothing fails, every answer
// equals the healthy cluster's, the new replica takes traffic and the removed one gets none;
// listed again, the removed one is verified and back.
TEST_F(RouterPipeline, AReloadAddsAndRemovesReplicasWithoutLosingARequest) {
  auto spec = tinySpec();
  spec.shardExperts = {{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}};
  spec.spareExperts = {{0, 1, 2, 3, 4, 5, 6, 7}};
  std::vector<std::vector<float>> want;
  {
    InProcessCluster healthy((dir_ / "healthy").string(), spec);
    for (int i = 0; i < 12; ++i)
      want.push_back(outputValues(
          healthy.forward(0, randomTokens(4, 64, 80 + i), 4).wait(healthy.waitScope())));
  }
  InProcessCluster c((dir_ / "reload").string(), spec);
  kj::Vector<kj::Promise<InProcessCluster::ForwardResponse>> inFlight;
  for (int i = 0; i < 6; ++i) inFlight.add(c.forward(0, randomTokens(4, 64, 80 + i), 4));
  auto reload = c.reloadAsync({"shard-0", "spare-0"});
  auto answers = inFlight.releaseAsArray();
  for (int i = 0; i < 6; ++i) {
    EXPECT_LE(maxRelErr(outputValues(answers[i].wait(c.waitScope())), want[i]), 1e-6) << i;
  }
  auto r = reload.wait(c.waitScope());
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_EQ(r.value(), "added spare-0; removed shard-1");
  const std::vector<std::pair<std::string, bool>> afterSwap = {{"shard-0", true},
                                                               {"spare-0", true}};
  EXPECT_EQ(listedShards(c), afterSwap);
  const double removedRows = c.routerCounter("moe_shard_rows_sent_total", {{"shard", "shard-1"}});
  for (int i = 0; i < 12; ++i) {
    auto out = c.forward(0, randomTokens(4, 64, 80 + i), 4).wait(c.waitScope());
    EXPECT_LE(maxRelErr(outputValues(out), want[i]), 1e-6) << i;
  }
  EXPECT_EQ(c.routerCounter("moe_shard_rows_sent_total", {{"shard", "shard-1"}}), removedRows);
  EXPECT_GT(c.routerCounter("moe_shard_rows_sent_total", {{"shard", "spare-0"}}), 0);

  r = c.reload({"shard-0", "shard-1", "spare-0"});
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_EQ(r.value(), "listed again shard-1");
  const std::vector<std::pair<std::string, bool>> all = {
      {"shard-0", true}, {"shard-1", true}, {"spare-0", true}};
  EXPECT_EQ(listedShards(c), all);
}

// A list the model cannot be served from is refused whole (InvalidArgument naming the expert),
// and a listed shard that nobody serves joins as down while the others keep serving.
TEST_F(RouterPipeline, AReloadRefusesAnUnservableListAndSurvivesAnUnreachableShard) {
  auto spec = tinySpec();
  spec.shardExperts = {{0, 1, 2, 3}, {4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}};
  InProcessCluster c(dir_.string(), spec);
  auto refused = c.reload({"shard-0", "shard-1"});  // fine: every expert still served
  ASSERT_TRUE(refused.isOk()) << refused.error();
  refused = c.reload({"shard-0"});
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(refused.error(), "no shard serves expert 4 of layer"));
  auto ghost = c.reload({"shard-0", "shard-1", "ghost"});
  ASSERT_TRUE(ghost.isOk()) << ghost.error();
  EXPECT_TRUE(contains(ghost.value(), "added ghost"));
  EXPECT_TRUE(contains(ghost.value(), "ghost down: shard ghost (127.0.0.1:9): connection refused"));
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(
        c.forward(0, randomTokens(3, 64, 500 + i), 3).wait(c.waitScope()).getStats().getTokens(),
        3u);
  }
}

}  // namespace
}  // namespace moe::unit
