// Unit tests for router_service/dispatch_plan: Placement, planDispatch (one row per token per
// shard, segments per expert, replicas, missing holders) and addShardPartial (the combine step).
#include "router_service/dispatch_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

using unit::contains;

using unit::decision;

std::vector<uint32_t> span2vec(std::span<const uint32_t> s) {
  return {s.begin(), s.end()};
}

const ShardWork* findWork(const DispatchPlan& plan, uint32_t shard) {
  for (const auto& w : plan.work) {
    if (w.shard == shard) return &w;
  }
  return nullptr;
}

// Checks the structural rules every plan must satisfy, whatever the input.
void checkInvariants(const DispatchPlan& plan) {
  for (size_t i = 0; i < plan.work.size(); ++i) {
    const ShardWork& w = plan.work[i];
    if (i > 0) {
      EXPECT_LT(plan.work[i - 1].shard, w.shard) << "work not in ascending shard order";
    }
    EXPECT_FALSE(w.tokens.empty()) << "shard " << w.shard << " has work without rows";
    for (size_t r = 1; r < w.tokens.size(); ++r) {
      EXPECT_LT(w.tokens[r - 1], w.tokens[r]) << "shard " << w.shard << ": tokens not ascending";
    }
    std::vector<bool> used(w.tokens.size(), false);
    for (size_t s = 0; s < w.segments.size(); ++s) {
      const ShardSegment& seg = w.segments[s];
      if (s > 0) {
        EXPECT_FALSE(w.segments[s - 1].shared) << "the shared expert's segment must come last";
        if (!seg.shared) {
          EXPECT_LT(w.segments[s - 1].expert, seg.expert) << "segments not ascending";
        }
      }
      EXPECT_FALSE(seg.rowIndex.empty()) << "empty segment for expert " << seg.expert;
      EXPECT_EQ(seg.rowIndex.size(), seg.weight.size());
      for (uint32_t r : seg.rowIndex) {
        ASSERT_LT(r, w.tokens.size());
        used[r] = true;
      }
    }
    for (size_t r = 0; r < used.size(); ++r) {
      EXPECT_TRUE(used[r]) << "row " << r << " of shard " << w.shard << " is in no segment";
    }
  }
}

// Layer 0 of a 4-expert model over 3 shards: experts 0, 1 on shard 0; expert 2 on shard 1;
// expert 3 on shard 2 and (replica, listed second) shard 1.
Placement threeShards() {
  Placement p(/*numLayers=*/2, /*numExperts=*/4, /*numShards=*/3);
  p.add(0, 0, 0);
  p.add(0, 1, 0);
  p.add(0, 2, 1);
  p.add(0, 3, 2);
  p.add(0, 3, 1);
  return p;
}

TEST(Placement, ShardsForListsHoldersInOrderAndIsEmptyOutOfRange) {
  Placement p = threeShards();
  EXPECT_EQ(p.numExperts(), 4u);
  EXPECT_EQ(p.numShards(), 3u);
  EXPECT_EQ(span2vec(p.shardsFor(0, 3)), (std::vector<uint32_t>{2, 1}));
  EXPECT_EQ(span2vec(p.shardsFor(0, 0)), (std::vector<uint32_t>{0}));
  EXPECT_TRUE(p.shardsFor(1, 0).empty());  // layer 1: nobody
  EXPECT_TRUE(p.shardsFor(2, 0).empty());  // layer out of range
  EXPECT_TRUE(p.shardsFor(0, 4).empty());  // expert out of range
}

