// The in-process reference layer (client/reference/: in_process_layer.h, reference_*.h) on tiny
// hand-computed cases that a misreading of DESIGN.md §6 would fail: MoE++'s zero expert and
// gating, Yuan's attention router, expert capacity and noisy top-k, first on the single steps and
// then through InProcessModel on small checkpoints whose weights the tests choose.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "client/reference/in_process_layer.h"
#include "client/reference/reference_capacity.h"
#include "client/reference/reference_gates.h"
#include "client/reference/reference_routing.h"
#include "common/routing_noise.h"
#include "common/safetensors.h"
#include "tests/unit/test_util.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::client {
namespace {

using kernels::Backend;

std::unique_ptr<Backend> referenceBackend() {
  auto b = kernels::createBackend(kernels::BackendKind::kReference);
  EXPECT_TRUE(b.isOk());
  return std::move(b).value();
}

std::vector<std::byte> f32Bytes(const std::vector<float>& v) {
  std::vector<std::byte> out(v.size() * sizeof(float));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

float sigmoid(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}

const auto moePlusPlus = unit::moePlusPlusConfig;

// ---- MoE++ gating (referenceMoePlusPlusRoute) ----

TEST(ReferenceMoePlusPlus, SelectedZeroExpertGivesTheOtherExpertWeightOne) {
  // 6 experts: FFN 0-1, constant 2-3, copy 4, zero 5. The zero expert has the top score.
  const auto m = moePlusPlus(6);
  const std::vector<float> logits = {1.0f, 0.0f, 0.0f, 0.0f, 0.5f, 2.0f,   // zero expert first
                                     2.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f};  // no zero expert
  std::vector<uint32_t> ids;
  std::vector<float> w;
  referenceMoePlusPlusRoute(m, logits, 2, ids, w);
  ASSERT_EQ(ids, (std::vector<uint32_t>{5, 0, 0, 1}));
  EXPECT_EQ(w[0], 0.0f);
  EXPECT_FLOAT_EQ(w[1], 1.0f);
  // Without the zero expert: p_sel / Σ p_sel = sigmoid of the logit gap.
  EXPECT_NEAR(w[2], sigmoid(1.0f), 1e-6);
  EXPECT_NEAR(w[3], sigmoid(-1.0f), 1e-6);
}

TEST(ReferenceMoePlusPlus, MixtralGatingIsASoftmaxOverTheTopTwoLogitsWithoutMasking) {
  auto m = moePlusPlus(6);
  m.moeMixtralGating = true;
  const std::vector<float> logits = {1.0f, 0.0f, 0.0f, 0.0f, 0.5f, 2.0f};
  std::vector<uint32_t> ids;
  std::vector<float> w;
  referenceMoePlusPlusRoute(m, logits, 1, ids, w);
  ASSERT_EQ(ids, (std::vector<uint32_t>{5, 0}));
  EXPECT_NEAR(w[0], sigmoid(1.0f), 1e-6);  // the zero expert keeps its weight
  EXPECT_NEAR(w[1], sigmoid(-1.0f), 1e-6);
}

TEST(ReferenceMoePlusPlus, LogitsNormDividesByTheUnbiasedStd) {
  // s = (2, 1, 0, 0, 0): mean 0.6, Σ(s - mean)² = 3.2, unbiased std √0.8 (biased would be 0.8).
  auto m = moePlusPlus(5);
  m.moeLogitsNorm = true;
  m.moeGateNormStd = 2.0f;
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, 0.0f, 0.0f};
  std::vector<uint32_t> ids;
  std::vector<float> w;
  referenceMoePlusPlusRoute(m, logits, 1, ids, w);
  ASSERT_EQ(ids, (std::vector<uint32_t>{0, 1}));
  const float gap = 1.0f / (std::sqrt(0.8f) / 2.0f);  // (s0 - s1) / (std / target)
  EXPECT_NEAR(w[0], sigmoid(gap), 1e-6);
  EXPECT_GT(std::fabs(w[0] - sigmoid(1.0f / (0.8f / 2.0f))), 1e-3);  // not the biased std
}

// ---- Yuan attention router (referenceGateLogits, kAttention) ----

// A 3-expert toy with H = 2, x = (1, 0): column 0 of Wqkv gives q = (0, 1, -1), k = (0, ln 3, 0),
// v = (1, 2, 4); column 1 (5s) meets x's 0. Row i attends over j with softmax(q_i · k):
//   i = 0: q = 0 → uniform → s0 = 7/3; i = 1: softmax(0, ln3, 0) = (1, 3, 1)/5 → s1 = 11/5;
//   i = 2: softmax(0, -ln3, 0) = (3, 1, 3)/7 → s2 = 17/7.
const float kLn3 = std::log(3.0f);
const std::vector<float> kYuanQuery = {0, 5, 1, 5, -1, 5};
const std::vector<float> kYuanKey = {0, 5, kLn3, 5, 0, 5};
const std::vector<float> kYuanValue = {1, 5, 2, 5, 4, 5};
const std::vector<float> kYuanLogits = {7.0f / 3, 11.0f / 5, 17.0f / 7};

TEST(ReferenceGates, YuanAttentionRouterAttendsAcrossExperts) {
  auto b = referenceBackend();
  std::vector<float> qkv = kYuanQuery;
  qkv.insert(qkv.end(), kYuanKey.begin(), kYuanKey.end());
  qkv.insert(qkv.end(), kYuanValue.begin(), kYuanValue.end());
  ReferenceGate gate;
  gate.kind = GateKind::kAttention;
  gate.numExperts = 3;
  gate.w = std::move(b->upload(qkv, 9, 2)).value();
  const std::vector<float> x = {1.0f, 0.0f};
  std::vector<float> logits(3);
  ASSERT_TRUE(referenceGateLogits(*b, gate, x, 1, {}, logits).isOk());
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(logits[i], kYuanLogits[i], 1e-5) << i;
  // Residual logits need a gate_map, which this gate has not.
  const std::vector<float> prev(3, 1.0f);
  EXPECT_FALSE(referenceGateLogits(*b, gate, x, 1, prev, logits).isOk());
}

// ---- Capacity (applyReferenceCapacity) ----

// 4 tokens, k = 2, 4 experts, factor 1 → cap = ceil(1 · 4 · 2 / 4) = 2. Every token's first choice
// is expert 0 (weights 0.9, 0.6, 0.6, 0.5); its second is 1, 2, 3, 1 with weight 1 - first.
struct CapacityCase {
  std::vector<uint32_t> ids = {0, 1, 0, 2, 0, 3, 0, 1};
  std::vector<float> weights = {0.9f, 0.1f, 0.6f, 0.4f, 0.6f, 0.4f, 0.5f, 0.5f};
};

TEST(ReferenceCapacity, CapIsTheCeilingOfFactorTimesAssignmentsPerExpert) {
  EXPECT_EQ(referenceCapacity(1.0, 4, 2, 4), 2u);
  EXPECT_EQ(referenceCapacity(1.25, 4, 2, 4), 3u);  // 2.5 rounds up
  EXPECT_EQ(referenceCapacity(0.5, 3, 1, 4), 1u);
}

TEST(ReferenceCapacity, DropsTheLowestWeightsAndOnATieTheLaterToken) {
  CapacityCase c;
  RoutingOptions o;
  o.capacityFactor = 1.0;
  std::vector<uint8_t> dropped;
  applyReferenceCapacity(o, 4, 4, 4, 2, c.ids, c.weights, dropped);
  // Expert 0 keeps token 0 (0.9) and token 1 (0.6, tied with token 2, which comes later).
  EXPECT_EQ(dropped, (std::vector<uint8_t>{0, 0, 0, 0, 1, 0, 1, 0}));
  EXPECT_EQ(c.weights, (std::vector<float>{0.9f, 0.1f, 0.6f, 0.4f, 0.0f, 0.4f, 0.0f, 0.5f}));
}

TEST(ReferenceCapacity, RenormalizeRestoresTheTokensPreDropSum) {
  CapacityCase c;
  RoutingOptions o;
  o.capacityFactor = 1.0;
  o.capacityRenormalize = true;
  std::vector<uint8_t> dropped;
  applyReferenceCapacity(o, 4, 4, 4, 2, c.ids, c.weights, dropped);
  EXPECT_FLOAT_EQ(c.weights[5], 1.0f);  // token 2: 0.4 · (1.0 / 0.4)
  EXPECT_FLOAT_EQ(c.weights[7], 1.0f);  // token 3: 0.5 · (1.0 / 0.5)
  EXPECT_EQ(c.weights[4], 0.0f);
  EXPECT_FLOAT_EQ(c.weights[0], 0.9f);  // tokens that lost nothing are untouched
}

TEST(ReferenceCapacity, OnlyFfnExpertsAreCapped) {
  // With 1 FFN expert of 4 (MoE++-style), experts 1..3 take any number of assignments.
  CapacityCase c;
  for (size_t i = 0; i < c.ids.size(); ++i) c.ids[i] = i % 2 == 0 ? 3 : 0;
  RoutingOptions o;
  o.capacityFactor = 1.0;
  std::vector<uint8_t> dropped;
  applyReferenceCapacity(o, 4, 1, 4, 2, c.ids, c.weights, dropped);
  // Expert 0 holds the second slots (0.1, 0.4, 0.4, 0.5): keep 0.5 (token 3), 0.4 (token 1).
  EXPECT_EQ(dropped, (std::vector<uint8_t>{0, 1, 0, 0, 0, 1, 0, 0}));
}

TEST(ReferenceCapacity, FactorZeroDropsNothing) {
  CapacityCase c;
  const auto before = c.weights;
  std::vector<uint8_t> dropped;
  applyReferenceCapacity(RoutingOptions{}, 4, 4, 4, 2, c.ids, c.weights, dropped);
  EXPECT_EQ(dropped, std::vector<uint8_t>(8, 0));
  EXPECT_EQ(c.weights, before);
}

// ---- Noise (addReferenceNoise) ----

TEST(ReferenceNoise, AddsSeededNormalTimesStableSoftplus) {
  auto b = referenceBackend();
  ReferenceGate gate;
  gate.numExperts = 3;
  // z = x · W_noiseᵀ: rows give z = (100 x0, -x1, 0): softplus(100) must not overflow.
  gate.noise = std::move(b->upload(std::vector<float>{100, 0, 0, -1, 0, 0}, 3, 2)).value();
  const std::vector<float> x = {1.0f, 2.0f, 1.0f, 0.0f};  // T = 2
  std::vector<float> a(6, 0.5f), same(6, 0.5f), other(6, 0.5f);
  ASSERT_TRUE(addReferenceNoise(*b, gate, x, 2, 7, 3, a).isOk());
  ASSERT_TRUE(addReferenceNoise(*b, gate, x, 2, 7, 3, same).isOk());
  ASSERT_TRUE(addReferenceNoise(*b, gate, x, 2, 8, 3, other).isOk());
  EXPECT_EQ(a, same);
  EXPECT_NE(a, other);
  const float softplus[2][3] = {{100.0f, std::log1p(std::exp(-2.0f)), std::log(2.0f)},
                                {100.0f, std::log(2.0f), std::log(2.0f)}};
  for (uint32_t t = 0; t < 2; ++t) {
    for (uint32_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(a[t * 3 + i], 0.5f + routingNoise(7, 3, t, i) * softplus[t][i], 1e-4)
          << t << "," << i;
    }
  }
  gate.noise.reset();
  EXPECT_FALSE(addReferenceNoise(*b, gate, x, 2, 7, 3, a).isOk());
}

// ---- Whole layers through InProcessModel ----

struct Tensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;
};

