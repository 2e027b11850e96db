// Routing rules (router_service/routing.h): hand-computed DeepSeek and PhiMoE sparsemixer cases,
// and the router's rule against the op-by-op reference routing
// (client/reference/reference_routing.h) on random logits.
#include "router_service/routing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>

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

// A PhiMoE config.json (PhimoeConfig keys) read through the family table.
Result<ModelConfig> phimoeConfig(uint32_t E, const std::string& extra) {
  return parseModelConfig(R"({"model_type": "phimoe", "hidden_size": 8, "intermediate_size": 4,
      "num_local_experts": )" +
                              std::to_string(E) + R"(, "num_hidden_layers": 1)" + extra + "}",
                          "config.json");
}

ModelConfig phimoe(uint32_t E, float eps) {
  auto m = phimoeConfig(
      E, R"(, "num_experts_per_tok": 2, "router_jitter_noise": )" + std::to_string(eps));
  EXPECT_TRUE(m.isOk()) << m.error();
  return m.isOk() ? m.value() : ModelConfig{};
}

// sparsemixer's two picks by hand: which logits survive each pick's mask (the gap to the pick's
// logit m relative to max(|s_e|, m) at most 2·eps; the first pick is never a candidate of the
// second), so each weight is exp(s_pick) / Σ_kept exp(s_e).
struct SparseMixerCase {
  const char* what;
  float eps;
  std::vector<float> logits;
  uint32_t first, second;
  std::vector<uint32_t> keptFirst, keptSecond;  // the logits in each pick's softmax
};

float maskedSoftmaxAt(const std::vector<float>& s, const std::vector<uint32_t>& kept, uint32_t at) {
  double sum = 0;
  for (uint32_t e : kept) sum += std::exp(double{s[e]});
  return static_cast<float>(std::exp(double{s[at]}) / sum);
}

TEST(Routing, SparseMixerMasksByTheRelativeGapAsPhimoeDoes) {
  const std::vector<float> s = {2.0f, 1.0f, 0.5f, -1.0f};
  const std::vector<SparseMixerCase> cases = {
      // Gaps to 2: 1/2, 1.5/2, 3/2 (factor clamped at 2); to 1: 0.5/1, 2/1.
      {"eps 0.3 keeps gaps up to 0.6", 0.3f, s, 0, 1, {0, 1}, {1, 2}},
      {"eps 0.01 keeps only the pick", 0.01f, s, 0, 1, {0}, {1}},
      {"eps 0.5 keeps gaps up to 1", 0.5f, s, 0, 1, {0, 1, 2}, {1, 2}},
      {"eps 1.5 keeps all", 1.5f, s, 0, 1, {0, 1, 2, 3}, {1, 2, 3}},
      // 1.5 is 0.5 below 2: 0.5 / max(1.5, 2) = 0.25 <= 0.3 keeps it (unclamped 0.33 would not).
      {"the factor is clamped at the max", 0.15f, {2.0f, 1.5f, -3.0f, 0.0f}, 0, 1, {0, 1}, {1}},
      // A negative max: the factor is |s_e|. Gaps to -1: 1/2, 3/4, 0.5/1.5; to -1.5: 0.5/2, 2.5/4.
      {"negative logits", 0.3f, {-1.0f, -2.0f, -4.0f, -1.5f}, 0, 3, {0, 1, 3}, {3, 1}},
      // Equal logits: the lower id first, the other second; each is the other's gap 0.
      {"a tie goes to the lower id", 0.3f, {1.0f, 3.0f, 3.0f, 0.0f}, 1, 2, {1, 2}, {2}},
      // max 0: 0 / max(|0|, 0) is NaN, not > 2·eps, so the other 0 stays in.
      {"a zero max keeps the other zero", 0.3f, {0.0f, 0.0f, -1.0f, -5.0f}, 0, 1, {0, 1}, {1}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto E = static_cast<uint32_t>(c.logits.size());
    const ModelConfig m = phimoe(E, c.eps);
    auto d = routeLogits(c.logits, 1, E, routingRuleFor(m), {});
    std::vector<uint32_t> refIds;
    std::vector<float> refWeights;
    client::referenceRoute(m, c.logits, 1, {}, refIds, refWeights);
    for (const auto& [ids, weights] :
         {std::pair{d.ids, d.weights}, std::pair{refIds, refWeights}}) {
      ASSERT_EQ(ids, (std::vector<uint32_t>{c.first, c.second}));
      EXPECT_NEAR(weights[0], maskedSoftmaxAt(c.logits, c.keptFirst, c.first), 1e-6f);
      EXPECT_NEAR(weights[1], maskedSoftmaxAt(c.logits, c.keptSecond, c.second), 1e-6f);
    }
  }
}

TEST(Routing, SparseMixerMatchesTheReferenceOnRandomLogits) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  for (uint32_t E : {2u, 8u, 16u}) {
    for (float eps : {0.0f, 0.01f, 0.3f, 1.0f}) {
      SCOPED_TRACE(std::to_string(E) + " experts, eps " + std::to_string(eps));
      const ModelConfig m = phimoe(E, eps);
      const size_t T = 400;
      std::vector<float> logits(T * E);
      for (auto& v : logits) v = normal(rng);
      // Quantized values make exact ties (and exact zero maxima) common.
      for (size_t i = 0; i < logits.size(); i += 3) logits[i] = std::round(logits[i]);
      auto d = routeLogits(logits, T, E, routingRuleFor(m), {});
      std::vector<uint32_t> ids;
      std::vector<float> weights;
      client::referenceRoute(m, logits, T, {}, ids, weights);
      ASSERT_EQ(d.ids, ids);
      uint32_t partial = 0;  // first picks whose softmax kept another logit
      for (size_t i = 0; i < weights.size(); ++i) {
        EXPECT_NEAR(d.weights[i], weights[i], 1e-6f * weights[i]) << "slot " << i;
        EXPECT_GT(weights[i], 0.0f);
        EXPECT_LE(weights[i], 1.0f);
        if (i % 2 == 0 && weights[i] < 1.0f) ++partial;
      }
      if (eps >= 0.3f) {
        EXPECT_GT(partial, T / 10) << "the mask keeps others in some softmaxes";
      } else if (eps == 0.0f) {
        EXPECT_LT(partial, T / 10) << "eps 0 keeps only ties";
      }
    }
  }
}

