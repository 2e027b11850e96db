// End-to-end parity over real processes: router + 1–3 shards on loopback must return what an
// in-process computation of the same layer (plain reference kernels, op-by-op routing written
// separately in client/) returns, for T ∈ {1, 7, 256, 1000}, k ∈ {1, 2, 3, E}, with and without a
// replicated expert, for every model family and routing option: the same experts for every
// token (from the reply's routing field), max relative error ≤ 1e-5 in fp32, and exactly the rows
// over the network that the routing implies (none for MoE++ zero-computation experts). Every
// family runs again with bf16 experts and a bf16 wire (≤ 3e-2; the same experts chosen).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <string>

#include "client/reference/in_process_layer.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

struct ParityCase {
  std::string name;
  uint32_t experts, topK;
  std::vector<std::vector<uint32_t>> shards;
  std::string modelType = "mixtral";
  bool normTopkProb = false;  // families other than Mixtral
  uint32_t sharedIntermediate = 0;
  uint32_t decoderSparseStep = 1;
  uint32_t layers = 2;
  uint32_t nGroup = 1, topkGroup = 1;  // DeepSeek
  float routedScaling = 1.0f;
  uint32_t firstKDense = 0;
  RoutingOptions routing = {};
  int sharedExpertShard = -1;
  uint32_t moeExpertInterval = 1;  // MoE++
  bool moeMixtralGating = false;
  bool moeLogitsNorm = false;
  std::string dtype = "f32";  // model.dtype
  std::string wire = "f32";   // router.wire_dtype
};

// gtest prints a failing case by name rather than as a byte dump.
void PrintTo(const ParityCase& c, std::ostream* os) {
  *os << c.name;
}

class ParityTest : public ::testing::TestWithParam<ParityCase> {};