void writeCheckpoint(const std::string& dir, const std::string& configJson,
                     const std::vector<Tensor>& tensors) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << configJson;
  SafetensorsWriter w;
  for (const Tensor& t : tensors) w.add(t.name, DType::kF32, t.shape, f32Bytes(t.values));
  ASSERT_TRUE(w.write(dir + "/model.safetensors").isOk());
}

// Rewrites a synthetic checkpoint's model.safetensors, replacing the values of each tensor for
// which `values` answers (shape kept); returns how many it replaced.
size_t overrideTensors(
    const std::string& dir,
    const std::function<std::optional<std::vector<float>>(const TensorInfo&)>& values) {
  const std::string path = dir + "/model.safetensors";
  SafetensorsWriter w;
  size_t replaced = 0;
  {
    auto file = SafetensorsFile::open(path);
    EXPECT_TRUE(file.isOk()) << file.error();
    if (!file) return 0;
    for (const TensorInfo& t : file.value()->tensors()) {
      auto v = values(t);
      if (v) {
        EXPECT_EQ(v->size(), t.numel()) << t.name;
        w.add(t.name, DType::kF32, t.shape, f32Bytes(*v));
        ++replaced;
      } else {
        auto bytes = file.value()->bytes(t);
        w.add(t.name, t.dtype, t.shape, std::vector<std::byte>(bytes.begin(), bytes.end()));
      }
    }
  }
  EXPECT_TRUE(w.write(path + ".new").isOk());
  std::filesystem::rename(path + ".new", path);
  return replaced;
}

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<InProcessModel> mustLoad(const std::string& dir, const RoutingOptions& o = {}) {
  auto m = InProcessModel::load(dir, referenceBackend(), {0}, o);
  EXPECT_TRUE(m.isOk()) << m.error();
  return m ? std::move(m).value() : nullptr;
}

