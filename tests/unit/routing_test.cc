// Routing rules (router_service/routing.h): hand-computed DeepSeek cases, and the router's rule
// against the op-by-op reference routing (client/reference/reference_routing.h) on random logits.
#include "router_service/routing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "client/reference/reference_experts.h"
#include "client/reference/reference_routing.h"
#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

enum class Deepseek { kV2, kV3 };

// A DeepSeek routing config as config.json with these values implies (the family table's pieces).
ModelConfig deepseek(Deepseek f, uint32_t E, uint32_t k, uint32_t groups, uint32_t keep) {
  ModelConfig m;
  m.modelType = f == Deepseek::kV3 ? "deepseek_v3" : "deepseek_v2";
  m.numExperts = m.numFfnExperts = E;
  m.topK = k;
  m.routing = f == Deepseek::kV3
                  ? deepseekV3Recipe(/*sigmoid=*/true, /*normTopkProb=*/true, 2.5f, groups, keep)
                  : deepseekV2Recipe(16.0f, groups > 1, groups, keep);
  return m;
}

float sigmoid(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}

TEST(Routing, DeepseekV3KeepsTheBestGroupByTopTwoSum) {
  // Group 0 = {0, 1}, group 1 = {2, 3}. Expert 0 alone is the best, but group 1's two experts
  // sum higher, so both picks come from group 1.
  auto m = deepseek(Deepseek::kV3, 4, 2, 2, 1);
  const std::vector<float> logits = {3.0f, -3.0f, 1.5f, 1.0f};
  auto d = routeLogits(logits, 1, 4, routingRuleFor(m), {});
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{2, 3}));
  const float a = sigmoid(1.5f), b = sigmoid(1.0f);
  EXPECT_NEAR(d.weights[0], a / (a + b + 1e-20f) * 2.5f, 1e-6);
  EXPECT_NEAR(d.weights[1], b / (a + b + 1e-20f) * 2.5f, 1e-6);
}

TEST(Routing, DeepseekV3BiasChoosesButWeightsStayUnbiased) {
  auto m = deepseek(Deepseek::kV3, 4, 1, 1, 1);
  m.routing.normalize = RoutingRecipe::Normalize::kNone;
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, 0.0f};
  const std::vector<float> bias = {0.0f, 0.5f, 0.0f, 0.0f};  // lifts expert 1 above expert 0
  auto d = routeLogits(logits, 1, 4, routingRuleFor(m), bias);
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{1}));
  EXPECT_NEAR(d.weights[0], sigmoid(0.5f) * 2.5f, 1e-6);  // σ of the logit, no bias
}

TEST(Routing, MaskedExpertsScoreMinusInfinityAsInTransformers) {
  // A negative bias pushes every biased score of the kept group below 0; transformers 5's
  // DeepseekV3TopkRouter masks the other group with -inf (deepseek-ai's original code used 0.0,
  // which would let a masked expert win the second pick), so both picks stay in the kept group.
  auto m = deepseek(Deepseek::kV3, 4, 2, 2, 1);
  const std::vector<float> logits = {4.0f, 4.0f, -4.0f, -4.0f};
  const std::vector<float> bias = {-2.0f, -2.0f, 0.0f, -2.0f};
  // Biased: {-1.018, -1.018, 0.018, -1.982}; group sums: g0 = -2.036, g1 = -1.964 → keep g1.
  // Masked choice: {-inf, -inf, 0.018, -1.982} → picks 2, then 3.
  auto d = routeLogits(logits, 1, 4, routingRuleFor(m), bias);
  EXPECT_EQ(d.ids, (std::vector<uint32_t>{2, 3}));
  // DeepSeek-V2's group_limited_greedy masks with 0.0 (DeepseekV2Moe.masked_fill(..., 0.0)).
  EXPECT_EQ(deepseek(Deepseek::kV2, 4, 2, 2, 1).routing.groupMask, 0.0f);
}

