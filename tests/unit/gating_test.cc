// Unit tests for router_service/gating: routeTokens with a linear gate on the reference backend
// (the router's softmax top-k fast path) — a hand-computed case, the tie rule (lower expert id
// first), renormalisation, and error prefixes.
#include "router_service/gating.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "router_service/gate_network.h"
#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

using unit::contains;

class Gating : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = kernels::createBackend(kernels::BackendKind::kReference);
    ASSERT_TRUE(b.isOk()) << b.error();
    backend_ = std::move(b).value();
  }

  // A linear gate over Wg [E, H] row-major.
  std::unique_ptr<GateNetwork> gate(std::vector<float> w, size_t E, size_t H) {
    return GateNetwork::linear(std::move(w), static_cast<uint32_t>(E), static_cast<uint32_t>(H));
  }

  // Softmax top-k routing of T tokens, renormalized or not, as the router runs it.
  Result<RoutingDecision> route(const GateNetwork& g, std::span<const float> x, uint32_t T,
                                uint32_t k, bool renormalize) {
    ModelConfig m;
    m.numExperts = m.numFfnExperts = g.numExperts();
    m.topK = k;
    m.routing = softmaxTopkRecipe(renormalize);
    auto r = routeTokens(*backend_, g, x, T, m, {}, {});
    if (!r) return makeError(r.status());
    return std::move(r.value().decision);
  }

  std::unique_ptr<kernels::Backend> backend_;
};

TEST_F(Gating, HandComputedCase) {
  // H = 2, E = 3: e0 = [1, 0], e1 = [0, 1], e2 = [1, 1].
  auto g = gate({1, 0, 0, 1, 1, 1}, 3, 2);
  ASSERT_NE(g, nullptr);
  // t0 = [1, 2] → logits [1, 2, 3]; t1 = [3, -1] → logits [3, -1, 2].
  const std::vector<float> x = {1, 2, 3, -1};

  auto r = route(*g, x, 2, 2, /*renormalize=*/true);
  ASSERT_TRUE(r.isOk()) << r.error();
  const RoutingDecision& d = r.value();
  EXPECT_EQ(d.tokens, 2u);
  EXPECT_EQ(d.k, 2u);
  EXPECT_EQ(d.ids, (std::vector<uint32_t>{2, 1, 0, 2}));
  ASSERT_EQ(d.weights.size(), 4u);
  // Renormalised over the two chosen: e^a / (e^a + e^b) = 1 / (1 + e^(b - a)).
  const double hi = 1.0 / (1.0 + std::exp(-1.0));  // 0.7310585786
  EXPECT_NEAR(d.weights[0], hi, 1e-6);
  EXPECT_NEAR(d.weights[1], 1.0 - hi, 1e-6);
  EXPECT_NEAR(d.weights[2], hi, 1e-6);
  EXPECT_NEAR(d.weights[3], 1.0 - hi, 1e-6);

  auto raw = route(*g, x, 2, 2, /*renormalize=*/false);
  ASSERT_TRUE(raw.isOk()) << raw.error();
  EXPECT_EQ(raw.value().ids, d.ids);
  const double z0 = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(raw.value().weights[0], std::exp(3.0) / z0, 1e-6);  // 0.6652409558
  EXPECT_NEAR(raw.value().weights[1], std::exp(2.0) / z0, 1e-6);  // 0.2447284711
  const double z1 = std::exp(3.0) + std::exp(-1.0) + std::exp(2.0);
  EXPECT_NEAR(raw.value().weights[2], std::exp(3.0) / z1, 1e-6);
  EXPECT_NEAR(raw.value().weights[3], std::exp(2.0) / z1, 1e-6);
}

