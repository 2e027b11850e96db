// Missing experts (router_service/missing_experts.h): hand-computed cases for each policy, the
// error message, capacity-dropped assignments, k = E, and the router against the independent
// reference (client/reference/reference_missing.h) for every family rule on random logits and
// random availability masks.
#include "router_service/missing_experts.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "client/reference/reference_capacity.h"
#include "client/reference/reference_missing.h"
#include "client/reference/reference_routing.h"
#include "router_service/capacity.h"
#include "router_service/reply.h"
#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

using unit::contains;

constexpr auto kError = MissingExpertPolicy::kError;
constexpr auto kRenormalize = MissingExpertPolicy::kRenormalize;
constexpr auto kReroute = MissingExpertPolicy::kReroute;

ModelConfig softmaxModel(uint32_t E, uint32_t k, bool norm) {
  ModelConfig m;
  m.numExperts = m.numFfnExperts = E;
  m.topK = k;
  m.routing = softmaxTopkRecipe(norm);
  return m;
}

enum class Deepseek { kV2, kV3 };

ModelConfig deepseek(Deepseek f, uint32_t E, uint32_t k, uint32_t groups, uint32_t keep,
                     std::optional<bool> norm = std::nullopt) {
  ModelConfig m = softmaxModel(E, k, false);
  m.routing = f == Deepseek::kV3 ? deepseekV3Recipe(true, norm.value_or(true), 2.5f, groups, keep)
                                 : deepseekV2Recipe(16.0f, groups > 1, groups, keep);
  return m;
}

// A family table row's config: config.json with these MoE keys (E experts, top-k) parsed.
ModelConfig tableModel(const std::string& modelType, const std::string& moeKeys) {
  const std::string text = R"({"model_type": ")" + modelType +
                           R"(", "hidden_size": 8, "intermediate_size": 4,
      "moe_intermediate_size": 4, "num_hidden_layers": 2, )" +
                           moeKeys + "}";
  auto m = parseModelConfig(text, modelType + " config");
  EXPECT_TRUE(m.isOk()) << m.error();
  return m.isOk() ? m.value() : ModelConfig{};
}

float sigmoid(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}

// The slots of a decision that the reply would show as dropped.
std::vector<uint8_t> droppedOf(const RoutingDecision& d) {
  return d.dropped.empty() ? std::vector<uint8_t>(d.ids.size(), 0) : d.dropped;
}

// ---------------------------------------------------------------------------------------------
// Hand-computed cases
//
// Four experts, top-2, two tokens. Token 0's logits are ln(4, 3, 2, 1), so p = (.4, .3, .2, .1);
// token 1's are reversed. Mixtral (renormalized) picks token 0 → {0, 1} with w = (4/7, 3/7) and
// token 1 → {3, 2} with (4/7, 3/7); Qwen2 without norm_topk_prob keeps w = (.4, .3).
// With expert 0 gone (only token 0 uses it):
//   renormalize, Mixtral: slot 0 dropped; S = 1, K = 3/7 → w1 = 3/7 · 7/3 = 1.
//   renormalize, Qwen2:   S = .7, K = .3 → w1 = .7.
//   reroute, Mixtral: slot 0 takes expert 2 (the best p left); new set {2, 1}: (.2, .3)/.5 =
//                     (.4, .6).
//   reroute, Qwen2:   {2, 1} with (.2, .3), not renormalized.
// With experts 0 and 1 gone (all of token 0's): renormalize drops both (weights 0); reroute
// gives {2, 3} with (.2, .1)/.3 = (2/3, 1/3). With every expert gone, reroute drops all.
const std::vector<float> kFourLogits = {std::log(4.0f), std::log(3.0f), std::log(2.0f), 0.0f, 0.0f,
                                        std::log(2.0f), std::log(3.0f), std::log(4.0f)};

struct HandCase {
  const char* name;
  ModelConfig model;
  std::vector<float> logits;  // [T, E]
  std::vector<float> bias;
  std::vector<uint8_t> available;
  MissingExpertPolicy policy;
  std::vector<uint32_t> ids;
  std::vector<float> weights;
  std::vector<uint8_t> dropped;  // [T, k]
  std::vector<uint8_t> affected;
  uint32_t assignments;
  double weightLost;
};

