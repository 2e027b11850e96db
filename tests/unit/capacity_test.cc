// Unit tests for router_service/capacity: the cap formula, which assignments are dropped (lowest
// weight first, later token on ties), FFN experts only, and renormalization on and off.
#include "router_service/capacity.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

using unit::decision;

RoutingOptions capacity(double factor, bool renormalize = false) {
  RoutingOptions o;
  o.capacityFactor = factor;
  o.capacityRenormalize = renormalize;
  return o;
}

TEST(Capacity, FormulaIsCeilOfFactorTimesTokensTimesKOverExperts) {
  EXPECT_EQ(expertCapacity(capacity(1.0), 10, 2, 8), 3u);   // ceil(2.5)
  EXPECT_EQ(expertCapacity(capacity(1.25), 16, 2, 8), 5u);  // exactly 5
  EXPECT_EQ(expertCapacity(capacity(0.01), 1, 1, 64), 1u);  // never below one
  EXPECT_EQ(expertCapacity(capacity(0.0), 1000, 2, 8), UINT32_MAX);
}

TEST(Capacity, DropsTheLowestWeightsAndTheLaterTokenOnTies) {
  // k = 1, E = 2, T = 4, factor 1 → cap = 2. All four tokens chose expert 0.
  auto d = decision(4, 1, {0, 0, 0, 0}, {0.5f, 0.9f, 0.5f, 0.7f});
  EXPECT_EQ(applyCapacity(d, capacity(1.0), 2, 2), 2u);
  // Kept: token 1 (0.9) and token 3 (0.7). Tokens 0 and 2 tie at 0.5; both are below the cap.
  EXPECT_EQ(d.dropped, (std::vector<uint8_t>{1, 0, 1, 0}));
  EXPECT_EQ(d.weights, (std::vector<float>{0.0f, 0.9f, 0.0f, 0.7f}));

  // A tie at the boundary: the earlier token keeps its place.
  auto tie = decision(3, 1, {1, 1, 1}, {0.4f, 0.4f, 0.9f});
  EXPECT_EQ(applyCapacity(tie, capacity(1.0), 2, 2), 1u);  // cap = ceil(1.5) = 2
  EXPECT_EQ(tie.dropped, (std::vector<uint8_t>{0, 1, 0}));
}

TEST(Capacity, NothingDroppedLeavesTheDecisionUntouched) {
  auto d = decision(2, 2, {0, 1, 1, 0}, {0.6f, 0.4f, 0.7f, 0.3f});
  EXPECT_EQ(applyCapacity(d, capacity(1.0), 2, 2), 0u);
  EXPECT_TRUE(d.dropped.empty());
  EXPECT_EQ(d.weights, (std::vector<float>{0.6f, 0.4f, 0.7f, 0.3f}));
}

TEST(Capacity, RenormalizesKeptWeightsOnlyWhenConfigured) {
  // k = 2, E = 4, T = 2, factor 1 → cap = 1. Both tokens want expert 0; token 1 loses it.
  auto base = decision(2, 2, {0, 1, 0, 2}, {0.6f, 0.4f, 0.5f, 0.5f});
  auto plain = base;
  EXPECT_EQ(applyCapacity(plain, capacity(1.0, false), 4, 4), 1u);
  EXPECT_EQ(plain.weights, (std::vector<float>{0.6f, 0.4f, 0.0f, 0.5f}));
  auto renorm = base;
  EXPECT_EQ(applyCapacity(renorm, capacity(1.0, true), 4, 4), 1u);
  EXPECT_FLOAT_EQ(renorm.weights[0], 0.6f);  // token 0 lost nothing
  EXPECT_FLOAT_EQ(renorm.weights[2], 0.0f);
  EXPECT_FLOAT_EQ(renorm.weights[3], 1.0f);  // back to the token's pre-drop sum
}

TEST(Capacity, ZeroComputeExpertsAreNeverCapped) {
  // MoE++-like: 2 FFN experts (0, 1) and zero-computation ids 2, 3. Cap = 1.
  auto d = decision(4, 1, {3, 3, 3, 3}, {1.0f, 1.0f, 1.0f, 1.0f});
  EXPECT_EQ(applyCapacity(d, capacity(1.0), 4, 2), 0u);
  EXPECT_TRUE(d.dropped.empty());
}

}  // namespace
}  // namespace moe::router
