// End-to-end parity over real processes: router + 1–3 shards on loopback must return what an
// in-process computation of the same layer (plain reference kernels) returns, for T ∈ {1, 7, 256,
// 1000}, k ∈ {1, 2, E}, with and without a replicated expert.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>

#include "client/in_process_layer.h"
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
};

class ParityTest : public ::testing::TestWithParam<ParityCase> {};

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
  spec.shardExperts = pc.shards;
  const std::string yaml = writeCluster("parity-" + pc.name, spec);
  auto cluster = startCluster(yaml);
  ASSERT_TRUE(cluster);

  auto backend = kernels::createBackend(kernels::BackendKind::kReference);
  ASSERT_TRUE(backend.isOk());
  auto ckpt = Checkpoint::open(cluster->config().modelPath);
  ASSERT_TRUE(ckpt.isOk()) << ckpt.error();
  const std::vector<uint32_t> moeLayers = ckpt.value()->config().moeLayers;
  auto local = client::InProcessModel::load(cluster->config().modelPath, std::move(backend).value(),
                                            moeLayers);
  ASSERT_TRUE(local.isOk()) << local.error();

  TestClient client(cluster->routerAddress());
  const uint32_t H = spec.model.hiddenSize;
  for (uint32_t layer : moeLayers) {
    for (uint32_t T : {1u, 7u, 256u, 1000u}) {
      SCOPED_TRACE("layer " + std::to_string(layer) + " T " + std::to_string(T));
      auto x = randomTokens(T, H, 1000 * layer + T);
      auto reply = client.forward(layer, x, T, H);
      ASSERT_TRUE(reply.value) << reply.error;
      auto got = outputValues(*reply.value);
      std::vector<float> want(size_t{T} * H);
      ASSERT_TRUE(local.value()->forward(layer, x, T, want).isOk());
      ASSERT_EQ(got.size(), want.size());
      double maxErr = 0, maxRef = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        maxErr = std::max(maxErr, std::fabs(double{got[i]} - want[i]));
        maxRef = std::max(maxRef, std::fabs(double{want[i]}));
      }
      EXPECT_LE(maxErr, 1e-4) << "max_abs_err " << maxErr;
      RecordProperty("max_abs_err_layer" + std::to_string(layer) + "_T" + std::to_string(T),
                     (std::ostringstream() << std::scientific << maxErr).str());
      EXPECT_GT(maxRef, 1e-3) << "outputs are trivially zero: the test would not catch anything";
      auto stats = reply.value->getStats();
      EXPECT_EQ(stats.getTokens(), T);
      EXPECT_GE(stats.getShardCalls(), 1u);
      EXPECT_LE(stats.getShardCalls(), pc.shards.size());
      // A row goes to a shard at most once, so no more than T rows per shard called.
      EXPECT_LE(stats.getRowsSent(), T * stats.getShardCalls());
      EXPECT_GE(stats.getRowsSent(), T);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Placements, ParityTest,
    ::testing::Values(
        ParityCase{"k1_one_shard", 4, 1, {{0, 1, 2, 3}}},
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
                   2.5f}),
    [](const ::testing::TestParamInfo<ParityCase>& info) { return info.param.name; });

}  // namespace
}  // namespace moe::testing