std::vector<HandCase> handCases() {
  const auto mixtral = softmaxModel(4, 2, true);
  const auto qwen2 = softmaxModel(4, 2, false);
  const float a = 4.0f / 7, b = 3.0f / 7;
  return {
      {"mixtral renormalize",
       mixtral,
       kFourLogits,
       {},
       {0, 1, 1, 1},
       kRenormalize,
       {0, 1, 3, 2},
       {0, 1, a, b},
       {1, 0, 0, 0},
       {1, 0},
       1,
       a},
      {"mixtral reroute",
       mixtral,
       kFourLogits,
       {},
       {0, 1, 1, 1},
       kReroute,
       {2, 1, 3, 2},
       {0.4f, 0.6f, a, b},
       {0, 0, 0, 0},
       {1, 0},
       1,
       a},
      {"qwen2 renormalize",
       qwen2,
       kFourLogits,
       {},
       {0, 1, 1, 1},
       kRenormalize,
       {0, 1, 3, 2},
       {0, 0.7f, 0.4f, 0.3f},
       {1, 0, 0, 0},
       {1, 0},
       1,
       0.4},
      {"qwen2 reroute",
       qwen2,
       kFourLogits,
       {},
       {0, 1, 1, 1},
       kReroute,
       {2, 1, 3, 2},
       {0.2f, 0.3f, 0.4f, 0.3f},
       {0, 0, 0, 0},
       {1, 0},
       1,
       0.4},
      {"all of a token's experts, renormalize",
       mixtral,
       kFourLogits,
       {},
       {0, 0, 1, 1},
       kRenormalize,
       {0, 1, 3, 2},
       {0, 0, a, b},
       {1, 1, 0, 0},
       {1, 0},
       2,
       1.0},
      {"all of a token's experts, reroute",
       mixtral,
       kFourLogits,
       {},
       {0, 0, 1, 1},
       kReroute,
       {2, 3, 3, 2},
       {2.0f / 3, 1.0f / 3, a, b},
       {0, 0, 0, 0},
       {1, 0},
       2,
       1.0},
      {"every expert gone, reroute",
       mixtral,
       kFourLogits,
       {},
       {0, 0, 0, 0},
       kReroute,
       {0, 1, 3, 2},
       {0, 0, 0, 0},
       {1, 1, 1, 1},
       {1, 1},
       4,
       2.0},
      {"nothing missing",
       mixtral,
       kFourLogits,
       {},
       {1, 1, 1, 1},
       kReroute,
       {0, 1, 3, 2},
       {a, b, a, b},
       {0, 0, 0, 0},
       {},
       0,
       0.0},
  };
}

// DeepSeek-V3, 4 experts in 2 groups (keep 1), top-2, bias 0.2 on expert 1, scale 2.5, normalized.
// s = (.5, 0, 2, 1.5): c = σ + bias = (.622, .700, .881, .818); group sums .. g0 1.322, g1 1.698
// → group 1 → {2, 3}. Expert 2 gone:
//   reroute: the best c outside the token's set, any group: expert 1 (.700 > .622, thanks to its
//            bias); its weight uses σ(0) = .5, not the bias: w = (σ(0), σ(1.5)) / Σ · 2.5.
//   renormalize: {3} alone carries S = 2.5.
// MoE++ with 6 experts (FFN 0, 1; constant 2, 3; copy 4; zero 5), top-2, s = (1, .5, -2, -2, -2,
// 0): picks {0, 1}. Expert 0 gone: reroute takes the zero expert 5 (the best p left; always
// available) with weight 0, so expert 1 gets it all: (0, 1). Experts 0 and 1 gone: slot 0 → 5,
// slot 1 → 2 (tied with 3 and 4; lower id): (0, 1).
std::vector<HandCase> familyHandCases() {
  auto v3 = deepseek(Deepseek::kV3, 4, 2, 2, 1);
  const float s0 = sigmoid(0.0f), s15 = sigmoid(1.5f), s2 = sigmoid(2.0f);
  const float lost2 = s2 / (s2 + s15 + 1e-20f) * 2.5f;
  auto mpp = unit::moePlusPlusConfig(6);
  const std::vector<float> mppLogits = {1.0f, 0.5f, -2.0f, -2.0f, -2.0f, 0.0f};
  const float p0 = 1.0f / (1.0f + std::exp(-0.5f));  // p0 / (p0 + p1), the renormalized top-2
  return {
      {"deepseek_v3 reroute",
       v3,
       {0.5f, 0.0f, 2.0f, 1.5f},
       {0, 0.2f, 0, 0},
       {1, 1, 0, 1},
       kReroute,
       {1, 3},
       {s0 / (s0 + s15 + 1e-20f) * 2.5f, s15 / (s0 + s15 + 1e-20f) * 2.5f},
       {0, 0},
       {1},
       1,
       lost2},
      {"deepseek_v3 renormalize",
       v3,
       {0.5f, 0.0f, 2.0f, 1.5f},
       {0, 0.2f, 0, 0},
       {1, 1, 0, 1},
       kRenormalize,
       {2, 3},
       {0, 2.5f},
       {1, 0},
       {1},
       1,
       lost2},
      {"moe++ reroute to the zero expert",
       mpp,
       mppLogits,
       {},
       {0, 1},
       kReroute,
       {5, 1},
       {0, 1},
       {0, 0},
       {1},
       1,
       p0},
      {"moe++ both FFN experts gone",
       mpp,
       mppLogits,
       {},
       {0, 0},
       kReroute,
       {5, 2},
       {0, 1},
       {0, 0},
       {1},
       2,
       1.0},
  };
}