class ReferenceLayer : public unit::ScratchDirTest {};

TEST_F(ReferenceLayer, MoePlusPlusZeroAndCopyExpertsOnScaledInputWithGatingResidual) {
  // 6 experts (FFN 0-1, constant 2-3, copy 4, zero 5), single-layer gate, H = 4.
  SyntheticModelSpec spec;
  spec.modelType = "MoE++";
  spec.hiddenSize = 4;
  spec.intermediateSize = 2;
  spec.numExperts = 6;
  spec.numLayers = 1;
  spec.moeTwoLayerGate = false;
  spec.dtype = DType::kF32;
  const std::string dir = path("moepp");
  ASSERT_TRUE(writeSyntheticCheckpoint(spec, dir).isOk());
  // Gate: logit 4 (copy) = 3·x0, logit 5 (zero) = 2·x0, others 0; gate_map = identity.
  const size_t n =
      overrideTensors(dir, [](const TensorInfo& t) -> std::optional<std::vector<float>> {
        if (endsWith(t.name, "gate.wg.weight")) {
          std::vector<float> g(6 * 4, 0.0f);
          g[4 * 4] = 3.0f;
          g[5 * 4] = 2.0f;
          return g;
        }
        if (endsWith(t.name, "gate.gate_map.weight")) {
          std::vector<float> id(36, 0.0f);
          for (size_t i = 0; i < 6; ++i) id[i * 6 + i] = 1.0f;
          return id;
        }
        // Constant expert 2: Wc·x̃ = (ln 3 · x̃0, 0), v = (1, 2, 3, 4).
        if (endsWith(t.name, "experts.experts.2.wg.weight")) {
          return std::vector<float>{std::log(3.0f) / 2, 0, 0, 0, 0, 0, 0, 0};
        }
        if (endsWith(t.name, "experts.experts.2.constant")) return std::vector<float>{1, 2, 3, 4};
        return std::nullopt;
      });
  ASSERT_EQ(n, 4u);
  auto m = mustLoad(dir);
  ASSERT_TRUE(m);
  ASSERT_EQ(m->config().expertInputScale(), 2.0f);
  const std::vector<float> x = {1.0f, -2.0f, 0.5f, 3.0f};
  std::vector<float> y(4);
  ReferenceRouting r;
  ASSERT_TRUE(m->forward(0, x, 1, y, {}, &r).isOk());
  // Copy (p largest) then zero: the zero expert's weight is 0, the copy's renormalized to 1, and
  // the copy expert returns x̃ = 2x.
  EXPECT_EQ(r.ids, (std::vector<uint32_t>{4, 5}));
  EXPECT_EQ(r.weights[1], 0.0f);
  EXPECT_FLOAT_EQ(r.weights[0], 1.0f);
  for (size_t h = 0; h < 4; ++h) EXPECT_FLOAT_EQ(y[h], 2.0f * x[h]) << h;

  // The previous layer's logits through gate_map (identity) lift the zero expert to first place;
  // the reported logits include that residual.
  const std::vector<float> prev = {0, 0, 0, 0, 0, 5};
  ReferenceRequest req;
  req.prevLogits = prev;
  ASSERT_TRUE(m->forward(0, x, 1, y, req, &r).isOk());
  EXPECT_EQ(r.logits, (std::vector<float>{0, 0, 0, 0, 3, 7}));
  EXPECT_EQ(r.ids, (std::vector<uint32_t>{5, 4}));
  EXPECT_EQ(r.weights, (std::vector<float>{0.0f, 1.0f}));
  for (size_t h = 0; h < 4; ++h) EXPECT_FLOAT_EQ(y[h], 2.0f * x[h]) << h;

  // Constant expert 2 ties the zero expert at 10 and wins the tie (lower id): weight 1. With
  // x̃0 = 2, softmax(ln 3, 0) = (3/4, 1/4), so y = 3/4 · 2x + 1/4 · v.
  const std::vector<float> toConstant = {0, 0, 10, 0, 0, 8};
  req.prevLogits = toConstant;
  ASSERT_TRUE(m->forward(0, x, 1, y, req, &r).isOk());
  EXPECT_EQ(r.ids, (std::vector<uint32_t>{2, 5}));
  EXPECT_EQ(r.weights, (std::vector<float>{1.0f, 0.0f}));
  const float v[4] = {1, 2, 3, 4};
  for (size_t h = 0; h < 4; ++h) EXPECT_NEAR(y[h], 0.75f * 2.0f * x[h] + 0.25f * v[h], 1e-6) << h;
  req.prevLogits = std::span<const float>(prev).first(5);
  EXPECT_FALSE(m->forward(0, x, 1, y, req, &r).isOk());
}