// The per-token expert sets of a reply's routing and of the reference, compared token by token
// (order among equal scores is not part of the contract, the set is).
void expectSameExperts(const TestClient::ForwardResponse& reply,
                       const client::ReferenceRouting& want, uint32_t T) {
  auto routing = reply.getRouting();
  ASSERT_EQ(routing.getK(), want.k);
  const uint32_t k = want.k;
  ASSERT_EQ(routing.getExperts().size(), size_t{T} * k);
  uint32_t mismatches = 0, firstBad = UINT32_MAX;
  for (uint32_t t = 0; t < T; ++t) {
    std::vector<std::pair<uint32_t, bool>> got, ref;
    for (uint32_t j = 0; j < k; ++j) {
      const size_t at = size_t{t} * k + j;
      got.emplace_back(routing.getExperts()[at], routing.getDropped()[at]);
      ref.emplace_back(want.ids[at], want.dropped.empty() ? false : want.dropped[at] != 0);
    }
    std::sort(got.begin(), got.end());
    std::sort(ref.begin(), ref.end());
    if (got != ref) {
      ++mismatches;
      firstBad = std::min(firstBad, t);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "tokens routed differently from the reference; first: token "
                            << firstBad;
}

// Rows the cluster must send: one per (token, shard holding one of its kept FFN experts), plus
// every token to the shared expert's shard. Zero-computation experts cost no row.
// The fewest and the most token rows the router can send for this routing: per token, the
// distinct shards its experts land on, over every choice of replica (the router picks replicas by
// load, so with replicated experts the exact count depends on it; without, min == max).
std::pair<uint32_t, uint32_t> rowsSentBounds(const client::ReferenceRouting& r,
                                             const ModelConfig& m, const ClusterSpec& spec,
                                             uint32_t T) {
  uint32_t lo = 0, hi = 0;
  for (uint32_t t = 0; t < T; ++t) {
    std::vector<std::vector<size_t>> holders;  // per kept FFN assignment: the shards holding it
    for (uint32_t j = 0; j < r.k; ++j) {
      const size_t at = size_t{t} * r.k + j;
      if (r.ids[at] >= m.numFfnExperts || (!r.dropped.empty() && r.dropped[at])) continue;
      holders.emplace_back();
      for (size_t s = 0; s < spec.shardExperts.size(); ++s) {
        const auto& held = spec.shardExperts[s];
        if (std::find(held.begin(), held.end(), r.ids[at]) != held.end())
          holders.back().push_back(s);
      }
    }
    size_t best = SIZE_MAX, worst = 0, choices = 1;
    for (const auto& h : holders) choices *= h.size();
    for (size_t c = 0; c < choices; ++c) {  // every combination of replicas
      std::set<size_t> shards;
      size_t rest = c;
      for (const auto& h : holders) {
        shards.insert(h[rest % h.size()]);
        rest /= h.size();
      }
      if (spec.sharedExpertShard >= 0) shards.insert(static_cast<size_t>(spec.sharedExpertShard));
      best = std::min(best, shards.size());
      worst = std::max(worst, shards.size());
    }
    lo += static_cast<uint32_t>(best);
    hi += static_cast<uint32_t>(worst);
  }
  return {lo, hi};
}

TEST_P(ParityTest, ClusterMatchesInProcessLayer) {
  const ParityCase& pc = GetParam();
  ClusterSpec spec;
  spec.model.hiddenSize = 64;
  spec.model.intermediateSize = 96;
  spec.model.numExperts = pc.experts;
  spec.model.topK = pc.topK;
  spec.model.numLayers = pc.layers;
  spec.model.seed = 11 + pc.topK;
  spec.model.modelType = pc.modelType;
  spec.model.normTopkProb = pc.normTopkProb;
  spec.model.sharedIntermediateSize = pc.sharedIntermediate;
  spec.model.decoderSparseStep = pc.decoderSparseStep;
  spec.model.nGroup = pc.nGroup;
  spec.model.topkGroup = pc.topkGroup;
  spec.model.routedScalingFactor = pc.routedScaling;
  spec.model.firstKDenseReplace = pc.firstKDense;
  spec.model.moeExpertInterval = pc.moeExpertInterval;
  spec.model.moeMixtralGating = pc.moeMixtralGating;
  spec.model.moeLogitsNorm = pc.moeLogitsNorm;
  spec.model.noiseWeights = pc.routing.noisyTopk;
  spec.shardExperts = pc.shards;
  spec.routing = pc.routing;
  spec.sharedExpertShard = pc.sharedExpertShard;
  spec.modelYaml = "  dtype: " + pc.dtype + "\n";
  spec.routerYaml = "  wire_dtype: " + pc.wire + "\n";
  // bf16 experts or rows: activations are rounded to 8 significant bits at each GEMM input (the
  // reference computes in double on the same weights), so ~2^-8 relative, not fp32's 1e-5.
  const double tolerance = pc.dtype == "bf16" || pc.wire == "bf16" ? 3e-2 : 1e-5;
  const std::string yaml = writeCluster("parity-" + pc.name, spec);
  auto cluster = startCluster(yaml);
  ASSERT_TRUE(cluster);

  auto backend = kernels::createBackend(kernels::BackendKind::kReference);
  ASSERT_TRUE(backend.isOk());
  auto ckpt = Checkpoint::open(cluster->config().modelPath);
  ASSERT_TRUE(ckpt.isOk()) << ckpt.error();
  const ModelConfig model = ckpt.value()->config();
  const std::vector<uint32_t> moeLayers = model.moeLayers;
  auto local = client::InProcessModel::load(cluster->config().modelPath, std::move(backend).value(),
                                            moeLayers, pc.routing);
  ASSERT_TRUE(local.isOk()) << local.error();

  TestClient client(cluster->routerAddress());
  const uint32_t H = spec.model.hiddenSize;
  for (uint32_t T : {1u, 7u, 256u, 1000u}) {
    // The same tokens go through the MoE layers in order, as in a model: each MoE++ layer gets
    // the previous MoE layer's logits, the cluster its own reply's and the reference its own.
    auto x = randomTokens(T, H, 1000 + T);
    std::vector<float> clusterLogits, referenceLogits;
    uint32_t zeroComputeOnlyTokens = 0;
    for (uint32_t layer : moeLayers) {
      SCOPED_TRACE("layer " + std::to_string(layer) + " T " + std::to_string(T));
      ForwardExtras extras;
      extras.returnRouting = true;
      extras.prevLogits = clusterLogits;
      auto reply = client.forward(layer, x, T, H, extras);
      ASSERT_TRUE(reply.value) << reply.error;
      auto got = outputValues(*reply.value);
      std::vector<float> want(size_t{T} * H);
      client::ReferenceRequest request;
      request.prevLogits = referenceLogits;
      client::ReferenceRouting routing;
      auto s = local.value()->forward(layer, x, T, want, request, &routing);
      ASSERT_TRUE(s.isOk()) << s.message();
      ASSERT_EQ(got.size(), want.size());
      double maxErr = 0, maxRef = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        maxErr = std::max(maxErr, std::fabs(double{got[i]} - want[i]));
        maxRef = std::max(maxRef, std::fabs(double{want[i]}));
      }
      EXPECT_GT(maxRef, 1e-3) << "outputs are trivially zero: the test would not catch anything";
      EXPECT_LE(maxErr / maxRef, tolerance) << "max relative error " << maxErr / maxRef;
      RecordProperty("max_rel_err_layer" + std::to_string(layer) + "_T" + std::to_string(T),
                     (std::ostringstream() << std::scientific << maxErr / maxRef).str());
      expectSameExperts(*reply.value, routing, T);

      auto stats = reply.value->getStats();
      EXPECT_EQ(stats.getTokens(), T);
      EXPECT_LE(stats.getShardCalls(), pc.shards.size());
      const auto [fewest, most] = rowsSentBounds(routing, model, spec, T);
      EXPECT_GE(stats.getRowsSent(), fewest);
      EXPECT_LE(stats.getRowsSent(), most);
      uint32_t dropped = 0, zeroCompute = 0;
      for (size_t at = 0; at < routing.ids.size(); ++at) {
        if (!routing.dropped.empty() && routing.dropped[at]) ++dropped;
        if (routing.ids[at] >= model.numFfnExperts) ++zeroCompute;
      }
      EXPECT_EQ(stats.getDroppedAssignments(), dropped);
      EXPECT_EQ(stats.getRouterRows(), zeroCompute);
      for (uint32_t t = 0; t < T; ++t) {
        bool anyFfn = false;
        for (uint32_t j = 0; j < routing.k; ++j)
          anyFfn = anyFfn || routing.ids[size_t{t} * routing.k + j] < model.numFfnExperts;
        zeroComputeOnlyTokens += anyFfn ? 0 : 1;
      }
      if (pc.routing.capacityFactor > 0 && T >= 256) {
        EXPECT_GT(dropped, 0u) << "capacity never bit: the case would not test dropping";
      }
      if (model.gatingResidual) {
        clusterLogits = gateLogitValues(*reply.value);
        ASSERT_EQ(clusterLogits.size(), routing.logits.size());
        double logitErr = 0;
        for (size_t i = 0; i < routing.logits.size(); ++i)
          logitErr = std::max(logitErr, std::fabs(double{clusterLogits[i]} - routing.logits[i]));
        EXPECT_LE(logitErr, 1e-4) << "gateLogits differ from the reference's";
        referenceLogits = routing.logits;
      }
    }
    if (model.numFfnExperts < model.numExperts && T >= 256) {
      // Tokens whose experts are all zero-computation ones must have cost no row at all; the
      // exact row count above proves it, provided such tokens occur.
      EXPECT_GT(zeroComputeOnlyTokens, 0u) << "no token used only zero-computation experts";
    }
  }
}

// MoE++: tokens whose two experts are both zero-computation ones (constant, copy, zero) are
// served by the router alone. A batch of only such tokens makes no shard call at all, and its
// output still matches the reference; mixed with FFN tokens, only the FFN tokens are sent.
TEST(ZeroComputeExperts, TokensOnZeroComputeExpertsCauseNoRpcTraffic) {
  ClusterSpec spec;
  spec.model.modelType = "MoE++";
  spec.model.hiddenSize = 64;
  spec.model.intermediateSize = 96;
  spec.model.numExperts = 10;  // FFN 0-5 on two shards; 6, 7 constant; 8 copy; 9 zero
  spec.model.topK = 2;
  spec.model.numLayers = 1;
  spec.shardExperts = {{0, 1, 2}, {3, 4, 5}};
  auto cluster = startCluster(writeCluster("zero-compute-rows", spec));
  ASSERT_TRUE(cluster);
  auto backend = kernels::createBackend(kernels::BackendKind::kReference);
  ASSERT_TRUE(backend.isOk());
  auto local =
      client::InProcessModel::load(cluster->config().modelPath, std::move(backend).value(), {0});
  ASSERT_TRUE(local.isOk()) << local.error();
  const uint32_t H = 64, T = 512;

  // Route a pool of tokens in-process and split it by whether a token needs any FFN expert.
  auto pool = randomTokens(T, H, 77);
  std::vector<float> y(size_t{T} * H);
  client::ReferenceRouting routing;
  ASSERT_TRUE(local.value()->forward(0, pool, T, y, {}, &routing).isOk());
  std::vector<float> zeroOnly, mixed;
  uint32_t nZero = 0, nMixed = 0;
  for (uint32_t t = 0; t < T; ++t) {
    const bool ffn = routing.ids[2 * t] < 6 || routing.ids[2 * t + 1] < 6;
    auto& dst = ffn ? mixed : zeroOnly;
    dst.insert(dst.end(), pool.begin() + size_t{t} * H, pool.begin() + size_t{t + 1} * H);
    (ffn ? nMixed : nZero) += 1;
  }
  ASSERT_GT(nZero, 0u) << "no token chose only zero-computation experts";
  ASSERT_GT(nMixed, 0u);

  TestClient c(cluster->routerAddress());
  auto reply = c.forward(0, zeroOnly, nZero, H, {});
  ASSERT_TRUE(reply.value) << reply.error;
  auto stats = reply.value->getStats();
  EXPECT_EQ(stats.getShardCalls(), 0u);
  EXPECT_EQ(stats.getRowsSent(), 0u);
  EXPECT_EQ(stats.getRouterRows(), 2 * nZero);
  std::vector<float> want(zeroOnly.size());
  ASSERT_TRUE(local.value()->forward(0, zeroOnly, nZero, want).isOk());
  auto got = outputValues(*reply.value);
  double maxErr = 0, maxRef = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    maxErr = std::max(maxErr, std::fabs(double{got[i]} - want[i]));
    maxRef = std::max(maxRef, std::fabs(double{want[i]}));
  }
  EXPECT_GT(maxRef, 1e-3);
  EXPECT_LE(maxErr / maxRef, 1e-5);

  // The whole pool: rows go out for the FFN tokens only (each to at most its two shards).
  auto all = c.forward(0, pool, T, H, {});
  ASSERT_TRUE(all.value) << all.error;
  EXPECT_GE(all.value->getStats().getRowsSent(), nMixed);
  EXPECT_LE(all.value->getStats().getRowsSent(), 2 * nMixed);
}

