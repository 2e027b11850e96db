// Unit tests for the router's small stages on hand-made data: encode (rows gathered and scaled,
// segments written), combine (partials summed per request, a failed shard failing only the
// requests it carried, stats per request), and the row-invariant gate kernel (a row's result does
// not depend on the other rows of the call).
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/row_invariant_linear.h"
#include "router_service/combine.h"
#include "router_service/encode.h"
#include "router_service/shard_health.h"
#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

using unit::contains;

TEST(Encode, GathersScalesAndWritesSegments) {
  ShardWork w;
  w.shard = 1;
  w.tokens = {0, 2};
  w.segments = {{3, false, {0, 1}, {0.25f, 0.5f}}, {0, true, {1}, {1.0f}}};
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};  // 3 tokens, H = 2
  capnp::MallocMessageBuilder msg;
  auto req = msg.initRoot<proto::ExpertShard::RunParams>();
  encodeShardCall(w, 4, x, 2, 2.0f, DType::kF32, req);
  EXPECT_EQ(req.getLayer(), 4u);
  auto rows = decodeTensor(req.asReader().getRows(), "rows");
  ASSERT_TRUE(rows.isOk());
  F32Rows values(rows.value());
  EXPECT_EQ(std::vector<float>(values.values().begin(), values.values().end()),
            (std::vector<float>{2, 4, 10, 12}));
  auto segs = req.asReader().getSegments();
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].getExpert(), 3u);
  EXPECT_EQ(segs[0].getRowIndex()[1], 1u);
  EXPECT_EQ(segs[0].getWeight()[1], 0.5f);
  EXPECT_TRUE(segs[1].getShared());
}

// router.wire_dtype: bf16 rows are the scaled rows rounded to bf16, half the bytes of f32.
TEST(Encode, Bf16WireHalvesTheRowBytes) {
  ShardWork w;
  w.tokens = {1, 0};
  w.segments = {{0, false, {0, 1}, {1.0f, 1.0f}}};
  const std::vector<float> x = {1.0f, 3.14159f, -2.5f, 1e-3f};  // 2 tokens, H = 2
  const struct {
    DType wire;
    size_t bytes;
  } cases[] = {{DType::kF32, 16}, {DType::kBF16, 8}};
  for (const auto& tc : cases) {
    capnp::MallocMessageBuilder msg;
    auto req = msg.initRoot<proto::ExpertShard::RunParams>();
    encodeShardCall(w, 0, x, 2, 3.0f, tc.wire, req);
    auto rows = decodeTensor(req.asReader().getRows(), "rows");
    ASSERT_TRUE(rows.isOk()) << rows.error();
    EXPECT_EQ(rows.value().dtype, tc.wire);
    EXPECT_EQ(rows.value().data.size(), tc.bytes);
    F32Rows values(rows.value());
    const std::vector<float> scaled = {-7.5f, 3e-3f, 3.0f, 3.0f * 3.14159f};
    for (size_t i = 0; i < scaled.size(); ++i) {
      const float want = tc.wire == DType::kBF16 ? bf16ToFloat(floatToBf16(scaled[i])) : scaled[i];
      EXPECT_EQ(values.values()[i], want) << dtypeName(tc.wire) << " element " << i;
    }
  }
}

// Two requests (tokens 0-1 and 2) over two shards; shard 1 carried only token 2.
struct CombineCase {
  Batch batch;
  RoutedBatch routed;
  CombineCase() {
    batch.tokens = 3;
    batch.members = {{0, 2, nullptr, false, std::nullopt}, {2, 1, nullptr, false, std::nullopt}};
    routed.members.resize(2);
    routed.members[0].decision.tokens = 2;
    routed.members[1].decision.tokens = 1;
    routed.members[1].dropped = 1;
    routed.plan.work = {{0, {0, 1, 2}, {}}, {1, {2}, {}}};
  }
};

ShardPartial rowsOf(std::vector<float> v) {
  ShardPartial p;
  p.rows = std::make_unique<F32Rows>(std::move(v));
  return p;
}

TEST(Combine, SumsPartialsPerRequestWithItsOwnStats) {
  CombineCase c;
  std::vector<ShardPartial> partials;
  partials.push_back(rowsOf({1, 1, 2, 2, 3, 3}));
  partials.push_back(rowsOf({10, 10}));
  auto replies = combineBatch(c.batch, c.routed, c.routed.plan.work, partials, 2, {7, 9});
  ASSERT_TRUE(replies[0].isOk());
  ASSERT_TRUE(replies[1].isOk());
  EXPECT_EQ(replies[0].value().output, (std::vector<float>{1, 1, 2, 2}));
  EXPECT_EQ(replies[1].value().output, (std::vector<float>{13, 13}));
  EXPECT_EQ(replies[0].value().stats.shardCalls, 1u);
  EXPECT_EQ(replies[0].value().stats.rowsSent, 2u);
  EXPECT_EQ(replies[1].value().stats.shardCalls, 2u);
  EXPECT_EQ(replies[1].value().stats.rowsSent, 2u);
  EXPECT_EQ(replies[1].value().stats.dropped, 1u);
  EXPECT_EQ(replies[1].value().stats.batchRequests, 2u);
  EXPECT_EQ(replies[1].value().stats.gateMicros, 7u);
}