void runHandCase(const HandCase& c) {
  SCOPED_TRACE(c.name);
  const uint32_t E = c.model.numExperts;
  const auto T = static_cast<uint32_t>(c.logits.size() / E);
  const auto rule = routingRuleFor(c.model);
  auto d = routeLogits(c.logits, T, E, rule, c.bias);
  auto got = applyMissingExperts(d, c.logits, E, rule, c.bias, c.available, c.policy, 3);
  ASSERT_TRUE(got.isOk()) << got.error();
  EXPECT_EQ(d.ids, c.ids);
  for (size_t i = 0; i < c.weights.size(); ++i) EXPECT_NEAR(d.weights[i], c.weights[i], 1e-6);
  EXPECT_EQ(droppedOf(d), c.dropped);
  EXPECT_EQ(d.affected, c.affected);
  EXPECT_EQ(got.value().assignments, c.assignments);
  EXPECT_NEAR(got.value().weightLost, c.weightLost, 1e-6);
}

TEST(MissingExperts, HandComputedFourExpertCases) {
  for (const auto& c : handCases()) runHandCase(c);
}

TEST(MissingExperts, HandComputedDeepseekV3AndMoePlusPlus) {
  for (const auto& c : familyHandCases()) runHandCase(c);
}

TEST(MissingExperts, ErrorNamesTheLayerAndTheMissingExpertsAndLeavesTheRouting) {
  const auto mixtral = softmaxModel(4, 2, true);
  const auto rule = routingRuleFor(mixtral);
  const struct {
    std::vector<uint8_t> available;
    uint32_t layer;
    const char* message;
  } cases[] = {
      {{0, 1, 1, 1}, 3, "layer 3: expert 0 has no available replica"},
      {{0, 1, 1, 0}, 7, "layer 7: experts 0, 3 have no available replica"},
      {{0, 0, 0, 0}, 0, "layer 0: experts 0, 1, 2, 3 have no available replica"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.message);
    auto d = routeLogits(kFourLogits, 2, 4, rule, {});
    const auto before = d;
    auto r = applyMissingExperts(d, kFourLogits, 4, rule, {}, c.available, kError, c.layer);
    ASSERT_FALSE(r.isOk());
    EXPECT_EQ(r.code(), StatusCode::kUnavailable);
    EXPECT_EQ(r.error(), c.message);
    EXPECT_EQ(d.ids, before.ids);
    EXPECT_EQ(d.weights, before.weights);
    EXPECT_TRUE(d.dropped.empty());
    EXPECT_TRUE(d.affected.empty());
  }
  // An unavailable expert that no token chose is no error.
  auto d = routeLogits(kFourLogits, 1, 4, rule, {});  // token 0 only: {0, 1}
  auto ok = applyMissingExperts(d, std::span(kFourLogits).first(4), 4, rule, {},
                                std::vector<uint8_t>{1, 1, 0, 0}, kError, 3);
  ASSERT_TRUE(ok.isOk()) << ok.error();
  EXPECT_EQ(ok.value().assignments, 0u);
}