TEST_F(ReferenceLayer, YuanAttentionRouterLogitsAndRenormalizedTopTwo) {
  SyntheticModelSpec spec;
  spec.modelType = "yuan";
  spec.hiddenSize = 2;
  spec.intermediateSize = 2;
  spec.numExperts = 3;
  spec.numLayers = 1;
  spec.dtype = DType::kF32;
  const std::string dir = path("yuan");
  ASSERT_TRUE(writeSyntheticCheckpoint(spec, dir).isOk());
  const size_t n =
      overrideTensors(dir, [](const TensorInfo& t) -> std::optional<std::vector<float>> {
        if (endsWith(t.name, "gate.query.weight")) return kYuanQuery;
        if (endsWith(t.name, "gate.key.weight")) return kYuanKey;
        if (endsWith(t.name, "gate.value.weight")) return kYuanValue;
        return std::nullopt;
      });
  ASSERT_EQ(n, 3u);
  auto m = mustLoad(dir);
  ASSERT_TRUE(m);
  const std::vector<float> x = {1.0f, 0.0f};
  std::vector<float> y(2);
  ReferenceRouting r;
  ASSERT_TRUE(m->forward(0, x, 1, y, {}, &r).isOk());
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(r.logits[i], kYuanLogits[i], 1e-5) << i;
  ASSERT_EQ(r.ids, (std::vector<uint32_t>{2, 0}));
  EXPECT_NEAR(r.weights[0], sigmoid(kYuanLogits[2] - kYuanLogits[0]), 1e-5);
  EXPECT_NEAR(r.weights[0] + r.weights[1], 1.0f, 1e-6);
}