TEST(PlanDispatch, TokenWithTwoExpertsOnOneShardIsSentOnce) {
  // t0 → experts 1, 0 (both shard 0); t1 → 2 (shard 1), 0 (shard 0); t2 → 0, 2.
  auto d = decision(3, 2, {1, 0, 2, 0, 0, 2}, {0.6f, 0.4f, 0.7f, 0.3f, 0.55f, 0.45f});
  auto r = planDispatch(d, threeShards(), 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  const DispatchPlan& plan = r.value();
  checkInvariants(plan);
  EXPECT_EQ(plan.rowsSent(), 5u);  // 6 assignments, but t0 goes to shard 0 once

  ASSERT_EQ(plan.work.size(), 2u);  // shard 2 has nothing to do: no call
  EXPECT_EQ(findWork(plan, 2), nullptr);

  const ShardWork& w0 = plan.work[0];
  EXPECT_EQ(w0.shard, 0u);
  EXPECT_EQ(w0.tokens, (std::vector<uint32_t>{0, 1, 2}));
  ASSERT_EQ(w0.segments.size(), 2u);
  EXPECT_EQ(w0.segments[0].expert, 0u);
  EXPECT_EQ(w0.segments[0].rowIndex, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(w0.segments[0].weight, (std::vector<float>{0.4f, 0.3f, 0.55f}));
  EXPECT_EQ(w0.segments[1].expert, 1u);
  EXPECT_EQ(w0.segments[1].rowIndex, (std::vector<uint32_t>{0}));
  EXPECT_EQ(w0.segments[1].weight, (std::vector<float>{0.6f}));

  const ShardWork& w1 = plan.work[1];
  EXPECT_EQ(w1.shard, 1u);
  EXPECT_EQ(w1.tokens, (std::vector<uint32_t>{1, 2}));
  ASSERT_EQ(w1.segments.size(), 1u);
  EXPECT_EQ(w1.segments[0].expert, 2u);
  EXPECT_EQ(w1.segments[0].rowIndex, (std::vector<uint32_t>{0, 1}));  // rows, not token ids
  EXPECT_EQ(w1.segments[0].weight, (std::vector<float>{0.7f, 0.45f}));
}

TEST(PlanDispatch, RowIndicesPointAtTheRightTokens) {
  // Only tokens 1 and 3 go to shard 1, so row r of shard 1 carries tokens[r] ≠ r.
  auto d = decision(4, 1, {0, 2, 1, 2}, {1.f, 0.25f, 1.f, 0.75f});
  auto r = planDispatch(d, threeShards(), 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  checkInvariants(r.value());
  const ShardWork* w1 = findWork(r.value(), 1);
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->tokens, (std::vector<uint32_t>{1, 3}));
  ASSERT_EQ(w1->segments.size(), 1u);
  EXPECT_EQ(w1->segments[0].rowIndex, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(w1->segments[0].weight, (std::vector<float>{0.25f, 0.75f}));
  const ShardWork* w0 = findWork(r.value(), 0);
  ASSERT_NE(w0, nullptr);
  EXPECT_EQ(w0->tokens, (std::vector<uint32_t>{0, 2}));
  ASSERT_EQ(w0->segments.size(), 2u);  // experts 0 and 1, each one row
  EXPECT_EQ(w0->segments[0].expert, 0u);
  EXPECT_EQ(w0->segments[0].rowIndex, (std::vector<uint32_t>{0}));
  EXPECT_EQ(w0->segments[1].expert, 1u);
  EXPECT_EQ(w0->segments[1].rowIndex, (std::vector<uint32_t>{1}));
}

TEST(PlanDispatch, SegmentsAscendByExpertWhateverTheRankOrder) {
  // Higher expert ids come first in each token's ranking; segments must still ascend.
  Placement p(1, 4, 1);
  for (uint32_t e = 0; e < 4; ++e) p.add(0, e, 0);
  auto d = decision(2, 3, {3, 1, 0, 2, 3, 1}, {0.5f, 0.3f, 0.2f, 0.6f, 0.3f, 0.1f});
  auto r = planDispatch(d, p, 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  checkInvariants(r.value());
  ASSERT_EQ(r.value().work.size(), 1u);
  const ShardWork& w = r.value().work[0];
  EXPECT_EQ(w.tokens, (std::vector<uint32_t>{0, 1}));
  ASSERT_EQ(w.segments.size(), 4u);
  std::vector<uint32_t> experts;
  for (const auto& s : w.segments) experts.push_back(s.expert);
  EXPECT_EQ(experts, (std::vector<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(w.segments[0].weight, (std::vector<float>{0.2f}));        // e0: t0
  EXPECT_EQ(w.segments[1].weight, (std::vector<float>{0.3f, 0.1f}));  // e1: t0, t1
  EXPECT_EQ(w.segments[2].weight, (std::vector<float>{0.6f}));        // e2: t1
  EXPECT_EQ(w.segments[3].rowIndex, (std::vector<uint32_t>{0, 1}));   // e3: t0, t1
  EXPECT_EQ(w.segments[3].weight, (std::vector<float>{0.5f, 0.3f}));
  EXPECT_EQ(r.value().rowsSent(), 2u);
}

TEST(PlanDispatch, ReplicaGoesToFirstListedShard) {
  auto d = decision(1, 1, {3}, {1.f});
  auto r = planDispatch(d, threeShards(), 0);  // expert 3: shard 2 listed before shard 1
  ASSERT_TRUE(r.isOk()) << r.error();
  ASSERT_EQ(r.value().work.size(), 1u);
  EXPECT_EQ(r.value().work[0].shard, 2u);

  Placement q(1, 4, 3);  // same, other listing order
  for (uint32_t e = 0; e < 3; ++e) q.add(0, e, 0);
  q.add(0, 3, 1);
  q.add(0, 3, 2);
  auto r2 = planDispatch(d, q, 0);
  ASSERT_TRUE(r2.isOk()) << r2.error();
  ASSERT_EQ(r2.value().work.size(), 1u);
  EXPECT_EQ(r2.value().work[0].shard, 1u);
}

TEST(PlanDispatch, ExpertWithoutHolderNamesExpertAndLayer) {
  Placement p(2, 4, 2);
  for (uint32_t e = 0; e < 4; ++e) p.add(0, e, 0);
  p.add(1, 0, 1);
  p.add(1, 1, 1);
  p.add(1, 2, 1);  // layer 1, expert 3: nobody
  auto d = decision(2, 2, {0, 1, 2, 3}, {0.5f, 0.5f, 0.5f, 0.5f});
  EXPECT_TRUE(planDispatch(d, p, 0).isOk());
  auto r = planDispatch(d, p, 1);
  ASSERT_FALSE(r.isOk());
  EXPECT_TRUE(contains(r.error(), "no shard serves expert 3 of layer 1"));

  // An expert id past the model's experts is an error, not an out-of-bounds read.
  auto bad = decision(1, 1, {7}, {1.f});
  auto r2 = planDispatch(bad, p, 0);
  ASSERT_FALSE(r2.isOk());
  EXPECT_TRUE(contains(r2.error(), "no shard serves expert 7 of layer 0"));

  // A layer past the placement's layers likewise.
  auto r3 = planDispatch(d, p, 5);
  ASSERT_FALSE(r3.isOk());
  EXPECT_TRUE(contains(r3.error(), "of layer 5"));
}

TEST(PlanDispatch, KEqualsNumExperts) {
  auto d =
      decision(2, 4, {0, 1, 2, 3, 3, 2, 1, 0}, {0.4f, 0.3f, 0.2f, 0.1f, 0.4f, 0.3f, 0.2f, 0.1f});
  auto r = planDispatch(d, threeShards(), 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  const DispatchPlan& plan = r.value();
  checkInvariants(plan);
  ASSERT_EQ(plan.work.size(), 3u);
  EXPECT_EQ(plan.rowsSent(), 6u);  // both tokens, once to each shard
  for (const auto& w : plan.work) EXPECT_EQ(w.tokens, (std::vector<uint32_t>{0, 1}));
  ASSERT_EQ(plan.work[0].segments.size(), 2u);  // experts 0, 1
  EXPECT_EQ(plan.work[0].segments[0].weight, (std::vector<float>{0.4f, 0.1f}));
  EXPECT_EQ(plan.work[0].segments[1].weight, (std::vector<float>{0.3f, 0.2f}));
  ASSERT_EQ(plan.work[1].segments.size(), 1u);  // expert 2
  EXPECT_EQ(plan.work[1].segments[0].expert, 2u);
  ASSERT_EQ(plan.work[2].segments.size(), 1u);  // expert 3
  EXPECT_EQ(plan.work[2].segments[0].expert, 3u);
  EXPECT_EQ(plan.work[2].segments[0].weight, (std::vector<float>{0.1f, 0.4f}));
}

TEST(PlanDispatch, SingleToken) {
  auto d = decision(1, 2, {2, 3}, {0.75f, 0.25f});
  auto r = planDispatch(d, threeShards(), 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  checkInvariants(r.value());
  ASSERT_EQ(r.value().work.size(), 2u);
  EXPECT_EQ(r.value().work[0].shard, 1u);
  EXPECT_EQ(r.value().work[0].tokens, (std::vector<uint32_t>{0}));
  EXPECT_EQ(r.value().work[1].shard, 2u);
  EXPECT_EQ(r.value().work[1].segments[0].weight, (std::vector<float>{0.25f}));
  EXPECT_EQ(r.value().rowsSent(), 2u);
}

TEST(PlanDispatch, NoTokensNoWork) {
  auto r = planDispatch(decision(0, 2, {}, {}), threeShards(), 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_TRUE(r.value().work.empty());
  EXPECT_EQ(r.value().rowsSent(), 0u);
}

TEST(AddShardPartial, AccumulatesIntoTokenRowsOnly) {
  constexpr size_t H = 2;
  std::vector<float> out = {100, 101, 200, 201, 300, 301, 400, 401};  // [T=4, H]
  ShardWork a;
  a.shard = 0;
  a.tokens = {0, 2};
  ShardWork b;
  b.shard = 1;
  b.tokens = {2, 3};
  const std::vector<float> pa = {1, 2, 3, 4};      // rows for tokens 0, 2
  const std::vector<float> pb = {10, 20, 30, 40};  // rows for tokens 2, 3
  addShardPartial(a, pa, H, out);
  addShardPartial(b, pb, H, out);
  EXPECT_EQ(out, (std::vector<float>{101, 103, 200, 201, 313, 325, 430, 441}));
}

TEST(AddShardPartial, PlanThenCombineSumsEveryShard) {
  // Each shard answers weight-summed rows; the combine must give out[t] = Σ over its experts.
  auto d = decision(3, 2, {1, 0, 2, 0, 3, 2}, {0.6f, 0.4f, 0.7f, 0.3f, 0.5f, 0.5f});
  auto r = planDispatch(d, threeShards(), 0);
  ASSERT_TRUE(r.isOk()) << r.error();
  constexpr size_t H = 1;
  std::vector<float> out(3 * H, 0.f);
  for (const ShardWork& w : r.value().work) {
    // Fake expert e: FFN(x) = e + 1; the shard returns Σ weight · (e + 1) per row.
    std::vector<float> partial(w.tokens.size() * H, 0.f);
    for (const auto& seg : w.segments) {
      for (size_t j = 0; j < seg.rowIndex.size(); ++j) {
        partial[seg.rowIndex[j]] += seg.weight[j] * float(seg.expert + 1);
      }
    }
    addShardPartial(w, partial, H, out);
  }
  EXPECT_FLOAT_EQ(out[0], 0.6f * 2 + 0.4f * 1);
  EXPECT_FLOAT_EQ(out[1], 0.7f * 3 + 0.3f * 1);
  EXPECT_FLOAT_EQ(out[2], 0.5f * 4 + 0.5f * 3);
}

TEST(Placement, FromConfigHonoursPerShardLayers) {
  auto parsed = parseClusterConfig(
      "model: {path: /m}\n"
      "shards:\n"
      "  - {name: s0, listen: 'h:1', experts: [0, 1]}\n"
      "  - {name: s1, listen: 'h:2', experts: [2, 3], layers: [1]}\n"
      "  - {name: s2, listen: 'h:3', experts: '2-3', layers: [3]}\n"
      "  - {name: s3, listen: 'h:4', experts: [0], layers: [3]}\n",
      "cluster.yaml", "/");
  ASSERT_TRUE(parsed.isOk()) << parsed.error();
  ModelConfig m;
  m.numExperts = 4;
  m.numFfnExperts = 4;
  m.numLayers = 4;
  m.moeLayers = {1, 3};
  Placement p = Placement::fromConfig(parsed.value(), m);
  EXPECT_EQ(p.numShards(), 4u);
  EXPECT_EQ(p.numExperts(), 4u);
  EXPECT_EQ(span2vec(p.shardsFor(1, 0)), (std::vector<uint32_t>{0}));
  EXPECT_EQ(span2vec(p.shardsFor(1, 2)), (std::vector<uint32_t>{1}));
  EXPECT_EQ(span2vec(p.shardsFor(1, 3)), (std::vector<uint32_t>{1}));
  EXPECT_EQ(span2vec(p.shardsFor(3, 0)), (std::vector<uint32_t>{0, 3}));  // config order
  EXPECT_EQ(span2vec(p.shardsFor(3, 1)), (std::vector<uint32_t>{0}));
  EXPECT_EQ(span2vec(p.shardsFor(3, 2)), (std::vector<uint32_t>{2}));
  EXPECT_TRUE(p.shardsFor(0, 0).empty());  // not an MoE layer
  EXPECT_TRUE(p.shardsFor(2, 1).empty());

  // And planning on it: layer 3, token → experts 0 and 2 goes to shards 0 and 2.
  auto r = planDispatch(decision(1, 2, {0, 2}, {0.5f, 0.5f}), p, 3);
  ASSERT_TRUE(r.isOk()) << r.error();
  ASSERT_EQ(r.value().work.size(), 2u);
  EXPECT_EQ(r.value().work[0].shard, 0u);
  EXPECT_EQ(r.value().work[1].shard, 2u);
}

TEST(PlanDispatch, DroppedAssignmentsAndZeroComputeExpertsAreNotSent) {
  // 4 FFN experts (threeShards) plus zero-computation ids 4..7 (MoE++). t0 → 0 and 5 (router);
  // t1 → 2 (dropped by capacity) and 1; t2 → 6 and 7 (both on the router: no row sent at all).
  auto d = decision(3, 2, {0, 5, 2, 1, 6, 7}, {0.5f, 0.5f, 0.0f, 1.0f, 0.5f, 0.5f});
  d.dropped = {0, 0, 1, 0, 0, 0};
  DispatchExtras extras;
  extras.routedExperts = 8;
  auto r = planDispatch(d, threeShards(), 0, extras);
  ASSERT_TRUE(r.isOk()) << r.error();
  checkInvariants(r.value());
  ASSERT_EQ(r.value().work.size(), 1u);  // shard 1 (expert 2) gets nothing: t1's 2 was dropped
  const ShardWork& w = r.value().work[0];
  EXPECT_EQ(w.shard, 0u);
  EXPECT_EQ(w.tokens, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(r.value().rowsSent(), 2u);
  // Without routedExperts an id past the FFN experts is still an error, not silently skipped.
  EXPECT_FALSE(planDispatch(d, threeShards(), 0).isOk());
}

TEST(PlanDispatch, SharedExpertOnAShardGetsEveryTokenOnceWithItsGateWeight) {
  // t0 → 2 (shard 1), t1 → 0 (shard 0); the shared expert lives on shard 1.
  auto d = decision(2, 1, {2, 0}, {1.0f, 1.0f});
  const std::vector<float> gate = {0.25f, 0.75f};
  DispatchExtras extras;
  extras.sharedShard = 1;
  extras.sharedWeights = gate;
  auto r = planDispatch(d, threeShards(), 0, extras);
  ASSERT_TRUE(r.isOk()) << r.error();
  checkInvariants(r.value());
  const ShardWork* w = findWork(r.value(), 1);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->tokens, (std::vector<uint32_t>{0, 1}));  // t0 once, though it has two segments
  ASSERT_EQ(w->segments.size(), 2u);
  EXPECT_FALSE(w->segments[0].shared);
  EXPECT_EQ(w->segments[0].expert, 2u);
  EXPECT_TRUE(w->segments[1].shared);
  EXPECT_EQ(w->segments[1].rowIndex, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(w->segments[1].weight, gate);
  EXPECT_EQ(r.value().rowsSent(), 3u);  // shard 0: t1; shard 1: t0, t1
}

}  // namespace
}  // namespace moe::router