TEST(Routing, DeepseekV2ScalesAndNeverRenormalizes) {
  auto m = deepseek(Deepseek::kV2, 4, 2, 1, 1);
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.0f};
  auto d = routeLogits(logits, 1, 4, routingRuleFor(m), {});
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{2, 1}));
  const float z = 1 + std::exp(1.0f) + std::exp(2.0f) + 1;
  EXPECT_NEAR(d.weights[0], std::exp(2.0f) / z * 16.0f, 1e-5);
  EXPECT_NEAR(d.weights[1], std::exp(1.0f) / z * 16.0f, 1e-5);
  // transformers 5's DeepseekV2TopkRouter does not read norm_topk_prob: true changes nothing.
  auto parsed = parseModelConfig(R"({"model_type": "deepseek_v2", "hidden_size": 8,
      "moe_intermediate_size": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
      "num_hidden_layers": 1, "norm_topk_prob": true, "routed_scaling_factor": 16.0})",
                                 "config.json");
  ASSERT_TRUE(parsed.isOk()) << parsed.error();
  auto again = routeLogits(logits, 1, 4, routingRuleFor(parsed.value()), {});
  EXPECT_EQ(again.weights, d.weights);
}

TEST(Routing, MatchesTheReferenceRoutingOnRandomLogits) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  struct Case {
    Deepseek family;
    uint32_t E, k, groups, keep;
  };
  for (const Case& c : {Case{Deepseek::kV3, 16, 4, 4, 2}, Case{Deepseek::kV3, 8, 8, 2, 2},
                        Case{Deepseek::kV3, 12, 1, 3, 1}, Case{Deepseek::kV2, 16, 3, 4, 2},
                        Case{Deepseek::kV2, 6, 2, 1, 1}}) {
    SCOPED_TRACE(std::to_string(c.E) + " experts, k " + std::to_string(c.k));
    auto m = deepseek(c.family, c.E, c.k, c.groups, c.keep);
    const size_t T = 300;
    std::vector<float> logits(T * c.E), bias(c.E);
    for (auto& v : logits) v = normal(rng);
    // Quantized values make exact ties common, so the tie rule is exercised too.
    for (size_t i = 0; i < logits.size(); i += 7) logits[i] = std::round(logits[i]);
    for (auto& v : bias) v = 0.1f * normal(rng);
    std::span<const float> b;
    if (c.family == Deepseek::kV3) b = bias;
    auto d = routeLogits(logits, T, c.E, routingRuleFor(m), b);
    std::vector<uint32_t> ids;
    std::vector<float> weights;
    client::referenceRoute(m, logits, T, b, ids, weights);
    ASSERT_EQ(d.ids, ids);
    for (size_t i = 0; i < weights.size(); ++i)
      EXPECT_NEAR(d.weights[i], weights[i], 1e-5f * std::fabs(weights[i]) + 1e-7f);
  }
}

// LongCat-Flash (LongcatFlashTopkRouter): softmax over the 2 FFN + 1 identity experts, top-k of
// p + bias, weights p gathered, no renormalization, × routed_scaling_factor; the identity expert
// (id 2) adds weight · x on the reference side, with x unscaled.
TEST(Routing, LongcatFlashSoftmaxOverIdentityExpertsUnnormalizedAndScaled) {
  auto parsed = parseModelConfig(R"({"model_type": "longcat_flash", "hidden_size": 2,
      "expert_ffn_hidden_size": 4, "n_routed_experts": 2, "zero_expert_num": 1, "moe_topk": 2,
      "num_layers": 1, "routed_scaling_factor": 1.5})",
                                 "config.json");
  ASSERT_TRUE(parsed.isOk()) << parsed.error();
  const ModelConfig& m = parsed.value();
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f};
  const std::vector<float> bias = {0.0f, -1.0f, 0.0f};  // drops expert 1 below the identity
  auto d = routeLogits(logits, 1, 3, routingRuleFor(m), bias);
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{0, 2}));
  const float z = std::exp(2.0f) + std::exp(1.0f) + std::exp(0.5f);
  EXPECT_NEAR(d.weights[0], std::exp(2.0f) / z * 1.5f, 1e-6);
  EXPECT_NEAR(d.weights[1], std::exp(0.5f) / z * 1.5f, 1e-6);
  std::vector<uint32_t> ids;
  std::vector<float> weights;
  client::referenceRoute(m, logits, 1, bias, ids, weights);
  EXPECT_EQ(ids, d.ids);
  EXPECT_NEAR(weights[0], d.weights[0], 1e-7);
  EXPECT_NEAR(weights[1], d.weights[1], 1e-7);
  // The identity expert on the reference side: y += w · x (FFN experts are added elsewhere).
  client::ReferenceRouting r;
  r.k = 2;
  r.ids = ids;
  r.weights = weights;
  r.dropped.assign(2, 0);
  const std::vector<float> x = {3.0f, -4.0f};
  std::vector<float> y(2, 0.0f);
  client::addZeroComputeExperts(m, {}, x, 1, r, y);
  EXPECT_FLOAT_EQ(y[0], weights[1] * 3.0f);
  EXPECT_FLOAT_EQ(y[1], weights[1] * -4.0f);
  // Random logits: the router's rule and the reference agree.
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const size_t T = 200;
  std::vector<float> many(T * 3);
  for (float& v : many) v = normal(rng);
  auto all = routeLogits(many, T, 3, routingRuleFor(m), bias);
  client::referenceRoute(m, many, T, bias, ids, weights);
  ASSERT_EQ(all.ids, ids);
  for (size_t i = 0; i < weights.size(); ++i) EXPECT_NEAR(all.weights[i], weights[i], 1e-6);
}