// OLMoE (softmax top-k, no renormalization), H = 4, I = 2, 4 experts, k = 2. Gate row e picks
// x[e], so a token (a, 0.5 at position s) chooses expert 0 first when a > 0.5, then expert s.
std::string olmoeConfig() {
  return R"({"model_type": "olmoe", "hidden_size": 4, "intermediate_size": 2, "num_experts": 4,
             "num_experts_per_tok": 2, "num_hidden_layers": 1, "norm_topk_prob": false})";
}

std::vector<Tensor> olmoeTensors(bool withNoise) {
  std::vector<Tensor> ts;
  const std::string p = "model.layers.0.mlp.";
  std::vector<float> gate(16, 0.0f);
  for (size_t e = 0; e < 4; ++e) gate[e * 4 + e] = 1.0f;
  ts.push_back({p + "gate.weight", {4, 4}, gate});
  for (int e = 0; e < 4; ++e) {
    const std::string ep = p + "experts." + std::to_string(e) + ".";
    std::vector<float> w1(8), w3(8), w2(8);
    for (size_t i = 0; i < 8; ++i) {
      w1[i] = 0.1f * static_cast<float>((i + static_cast<size_t>(e)) % 5) - 0.2f;
      w3[i] = 0.05f * static_cast<float>(i) + 0.1f * static_cast<float>(e);
      w2[i] = 0.3f - 0.07f * static_cast<float>(i);
    }
    ts.push_back({ep + "gate_proj.weight", {2, 4}, w1});
    ts.push_back({ep + "up_proj.weight", {2, 4}, w3});
    ts.push_back({ep + "down_proj.weight", {4, 2}, w2});
  }
  if (withNoise) {
    std::vector<float> noise(16, 0.0f);
    for (size_t e = 0; e < 4; ++e) noise[e * 4 + e] = 2.0f;
    ts.push_back({p + "w_noise.weight", {4, 4}, noise});
  }
  return ts;
}

// Token t = (a_t, 0.5 at s_t) for a = (3, 1, 1, 0.7), s = (1, 2, 2, 3): tokens 1 and 2 are equal,
// so their expert-0 weights tie exactly.
std::vector<float> olmoeTokens() {
  const float a[4] = {3.0f, 1.0f, 1.0f, 0.7f};
  const size_t second[4] = {1, 2, 2, 3};
  std::vector<float> x(16, 0.0f);
  for (size_t t = 0; t < 4; ++t) {
    x[t * 4] = a[t];
    x[t * 4 + second[t]] = 0.5f;
  }
  return x;
}