// Capacity already dropped slot 0 of both tokens (weight 0). Token 0's dropped slot is the
// missing expert 0: not lost, not counted. Token 1 loses expert 0 in slot 1 (w .5):
//   renormalize: S = .5, nothing left (K = 0) → all 0, both dropped;
//   reroute: slot 1 takes expert 1 (p .3 beats expert 3's .1; 2 and 0 are the token's); the new
//            set is {1} alone (slot 0 stays dropped) → weight 1.
TEST(MissingExperts, CapacityDroppedAssignmentsStayAsTheyAre) {
  const auto rule = routingRuleFor(softmaxModel(4, 2, true));
  const std::vector<float> logits = {std::log(4.0f), std::log(3.0f), std::log(2.0f), 0.0f,
                                     std::log(4.0f), std::log(3.0f), std::log(2.0f), 0.0f};
  const std::vector<uint8_t> available = {0, 1, 1, 1};
  const struct {
    MissingExpertPolicy policy;
    std::vector<uint32_t> ids;
    std::vector<float> weights;
    std::vector<uint8_t> dropped;
  } cases[] = {
      {kRenormalize, {0, 1, 2, 0}, {0, 0.6f, 0, 0}, {1, 0, 1, 1}},
      {kReroute, {0, 1, 2, 1}, {0, 0.6f, 0, 1}, {1, 0, 1, 0}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(missingExpertPolicyName(c.policy));
    auto d = unit::decision(2, 2, {0, 1, 2, 0}, {0, 0.6f, 0, 0.5f});
    d.dropped = {1, 0, 1, 0};
    auto r = applyMissingExperts(d, logits, 4, rule, {}, available, c.policy, 1);
    ASSERT_TRUE(r.isOk()) << r.error();
    EXPECT_EQ(r.value().assignments, 1u);
    EXPECT_NEAR(r.value().weightLost, 0.5, 1e-7);
    EXPECT_EQ(d.ids, c.ids);
    EXPECT_EQ(d.dropped, c.dropped);
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(d.weights[i], c.weights[i], 1e-6);
    EXPECT_EQ(d.affected, (std::vector<uint8_t>{0, 1}));
  }
  // Only capacity-dropped slots need the missing expert: nothing to do, even for kError.
  auto d = unit::decision(1, 2, {0, 1}, {0, 0.6f});
  d.dropped = {1, 0};
  auto r = applyMissingExperts(d, std::span(logits).first(4), 4, rule, {}, available, kError, 1);
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_EQ(r.value().assignments, 0u);
}

// k = E: every expert is already the token's, so reroute finds no replacement and drops the lost
// slot; the family's weights over the rest then sum to 1, as renormalize's do.
TEST(MissingExperts, KEqualsEHasNoReplacementToOffer) {
  const auto rule = routingRuleFor(softmaxModel(4, 4, true));
  const std::vector<float> logits(kFourLogits.begin(), kFourLogits.begin() + 4);  // p .4 .3 .2 .1
  for (auto policy : {kRenormalize, kReroute}) {
    SCOPED_TRACE(missingExpertPolicyName(policy));
    auto d = routeLogits(logits, 1, 4, rule, {});
    ASSERT_EQ(d.ids, (std::vector<uint32_t>{0, 1, 2, 3}));
    auto r =
        applyMissingExperts(d, logits, 4, rule, {}, std::vector<uint8_t>{1, 0, 1, 1}, policy, 0);
    ASSERT_TRUE(r.isOk()) << r.error();
    EXPECT_EQ(d.ids, (std::vector<uint32_t>{0, 1, 2, 3}));
    EXPECT_EQ(d.dropped, (std::vector<uint8_t>{0, 1, 0, 0}));
    const std::vector<float> want = {0.4f / 0.7f, 0, 0.2f / 0.7f, 0.1f / 0.7f};
    for (size_t j = 0; j < 4; ++j) EXPECT_NEAR(d.weights[j], want[j], 1e-6);
    EXPECT_NEAR(r.value().weightLost, 0.3, 1e-6);
  }
}

TEST(MissingExperts, ShapesThatDoNotFitAreInternalErrors) {
  const auto rule = routingRuleFor(softmaxModel(4, 2, true));
  const std::vector<uint8_t> all(4, 1), tooMany(5, 1);
  const std::vector<float> shortLogits(7, 0.0f), bias3(3, 0.0f);
  const struct {
    const char* name;
    std::span<const float> logits;
    std::span<const float> bias;
    std::span<const uint8_t> available;
  } cases[] = {
      {"logits", shortLogits, {}, all},
      {"bias", kFourLogits, bias3, all},
      {"available", kFourLogits, {}, tooMany},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto d = routeLogits(kFourLogits, 2, 4, rule, {});
    auto r = applyMissingExperts(d, c.logits, 4, rule, c.bias, c.available, kReroute, 0);
    ASSERT_FALSE(r.isOk());
    EXPECT_EQ(r.code(), StatusCode::kInternal);
    EXPECT_TRUE(contains(r.error(), c.name));
  }
}

TEST(MissingExperts, CountUnavailable) {
  EXPECT_EQ(countUnavailable(std::vector<uint8_t>{1, 0, 1, 0, 0}), 3u);
  EXPECT_EQ(countUnavailable(std::vector<uint8_t>{1, 1}), 0u);
  EXPECT_EQ(countUnavailable({}), 0u);
}

// The reply's Routing.affected: one mark per token when a token lost an expert, else empty.
TEST(MissingExperts, ReplyMarksTheAffectedTokens) {
  ModelConfig m = softmaxModel(4, 2, true);
  m.hiddenSize = 2;
  const struct {
    std::vector<uint8_t> affected;
    std::vector<bool> wire;
  } cases[] = {{{}, {}}, {{1, 0, 1}, {true, false, true}}, {{0, 0, 1}, {false, false, true}}};
  for (const auto& c : cases) {
    ForwardReply reply;
    reply.output.assign(3 * 2, 0.0f);
    reply.routing = unit::decision(3, 2, {0, 1, 2, 3, 1, 0}, {0.5f, 0.5f, 1, 0, 0.5f, 0.5f});
    reply.routing.affected = c.affected;
    reply.logits.assign(3 * 4, 0.0f);
    capnp::MallocMessageBuilder message;
    auto results = message.initRoot<proto::Router::ForwardResults>();
    writeForwardResults(reply, m, true, 0, results);
    auto wire = results.asReader().getRouting().getAffected();
    ASSERT_EQ(wire.size(), c.wire.size());
    for (unsigned t = 0; t < wire.size(); ++t) EXPECT_EQ(wire[t], c.wire[t]) << "token " << t;
  }
}

// ---------------------------------------------------------------------------------------------
// The router against the reference, every family rule, random logits and availability

struct Family {
  const char* name;
  ModelConfig model;
  bool bias;
};

std::vector<Family> families() {
  auto mppNorm = unit::moePlusPlusConfig(12);
  mppNorm.moeLogitsNorm = true;
  mppNorm.moeGateNormStd = 2.0f;
  auto mppMixtral = unit::moePlusPlusConfig(12);
  mppMixtral.moeMixtralGating = true;
  mppMixtral.routing = moePlusPlusRecipe(mppMixtral);
  mppNorm.routing = moePlusPlusRecipe(mppNorm);
  auto v3NoNorm = deepseek(Deepseek::kV3, 12, 3, 3, 2, false);
  return {
      {"mixtral", softmaxModel(8, 2, true), false},
      {"qwen2 no renorm", softmaxModel(16, 4, false), false},
      {"olmoe k=E", softmaxModel(4, 4, true), false},
      {"yuan", softmaxModel(8, 2, true), false},
      {"deepseek_v2 greedy", deepseek(Deepseek::kV2, 16, 3, 1, 1), false},
      {"deepseek_v2 group-limited", deepseek(Deepseek::kV2, 16, 3, 4, 2), false},
      {"deepseek_v3", deepseek(Deepseek::kV3, 16, 4, 4, 2), true},
      {"deepseek_v3 no norm", v3NoNorm, true},
      {"glm4_moe", tableModel("glm4_moe", R"("n_routed_experts": 16, "num_experts_per_tok": 4,
          "n_group": 4, "topk_group": 2, "routed_scaling_factor": 1.5)"),
       true},
      {"dots1", tableModel("dots1", R"("n_routed_experts": 12, "num_experts_per_tok": 3)"), true},
      {"minimax_m2",
       tableModel("minimax_m2", R"("num_local_experts": 12, "num_experts_per_tok": 3)"), true},
      {"ernie4_5_moe", tableModel("ernie4_5_moe", R"("moe_num_experts": 12, "moe_k": 3,
          "moe_norm_min": 0.5)"),
       true},
      {"dbrx", tableModel("dbrx", R"("d_model": 8, "n_layers": 2, "ffn_config":
          {"moe_num_experts": 8, "moe_top_k": 3, "ffn_hidden_size": 4,
           "moe_normalize_expert_weights": 2.0})"),
       false},
      {"granitemoe",
       tableModel("granitemoe", R"("num_local_experts": 8, "num_experts_per_tok": 3)"), false},
      {"gpt_oss", tableModel("gpt_oss", R"("num_local_experts": 8, "num_experts_per_tok": 2)"),
       false},
      {"llama4_text",
       tableModel("llama4_text", R"("num_local_experts": 8, "num_experts_per_tok": 1)"), false},
      {"jamba", tableModel("jamba", R"("num_experts": 8, "num_experts_per_tok": 2)"), false},
      {"hunyuan_v1_moe", tableModel("hunyuan_v1_moe", R"("num_experts": 8, "moe_topk": 2)"), false},
      {"phimoe", tableModel("phimoe", R"("num_local_experts": 8, "num_experts_per_tok": 2,
          "router_jitter_noise": 0.3)"),
       false},
      {"moe++", unit::moePlusPlusConfig(12), false},
      {"moe++ logits norm", mppNorm, false},
      {"moe++ mixtral gating", mppMixtral, false},
  };
}

client::ReferenceRouting referenceRoute(const ModelConfig& m, std::span<const float> logits,
                                        size_t T, std::span<const float> bias) {
  client::ReferenceRouting r;
  r.k = m.topK;
  client::referenceRoute(m, logits, T, bias, r.ids, r.weights);
  return r;
}

// Availability masks over the FFN experts, given the router's decision (to aim at token 0).
struct Mask {
  const char* name;
  std::function<std::vector<uint8_t>(const RoutingDecision&, uint32_t F, std::mt19937&)> make;
};

std::vector<Mask> masks() {
  return {
      {"nothing missing", [](auto&, uint32_t F, auto&) { return std::vector<uint8_t>(F, 1); }},
      {"one expert",
       [](auto&, uint32_t F, auto& rng) {
         std::vector<uint8_t> a(F, 1);
         a[rng() % F] = 0;
         return a;
       }},
      {"random 30%",
       [](auto&, uint32_t F, auto& rng) {
         std::vector<uint8_t> a(F);
         for (auto& v : a) v = rng() % 10 < 3 ? 0 : 1;
         return a;
       }},
      {"all of token 0's experts",
       [](const RoutingDecision& d, uint32_t F, auto&) {
         std::vector<uint8_t> a(F, 1);
         for (uint32_t j = 0; j < d.k; ++j) {
           if (d.ids[j] < F) a[d.ids[j]] = 0;
         }
         return a;
       }},
      {"every FFN expert", [](auto&, uint32_t F, auto&) { return std::vector<uint8_t>(F, 0); }},
  };
}

// The reroute invariants: a token's live experts are distinct and available.
void expectValidReroute(const RoutingDecision& d, std::span<const uint8_t> available) {
  for (uint32_t t = 0; t < d.tokens; ++t) {
    std::set<uint32_t> seen;
    for (uint32_t j = 0; j < d.k; ++j) {
      const size_t at = size_t{t} * d.k + j;
      if (d.isDropped(at)) continue;
      EXPECT_TRUE(seen.insert(d.ids[at]).second) << "token " << t << " has expert twice";
      if (d.ids[at] < available.size()) {
        EXPECT_TRUE(available[d.ids[at]]) << "token " << t;
      }
    }
  }
}

// Router and reference after the same policy: ids and marks exactly, weights within 1e-6
// (relative beyond 1, for DeepSeek-V2's × 16), the same counts or the same error.
void expectAgreement(const RoutingDecision& d, const Result<MissingExpertOutcome>& got,
                     const client::ReferenceRouting& r,
                     const Result<client::ReferenceMissingCounts>& want) {
  ASSERT_EQ(got.isOk(), want.isOk()) << (got.isOk() ? want.error() : got.error());
  if (!got.isOk()) {
    EXPECT_EQ(got.code(), want.code());
    EXPECT_EQ(got.error(), want.error());
    return;
  }
  ASSERT_EQ(d.ids, r.ids);
  const auto refDropped = r.dropped.empty() ? std::vector<uint8_t>(r.ids.size(), 0) : r.dropped;
  EXPECT_EQ(droppedOf(d), refDropped);
  EXPECT_EQ(d.affected, r.affected);
  for (size_t i = 0; i < r.weights.size(); ++i) {
    EXPECT_NEAR(d.weights[i], r.weights[i], 1e-6 * std::max(1.0f, std::fabs(r.weights[i])))
        << "slot " << i;
  }
  EXPECT_EQ(got.value().assignments, want.value().assignments);
  EXPECT_NEAR(got.value().weightLost, want.value().weightLost,
              1e-5 * std::max(1.0, want.value().weightLost));
}

// Returns the assignments the reference found lost (for the coverage check).
uint32_t compareOnce(const Family& f, const std::vector<float>& logits,
                     const std::vector<float>& bias, std::span<const uint8_t> available,
                     double capacityFactor, MissingExpertPolicy policy) {
  const ModelConfig& m = f.model;
  const uint32_t E = m.numExperts;
  const size_t T = logits.size() / E;
  const auto rule = routingRuleFor(m);
  auto d = routeLogits(logits, static_cast<uint32_t>(T), E, rule, bias);
  auto r = referenceRoute(m, logits, T, bias);
  RoutingOptions cap;
  cap.capacityFactor = capacityFactor;
  applyCapacity(d, cap, E, m.numFfnExperts);
  client::applyReferenceCapacity(cap, E, m.numFfnExperts, T, m.topK, r.ids, r.weights, r.dropped);
  EXPECT_EQ(d.ids, r.ids) << "the routings differ before any expert is missing";
  auto got = applyMissingExperts(d, logits, E, rule, bias, available, policy, 2);
  auto want = client::applyReferenceMissingExperts(m, policy, 2, logits, bias, available, r);
  expectAgreement(d, got, r, want);
  if (policy == kReroute) expectValidReroute(d, available);
  return want.isOk() ? want.value().assignments : 0;
}

TEST(MissingExperts, MatchesTheReferenceForEveryFamilyRule) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const size_t T = 48;
  uint64_t lost = 0;
  for (const auto& f : families()) {
    const uint32_t E = f.model.numExperts, F = f.model.numFfnExperts;
    for (const auto& mask : masks()) {
      for (double capacity : {0.0, 1.0}) {
        std::vector<float> logits(T * E), bias;
        for (auto& v : logits) v = normal(rng);
        // Quantized values make exact score ties, so the tie rules are exercised too.
        for (size_t i = 0; i < logits.size(); i += 5) logits[i] = std::round(logits[i]);
        if (f.bias) {
          bias.resize(E);
          for (auto& v : bias) v = 0.1f * normal(rng);
        }
        const auto firstToken =
            routeLogits(std::span(logits).first(E), 1, E, routingRuleFor(f.model), bias);
        const auto available = mask.make(firstToken, F, rng);
        for (auto policy : {kError, kRenormalize, kReroute}) {
          SCOPED_TRACE(std::string(f.name) + ", " + mask.name + ", capacity " +
                       std::to_string(capacity) + ", " +
                       std::string(missingExpertPolicyName(policy)));
          lost += compareOnce(f, logits, bias, available, capacity, policy);
        }
      }
    }
  }
  EXPECT_GT(lost, 1000u);  // the masks do take experts away
}

}  // namespace
}  // namespace moe::router