const auto moePlusPlus = unit::moePlusPlusConfig;

TEST(Routing, MoePlusPlusZeroExpertGetsNoWeightAndTheOtherTakesAll) {
  // E = 6: FFN 0, 1; constant 2, 3; copy 4; zero 5. Token 0 picks {5, 0}; token 1 picks {0, 1}.
  auto m = moePlusPlus(6);
  const std::vector<float> logits = {1.0f, -1.0f, -2.0f, -2.0f, -2.0f, 2.0f,
                                     1.0f, 0.5f,  -2.0f, -2.0f, -2.0f, -2.0f};
  auto d = routeLogits(logits, 2, 6, routingRuleFor(m), {});
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{5, 0, 0, 1}));
  EXPECT_FLOAT_EQ(d.weights[0], 0.0f);
  EXPECT_FLOAT_EQ(d.weights[1], 1.0f);
  const float a = std::exp(1.0f), b = std::exp(0.5f);
  EXPECT_NEAR(d.weights[2], a / (a + b), 1e-6);
  EXPECT_NEAR(d.weights[3], b / (a + b), 1e-6);
}

TEST(Routing, MoePlusPlusMixtralGatingKeepsTheZeroExpertsWeight) {
  auto m = moePlusPlus(6);
  m.moeMixtralGating = true;
  m.routing = moePlusPlusRecipe(m);
  const std::vector<float> logits = {1.0f, -1.0f, -2.0f, -2.0f, -2.0f, 2.0f};
  auto d = routeLogits(logits, 1, 6, routingRuleFor(m), {});
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{5, 0}));
  const float a = std::exp(2.0f), b = std::exp(1.0f);
  EXPECT_NEAR(d.weights[0], a / (a + b), 1e-6);  // softmax over the top-2 logits
  EXPECT_NEAR(d.weights[1], b / (a + b), 1e-6);
}

TEST(Routing, MoePlusPlusLogitsNormDividesByTheUnbiasedStd) {
  auto m = moePlusPlus(6);
  m.moeMixtralGating = true;
  m.moeLogitsNorm = true;
  m.moeGateNormStd = 2.0f;
  m.routing = moePlusPlusRecipe(m);
  const std::vector<float> logits = {3.0f, 1.0f, 0.0f, 0.0f, 0.0f, 2.0f};  // mean 1, Σd² = 8
  const float stdev = std::sqrt(8.0f / 5.0f);
  auto d = routeLogits(logits, 1, 6, routingRuleFor(m), {});
  ASSERT_EQ(d.ids, (std::vector<uint32_t>{0, 5}));
  const float a = std::exp(3.0f * 2.0f / stdev), b = std::exp(2.0f * 2.0f / stdev);
  EXPECT_NEAR(d.weights[0], a / (a + b), 1e-6);
}

TEST(Routing, OnlyThePlainSoftmaxRuleTakesTheBackendFastPath) {
  ModelConfig mixtral;
  mixtral.numExperts = 8;
  mixtral.numFfnExperts = 8;
  mixtral.topK = 2;
  EXPECT_TRUE(routingRuleFor(mixtral).isPlainSoftmaxTopk());
  EXPECT_FALSE(routingRuleFor(moePlusPlus(8)).isPlainSoftmaxTopk());
  EXPECT_FALSE(routingRuleFor(deepseek(Deepseek::kV3, 8, 2, 2, 1)).isPlainSoftmaxTopk());
}

}  // namespace
}  // namespace moe::router