TEST_F(ReferenceLayer, CapacityDropsLowWeightsOfAFullExpertAndOptionallyRenormalizes) {
  const std::string dir = path("olmoe");
  writeCheckpoint(dir, olmoeConfig(), olmoeTensors(false));
  const auto x = olmoeTokens();
  RoutingOptions capped;
  capped.capacityFactor = 1.0;  // cap = ceil(4 · 2 / 4) = 2
  RoutingOptions renorm = capped;
  renorm.capacityRenormalize = true;
  std::vector<float> yFree(16), yCapped(16), yRenorm(16);
  ReferenceRouting uncapped, c, rn;
  ASSERT_TRUE(mustLoad(dir)->forward(0, x, 4, yFree, {}, &uncapped).isOk());
  ASSERT_TRUE(mustLoad(dir, capped)->forward(0, x, 4, yCapped, {}, &c).isOk());
  ASSERT_TRUE(mustLoad(dir, renorm)->forward(0, x, 4, yRenorm, {}, &rn).isOk());
  ASSERT_EQ(uncapped.ids, (std::vector<uint32_t>{0, 1, 0, 2, 0, 2, 0, 3}));
  // Tokens 1 and 2 tie on expert 0: the later one, token 2, is dropped, token 3 (lowest) too.
  EXPECT_EQ(c.dropped, (std::vector<uint8_t>{0, 0, 0, 0, 1, 0, 1, 0}));
  EXPECT_EQ(c.ids, uncapped.ids);
  EXPECT_EQ(c.weights[4], 0.0f);
  EXPECT_EQ(c.weights[5], uncapped.weights[5]);  // not renormalized
  EXPECT_FLOAT_EQ(rn.weights[5], uncapped.weights[4] + uncapped.weights[5]);
  for (size_t h = 0; h < 4; ++h) {
    EXPECT_FLOAT_EQ(yCapped[h], yFree[h]) << h;  // tokens 0 and 1 lost nothing
    EXPECT_FLOAT_EQ(yCapped[4 + h], yFree[4 + h]) << h;
    // Token 2 keeps only expert 2: renormalizing scales that one term.
    EXPECT_NEAR(yRenorm[8 + h],
                yCapped[8 + h] * (uncapped.weights[4] + uncapped.weights[5]) / uncapped.weights[5],
                1e-6)
        << h;
  }
}

TEST_F(ReferenceLayer, NoiseIsSeededAndKeepsReportedLogitsNoiseFree) {
  const std::string dir = path("olmoe");
  writeCheckpoint(dir, olmoeConfig(), olmoeTensors(true));
  const std::string bare = path("olmoe-bare");
  writeCheckpoint(bare, olmoeConfig(), olmoeTensors(false));
  const auto x = olmoeTokens();
  RoutingOptions noisy;
  noisy.noisyTopk = true;
  noisy.noiseSeed = 11;
  auto m = mustLoad(dir, noisy);
  ASSERT_TRUE(m);
  std::vector<float> y1(16), y2(16), y3(16), yPlain(16);
  ReferenceRouting r1, r2, r3, plain;
  ASSERT_TRUE(m->forward(0, x, 4, y1, {}, &r1).isOk());
  ASSERT_TRUE(m->forward(0, x, 4, y2, {}, &r2).isOk());
  ReferenceRequest other;
  other.noiseSeed = 12;
  ASSERT_TRUE(m->forward(0, x, 4, y3, other, &r3).isOk());
  EXPECT_EQ(r1.weights, r2.weights);
  EXPECT_EQ(y1, y2);
  EXPECT_NE(r1.weights, r3.weights);
  // noisyTopk off needs no W_noise; its logits are the ones the noisy model reports.
  ASSERT_TRUE(mustLoad(bare)->forward(0, x, 4, yPlain, {}, &plain).isOk());
  EXPECT_EQ(r1.logits, plain.logits);
  EXPECT_EQ(r3.logits, plain.logits);
  EXPECT_NE(r1.weights, plain.weights);
  auto missing = InProcessModel::load(bare, referenceBackend(), {0}, noisy);
  ASSERT_FALSE(missing.isOk());
  EXPECT_TRUE(unit::contains(missing.error(), "w_noise"));
}

}  // namespace
}  // namespace moe::client
