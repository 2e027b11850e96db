// The synthetic model generator: checkpoints in each supported family's HuggingFace layout, filled
// with deterministic pseudo-random weights, for moe-make-checkpoint, the tests and the benchmarks.
// Not part of the services: they only read checkpoints (common/checkpoint.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/result.h"

namespace moe {

// Synthetic checkpoint in a family's HuggingFace layout, deterministic from `seed` (same seed ⇒
// same bytes). Writes only the MoE-relevant tensors (gates, experts, shared experts, biases).
struct SyntheticModelSpec {
  std::string modelType = "mixtral";  // any ModelFamily's model_type
  uint32_t hiddenSize = 1024;
  uint32_t intermediateSize = 3584;  // routed expert width
  uint32_t numExperts = 8;
  uint32_t topK = 2;
  uint32_t numLayers = 2;
  uint64_t seed = 1;
  DType dtype = DType::kBF16;
  uint32_t numFiles = 1;  // >1 writes model-0000i-of-0000n.safetensors + index.json
  // Families other than Mixtral (ignored by it):
  bool normTopkProb = false;            // written as norm_topk_prob
  uint32_t sharedIntermediateSize = 0;  // Qwen2-MoE shared_expert_intermediate_size; DeepSeek:
                                        // n_shared_experts = this / intermediateSize
  uint32_t decoderSparseStep = 1;       // Qwen: decoder_sparse_step
  std::vector<uint32_t> mlpOnlyLayers;  // Qwen: mlp_only_layers
  uint32_t firstKDenseReplace = 0;      // DeepSeek: first_k_dense_replace
  uint32_t nGroup = 1, topkGroup = 1;   // DeepSeek
  float routedScalingFactor = 1.0f;     // DeepSeek
  // MoE++ (numExperts counts all N experts, the 4 zero-computation ones included; topK must be 2):
  uint32_t moeExpertInterval = 1;  // moe_expert_interval
  bool moeTwoLayerGate = true;     // moe_2layer_gate
  bool moeMixtralGating = false;   // moe_use_mixtral_gating
  bool moeFeatureNoMulTopk = false;
  bool moeLogitsNorm = false;
  // Any family: also write each MoE layer's w_noise.weight [E, H] for noisy top-k.
  bool noiseWeights = false;
};
Status writeSyntheticCheckpoint(const SyntheticModelSpec& spec, const std::string& dir);

}  // namespace moe