RoutingOptions noisy(uint64_t seed) {
  RoutingOptions r;
  r.noisyTopk = true;
  r.noiseSeed = seed;
  return r;
}

RoutingOptions capped(double factor, bool renormalize) {
  RoutingOptions r;
  r.capacityFactor = factor;
  r.capacityRenormalize = renormalize;
  return r;
}

std::vector<ParityCase> f32Cases() {
  return {ParityCase{"k1_one_shard", 4, 1, {{0, 1, 2, 3}}},
          ParityCase{"k2_one_shard", 4, 2, {{0, 1, 2, 3}}},
          ParityCase{"k1_two_shards", 4, 1, {{0, 1}, {2, 3}}},
          ParityCase{"k2_two_shards", 4, 2, {{0, 1}, {2, 3}}},
          ParityCase{"k1_three_shards", 6, 1, {{0, 1}, {2, 3}, {4, 5}}},
          ParityCase{"k2_three_shards", 6, 2, {{0, 3}, {1, 4}, {2, 5}}},
          ParityCase{"k_equals_E", 4, 4, {{0, 1}, {2, 3}}},
          ParityCase{"k2_replicated_expert", 4, 2, {{0, 1, 2}, {2, 3}}},
          // Qwen2-MoE: no renormalization, a sigmoid-gated shared expert.
          ParityCase{"qwen2_moe", 4, 2, {{0, 1}, {2, 3}}, "qwen2_moe", false, 80},
          // Qwen3-MoE: renormalized; every other layer sparse (decoder_sparse_step 2).
          ParityCase{"qwen3_moe", 6, 2, {{0, 1, 2}, {3, 4, 5}}, "qwen3_moe", true, 0, 2, 4},
          // OLMoE: no renormalization.
          ParityCase{"olmoe", 4, 2, {{0, 1}, {2, 3}}, "olmoe", false},
          // DeepSeek-V2: softmax, greedy, × routed_scaling_factor, one shared expert,
          // the first layer dense.
          ParityCase{
              "deepseek_v2", 4, 2, {{0, 1}, {2, 3}}, "deepseek_v2", false, 96, 1, 3, 1, 1, 2.0f, 1},
          // DeepSeek-V3: sigmoid + bias, 4 groups keep 2 by top-2 sums, normalized,
          // scaled, two shared experts (192 = 2 × 96).
          ParityCase{"deepseek_v3",
                     8,
                     3,
                     {{0, 1, 2, 3}, {4, 5}, {6, 7}},
                     "deepseek_v3",
                     true,
                     /*sharedIntermediate=*/192,
                     1,
                     2,
                     /*nGroup=*/4,
                     /*topkGroup=*/2,
                     2.5f},
          // DeepSeek-V3 again with its shared expert on a shard (shard 2 sees every token).
          ParityCase{.name = "deepseek_v3_shared_on_shard",
                     .experts = 8,
                     .topK = 3,
                     .shards = {{0, 1, 2, 3}, {4, 5}, {6, 7}},
                     .modelType = "deepseek_v3",
                     .normTopkProb = true,
                     .sharedIntermediate = 192,
                     .layers = 2,
                     .nGroup = 4,
                     .topkGroup = 2,
                     .routedScaling = 2.5f,
                     .sharedExpertShard = 2},
          // Qwen2-MoE's sigmoid-gated shared expert on a shard: the gate travels as the weight.
          ParityCase{.name = "qwen2_moe_shared_on_shard",
                     .experts = 4,
                     .topK = 2,
                     .shards = {{0, 1}, {2, 3}},
                     .modelType = "qwen2_moe",
                     .sharedIntermediate = 80,
                     .sharedExpertShard = 0},
          // MoE++: 6 FFN experts + 4 zero-computation ones, two-layer gate, residual across 3
          // MoE layers, inputs scaled by k.
          ParityCase{.name = "moe_plus_plus",
                     .experts = 10,
                     .topK = 2,
                     .shards = {{0, 1, 2}, {3, 4, 5}},
                     .modelType = "MoE++",
                     .layers = 3},
          // MoE++ with mixtral gating (no zero-expert masking, no input scaling), logits norm and
          // every second layer dense.
          ParityCase{.name = "moe_plus_plus_mixtral_gating",
                     .experts = 8,
                     .topK = 2,
                     .shards = {{0, 1}, {2, 3}},
                     .modelType = "MoE++",
                     .layers = 4,
                     .moeExpertInterval = 2,
                     .moeMixtralGating = true,
                     .moeLogitsNorm = true},
          // Yuan 2.0-M32: the attention router, top-2 renormalized.
          ParityCase{.name = "yuan",
                     .experts = 8,
                     .topK = 2,
                     .shards = {{0, 1, 2, 3}, {4, 5, 6, 7}},
                     .modelType = "yuan",
                     .layers = 2},
          // Noisy top-k on Mixtral, seeded.
          ParityCase{.name = "mixtral_noisy_topk",
                     .experts = 8,
                     .topK = 2,
                     .shards = {{0, 1, 2, 3}, {4, 5, 6, 7}},
                     .routing = noisy(1234)},
          // Capacity factor 0.5: overflow dropped, weights as they were.
          ParityCase{.name = "mixtral_capacity",
                     .experts = 4,
                     .topK = 2,
                     .shards = {{0, 1}, {2, 3}},
                     .routing = capped(0.5, false)},
          // Capacity with renormalization, on OLMoE.
          ParityCase{.name = "olmoe_capacity_renormalized",
                     .experts = 4,
                     .topK = 2,
                     .shards = {{0, 1}, {2, 3}},
                     .modelType = "olmoe",
                     .routing = capped(0.75, true)}};
}

// Each family once more with bf16 experts (model.dtype) and bf16 rows on the wire; Mixtral also
// with bf16 experts over an f32 wire. Routing must not change (gate scores stay fp32).
std::vector<ParityCase> bf16Cases() {
  std::vector<ParityCase> out;
  for (ParityCase c : f32Cases()) {
    for (const char* name :
         {"k2_two_shards", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3",
          "deepseek_v3_shared_on_shard", "moe_plus_plus", "yuan"}) {
      if (c.name != name) continue;
      c.dtype = "bf16";
      if (c.name == "k2_two_shards") {
        ParityCase f32Wire = c;
        f32Wire.name += "_bf16_wire_f32";
        out.push_back(f32Wire);
      }
      c.wire = "bf16";
      c.name += "_bf16";
      out.push_back(c);
    }
  }
  return out;
}

std::string caseName(const ::testing::TestParamInfo<ParityCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Placements, ParityTest, ::testing::ValuesIn(f32Cases()), caseName);
INSTANTIATE_TEST_SUITE_P(Bf16, ParityTest, ::testing::ValuesIn(bf16Cases()), caseName);

}  // namespace
}  // namespace moe::testing