TEST(Routing, SparseMixerConfigIsTopTwoWithAJitterThreshold) {
  const ModelConfig m = phimoe(8, 0.3f);
  EXPECT_EQ(m.familyName, "PhiMoE");
  EXPECT_EQ(m.routing.scoring, RoutingRecipe::Scoring::kSparseMixer);
  EXPECT_EQ(m.routing.jitterEps, 0.3f);
  EXPECT_EQ(m.routing.describe().rfind("sparsemixer (jitter eps 0.3), top-2", 0), 0u)
      << m.routing.describe();
  EXPECT_FALSE(routingRuleFor(m).isPlainSoftmaxTopk());
  auto fallback = phimoeConfig(8, R"(, "num_experts_per_tok": 2)");
  ASSERT_TRUE(fallback.isOk()) << fallback.error();
  EXPECT_EQ(fallback.value().routing.jitterEps, 0.01f);  // PhimoeConfig.router_jitter_noise
  struct Bad {
    std::string extra, key;
  };
  for (const Bad& b :
       {Bad{R"(, "num_experts_per_tok": 1)", "num_experts_per_tok"},
        Bad{R"(, "num_experts_per_tok": 4)", "num_experts_per_tok"},
        Bad{R"(, "num_experts_per_tok": 2, "router_jitter_noise": -0.1)", "router_jitter_noise"},
        Bad{R"(, "num_experts_per_tok": 2, "router_jitter_noise": "0.3")", "router_jitter_noise"},
        Bad{"", "num_experts_per_tok"}}) {
    SCOPED_TRACE(b.extra);
    auto r = phimoeConfig(8, b.extra);
    ASSERT_FALSE(r.isOk());
    EXPECT_NE(r.error().find("'" + b.key + "'"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("PhiMoE"), std::string::npos) << r.error();
  }
}

// ---- LFM2-MoE, AFMoE, HY-V3, Cohere2-MoE (issue #13): recipes read through the family table ----

// A minimal config.json of `type` with 4 experts, top-2, plus `extra` keys (JSON members).
ModelConfig parsed(const std::string& type, const std::string& extra) {
  const std::string text = R"({"model_type": ")" + type + R"(", "hidden_size": 8,
      "intermediate_size": 4, "moe_intermediate_size": 4, "num_experts": 4,
      "num_experts_per_tok": 2, "num_hidden_layers": 3, "num_dense_layers": 0)" +
                           (extra.empty() ? "" : ", " + extra) + "}";
  auto c = parseModelConfig(text, "config.json");
  EXPECT_TRUE(c.isOk()) << c.error();
  return c.isOk() ? c.value() : ModelConfig{};
}

struct RecipeCase {
  std::string name, type, extra;
  std::vector<uint32_t> ids;  // chosen for kLogits / kBias below, in selection order
  // The expected weights from the chosen experts' logits (a, b) and their sigmoids (sa, sb).
  std::function<std::vector<float>(float a, float b, float sa, float sb)> weights;
};