TEST(Combine, AFailedShardFailsOnlyTheRequestsItCarried) {
  CombineCase c;
  std::vector<ShardPartial> partials;
  partials.push_back(rowsOf({1, 1, 2, 2, 3, 3}));
  partials.emplace_back();
  partials.back().status = Status::error(StatusCode::kUnavailable, "shard s1: connection lost");
  auto replies = combineBatch(c.batch, c.routed, c.routed.plan.work, partials, 2, {});
  ASSERT_TRUE(replies[0].isOk());
  ASSERT_FALSE(replies[1].isOk());
  EXPECT_EQ(replies[1].code(), StatusCode::kUnavailable);
  EXPECT_TRUE(contains(replies[1].error(), "connection lost"));
}

TEST(Combine, WhatAShardRejectedIsTheRoutersFault) {
  CombineCase c;
  std::vector<ShardPartial> partials(2);
  partials[0].status = Status::error(StatusCode::kInvalidArgument, "segment 0: row index 9 >= 3");
  partials[1] = rowsOf({10, 10});
  auto replies = combineBatch(c.batch, c.routed, c.routed.plan.work, partials, 2, {});
  EXPECT_EQ(replies[0].code(), StatusCode::kInternal);
  EXPECT_EQ(replies[1].code(), StatusCode::kInternal);
}

TEST(RowInvariantLinear, MatchesTheProductAndIgnoresTheOtherRows) {
  const size_t N = 5, K = 37;  // K not a multiple of the 16 lanes
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  std::vector<float> w(N * K), x(19 * K);
  for (float& v : w) v = n(rng);
  for (float& v : x) v = n(rng);
  std::vector<float> all(19 * N);
  kernels::linearRowInvariant(w, N, K, x, 19, all);
  for (size_t t = 0; t < 19; ++t) {
    for (size_t j = 0; j < N; ++j) {
      double want = 0;
      for (size_t k = 0; k < K; ++k) want += double{x[t * K + k]} * w[j * K + k];
      EXPECT_NEAR(all[t * N + j], want, 1e-4);
    }
    // The same row alone: bit-identical.
    std::vector<float> alone(N);
    kernels::linearRowInvariant(w, N, K, std::span<const float>(x).subspan(t * K, K), 1, alone);
    for (size_t j = 0; j < N; ++j) EXPECT_EQ(alone[j], all[t * N + j]) << "row " << t;
  }
}

}  // namespace
}  // namespace moe::router

namespace moe::router {
namespace {

// Replica choice: power of two choices on in-flight rows × latency, usable replicas only.
TEST(ShardHealthChoice, SpreadsOverEqualReplicasAndAvoidsTheLoadedAndTheDown) {
  ShardHealth h(3);
  for (uint32_t s = 0; s < 3; ++s) h.markUp(s);
  const uint32_t holders[] = {0, 1, 2};
  std::vector<int> picks(3, 0);
  for (int i = 0; i < 300; ++i) ++picks[h.choose(holders)];
  for (int p : picks) EXPECT_GT(p, 30) << "an idle replica was never chosen";
  h.callStarted(1, 10000);  // shard 1 is busy: never chosen over an idle one
  for (int i = 0; i < 100; ++i) EXPECT_NE(h.choose(holders), 1u);
  h.markDown(0, "connection lost");
  for (int i = 0; i < 50; ++i) EXPECT_EQ(h.choose(holders), 2u);
  EXPECT_EQ(h.choose(holders, /*exclude=*/2), 1u);  // the only usable one left
  h.markDraining(1);
  EXPECT_EQ(h.choose(holders, 2), ShardHealth::kNone);
}

TEST(ShardHealthChoice, ASlowReplicaGetsLessWork) {
  ShardHealth h(2);
  h.markUp(0);
  h.markUp(1);
  h.callStarted(0, 8);
  h.callEnded(0, 8, 0.002);
  h.callStarted(1, 8);
  h.callEnded(1, 8, 0.200);  // 100× slower
  const uint32_t holders[] = {0, 1};
  int slow = 0;
  for (int i = 0; i < 100; ++i) slow += h.choose(holders) == 1;
  EXPECT_EQ(slow, 0);
}

TEST(ShardHealthChoice, ProbesBackOffExponentiallyUpToOneSecond) {
  ShardHealth h(1);
  h.markDown(0, "refused");
  const auto t0 = ShardHealth::Clock::now();
  EXPECT_TRUE(h.probeDue(0, t0));  // at once after going down
  auto t = t0;
  for (int i = 0; i < 10; ++i) h.probeFailed(0, t);
  EXPECT_FALSE(h.probeDue(0, t + std::chrono::milliseconds(900)));
  EXPECT_TRUE(h.probeDue(0, t + std::chrono::milliseconds(1000)));
}

}  // namespace
}  // namespace moe::router