TEST_F(Gating, TiesGoToTheLowerExpertId) {
  // H = 1, E = 5, gate column [0, 2, 2, 0, 2]: for x = 1 the logits are [0, 2, 2, 0, 2].
  auto g = gate({0, 2, 2, 0, 2}, 5, 1);
  ASSERT_NE(g, nullptr);
  const std::vector<float> x = {1};
  auto r2 = route(*g, x, 1, 2, true);
  ASSERT_TRUE(r2.isOk()) << r2.error();
  EXPECT_EQ(r2.value().ids, (std::vector<uint32_t>{1, 2}));
  EXPECT_FLOAT_EQ(r2.value().weights[0], 0.5f);
  EXPECT_FLOAT_EQ(r2.value().weights[1], 0.5f);

  auto r4 = route(*g, x, 1, 4, true);
  ASSERT_TRUE(r4.isOk()) << r4.error();
  EXPECT_EQ(r4.value().ids, (std::vector<uint32_t>{1, 2, 4, 0}));

  // All equal (x = 0): the first k ids in order, uniform weights.
  const std::vector<float> zero = {0};
  auto r3 = route(*g, zero, 1, 3, false);
  ASSERT_TRUE(r3.isOk()) << r3.error();
  EXPECT_EQ(r3.value().ids, (std::vector<uint32_t>{0, 1, 2}));
  for (float w : r3.value().weights) EXPECT_FLOAT_EQ(w, 0.2f);
}

TEST_F(Gating, RenormalisedWeightsSumToOneAndDescend) {
  constexpr size_t E = 8, H = 4, T = 16;
  std::vector<float> w(E * H), x(T * H);
  // Deterministic, irregular values.
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i) * 1.7f) * 0.8f;
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(float(i) * 0.37f) * 1.3f;
  auto g = gate(w, E, H);
  ASSERT_NE(g, nullptr);
  for (uint32_t k : {1u, 2u, 3u, 8u}) {
    SCOPED_TRACE(k);
    auto r = route(*g, x, T, k, true);
    ASSERT_TRUE(r.isOk()) << r.error();
    ASSERT_EQ(r.value().ids.size(), T * k);
    ASSERT_EQ(r.value().weights.size(), T * k);
    for (size_t t = 0; t < T; ++t) {
      double sum = 0;
      std::vector<bool> seen(E, false);
      for (size_t j = 0; j < k; ++j) {
        const float wj = r.value().weights[t * k + j];
        const uint32_t id = r.value().ids[t * k + j];
        ASSERT_LT(id, E);
        EXPECT_FALSE(seen[id]) << "expert " << id << " chosen twice for token " << t;
        seen[id] = true;
        EXPECT_GT(wj, 0.f);
        if (j > 0) {
          EXPECT_LE(wj, r.value().weights[t * k + j - 1]);
        }
        sum += wj;
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << "token " << t;
    }
  }
  // Without renormalisation, k = 1 weights are the plain softmax maximum (< 1 here).
  auto raw = route(*g, x, T, 1, false);
  ASSERT_TRUE(raw.isOk()) << raw.error();
  for (float wt : raw.value().weights) EXPECT_LT(wt, 1.f);
}

TEST_F(Gating, ZeroTokens) {
  auto g = gate({1, 0, 0, 1}, 2, 2);
  ASSERT_NE(g, nullptr);
  auto r = route(*g, {}, 0, 1, true);
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_EQ(r.value().tokens, 0u);
  EXPECT_TRUE(r.value().ids.empty());
  EXPECT_TRUE(r.value().weights.empty());
}

TEST_F(Gating, ErrorsArePrefixedWithTheStep) {
  auto g = gate({1, 0, 0, 1, 1, 1}, 3, 2);
  ASSERT_NE(g, nullptr);
  const std::vector<float> x = {1, 2, 3};  // not T × H
  auto bad = route(*g, x, 2, 2, true);
  ASSERT_FALSE(bad.isOk());
  EXPECT_TRUE(contains(bad.error(), "gate: "));
  EXPECT_TRUE(contains(bad.error(), "x has 3 elements, expected 4"));

  const std::vector<float> ok = {1, 2};
  auto bigK = route(*g, ok, 1, 4, true);
  ASSERT_FALSE(bigK.isOk());
  EXPECT_TRUE(contains(bigK.error(), "softmax_topk: "));
  EXPECT_TRUE(contains(bigK.error(), "k = 4 must be in [1, E = 3]"));
}

}  // namespace
}  // namespace moe::router