TEST(Routing, SigmoidAndTopLogitsFamiliesFollowTheirModelingCode) {
  // Logits 1, 0.5, 0, -1 (sigmoid .731 .622 .5 .269); the bias lifts expert 1 above expert 0 and
  // expert 3 above expert 2 when choosing: biased choice picks {1, 0}, the plain one {0, 1}.
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -1.0f};
  const std::vector<float> bias = {0.0f, 0.6f, 0.0f, 0.3f};
  const float s1 = sigmoid(1.0f), s05 = sigmoid(0.5f);
  using W = std::vector<float>;
  const std::vector<RecipeCase> cases = {
      // Lfm2MoeTopKRouter: σ, + expert_bias for choice, / (Σ + 1e-6), × routed_scaling_factor.
      {"lfm2 bias renorm scaled",
       "lfm2_moe",
       R"("routed_scaling_factor": 1.5)",
       {1, 0},
       [](float, float, float sa, float sb) {
         return W{sa / (sa + sb + 1e-6f) * 1.5f, sb / (sa + sb + 1e-6f) * 1.5f};
       }},
      {"lfm2 no bias, no renorm",
       "lfm2_moe",
       R"("use_expert_bias": false, "norm_topk_prob": false, "routed_scaling_factor": 2.0)",
       {0, 1},
       [](float, float, float sa, float sb) {
         return W{sa * 2.0f, sb * 2.0f};
       }},
      // AfmoeTokenChoiceRouter: σ, + expert_bias, / (Σ + 1e-20) × route_scale.
      {"afmoe",
       "afmoe",
       R"("route_scale": 1.25, "score_func": "sigmoid", "route_norm": true)",
       {1, 0},
       [](float, float, float sa, float sb) {
         return W{sa / (sa + sb + 1e-20f) * 1.25f, sb / (sa + sb + 1e-20f) * 1.25f};
       }},
      // HYV3TopKRouter: the same with router_scaling_factor (HYV3Config default 2.826).
      {"hy_v3 default scale",
       "hy_v3",
       "",
       {1, 0},
       [](float, float, float sa, float sb) {
         return W{sa / (sa + sb + 1e-20f) * 2.826f, sb / (sa + sb + 1e-20f) * 2.826f};
       }},
      // Cohere2MoeTopKRouter: top-k of the logits (no bias), softmax over the k ...
      {"cohere2 softmax",
       "cohere2_moe",
       "",
       {0, 1},
       [](float a, float b, float, float) {
         return W{1.0f / (1.0f + std::exp(b - a)), std::exp(b - a) / (1.0f + std::exp(b - a))};
       }},
      // ... or σ of them, / Σ (no eps) iff norm_topk_prob.
      {"cohere2 sigmoid renorm",
       "cohere2_moe",
       R"("expert_selection_fn": "sigmoid")",
       {0, 1},
       [](float, float, float sa, float sb) {
         return W{sa / (sa + sb), sb / (sa + sb)};
       }},
      {"cohere2 sigmoid",
       "cohere2_moe",
       R"("expert_selection_fn": "sigmoid", "norm_topk_prob": false)",
       {0, 1},
       [](float, float, float sa, float sb) {
         return W{sa, sb};
       }},
      // LagunaTopKRouter: σ(tanh(s / c) · c), + bias for choice, / Σ (no eps), × the routed
      // output's moe_routed_scaling_factor.
      {"laguna softcapped",
       "laguna",
       R"("moe_router_logit_softcapping": 0.75, "moe_routed_scaling_factor": 1.5)",
       {1, 0},
       [](float a, float b, float, float) {
         const float ca = sigmoid(std::tanh(a / 0.75f) * 0.75f);
         const float cb = sigmoid(std::tanh(b / 0.75f) * 0.75f);
         return W{ca / (ca + cb) * 1.5f, cb / (ca + cb) * 1.5f};
       }},
      {"laguna no softcap",
       "laguna",
       R"("moe_router_logit_softcapping": 0.0)",
       {1, 0},
       [](float, float, float sa, float sb) {
         return W{sa / (sa + sb), sb / (sa + sb)};
       }},
  };
  for (const RecipeCase& c : cases) {
    SCOPED_TRACE(c.name);
    const ModelConfig m = parsed(c.type, c.extra);
    const RoutingRule rule = routingRuleFor(m);
    // The router loads the bias only for a recipe that chooses with it (router_model.cc).
    const std::span<const float> b =
        rule.choiceBias ? std::span<const float>(bias) : std::span<const float>();
    auto d = routeLogits(logits, 1, 4, rule, b);
    ASSERT_EQ(d.ids, c.ids);
    const float a = logits[c.ids[0]], bb = logits[c.ids[1]];
    const W want = c.weights(a, bb, c.ids[0] == 0 ? s1 : s05, c.ids[1] == 0 ? s1 : s05);
    for (size_t j = 0; j < want.size(); ++j) EXPECT_NEAR(d.weights[j], want[j], 2e-7f) << j;
    // The op-by-op reference agrees, and so does it on random logits with ties.
    std::vector<uint32_t> ids;
    std::vector<float> weights;
    client::referenceRoute(m, logits, 1, b, ids, weights);
    EXPECT_EQ(ids, c.ids);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    const size_t T = 200;
    std::vector<float> many(T * 4);
    for (auto& v : many) v = normal(rng);
    for (size_t i = 0; i < many.size(); i += 5) many[i] = std::round(many[i]);
    auto dm = routeLogits(many, T, 4, rule, b);
    client::referenceRoute(m, many, T, b, ids, weights);
    ASSERT_EQ(dm.ids, ids);
    for (size_t i = 0; i < weights.size(); ++i)
      EXPECT_NEAR(dm.weights[i], weights[i], 1e-6f * std::fabs(weights[i]) + 1e-7f);
  }
}

}  // namespace
}  // namespace moe::router
