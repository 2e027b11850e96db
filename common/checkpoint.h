// A HuggingFace-layout MoE checkpoint directory: config.json plus model.safetensors, or shards
// listed in model.safetensors.index.json. Each process asks only for the tensors it needs; weights
// are widened to fp32 on load and checked against the shapes config.json implies.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/safetensors.h"

namespace moe {

// Model families whose HuggingFace layout the cluster reads (config.json "model_type").
enum class ModelFamily { kMixtral, kQwen2Moe, kQwen3Moe, kOlmoe, kDeepseekV2, kDeepseekV3 };

inline bool isQwenFamily(ModelFamily f) {
  return f == ModelFamily::kQwen2Moe || f == ModelFamily::kQwen3Moe;
}
inline bool isDeepseekFamily(ModelFamily f) {
  return f == ModelFamily::kDeepseekV2 || f == ModelFamily::kDeepseekV3;
}

// The model facts the cluster needs, read from config.json with each family's field names.
struct ModelConfig {
  std::string modelType;  // "mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                          // "deepseek_v2", "deepseek_v3"
  ModelFamily family = ModelFamily::kMixtral;
  uint32_t hiddenSize = 0;          // hidden_size
  uint32_t intermediateSize = 0;    // one routed expert's FFN width: intermediate_size (Mixtral,
                                    // OLMoE) or moe_intermediate_size (Qwen, DeepSeek)
  uint32_t numExperts = 0;          // num_local_experts | num_experts | n_routed_experts
  uint32_t topK = 0;                // num_experts_per_tok
  uint32_t numLayers = 0;           // num_hidden_layers
  std::vector<uint32_t> moeLayers;  // layers with a sparse MoE block (the family's rule:
                                    // decoder_sparse_step/mlp_only_layers, first_k_dense_replace/
                                    // moe_layer_freq); other layers are dense
  bool normTopkProb = true;         // renormalize the selected weights (Mixtral: always)
  // Shared experts: one FFN of this width applied to every token (0: none). Qwen2-MoE:
  // shared_expert_intermediate_size, gated by sigmoid(x·w_gate); DeepSeek: n_shared_experts ×
  // moe_intermediate_size, ungated.
  uint32_t sharedIntermediateSize = 0;
  bool sharedExpertGated = false;
  // DeepSeek routing (defaults: plain softmax top-k).
  std::string scoringFunc = "softmax";  // "softmax" | "sigmoid"
  std::string topkMethod = "greedy";    // "greedy" | "group_limited_greedy" | "noaux_tc"
  uint32_t nGroup = 1;
  uint32_t topkGroup = 1;
  float routedScalingFactor = 1.0f;
  bool hasScoreCorrectionBias = false;  // DeepSeek-V3 gate.e_score_correction_bias [E]
};

struct ExpertTensors {
  std::vector<float> w1;  // [I, H]
  std::vector<float> w3;  // [I, H]
  std::vector<float> w2;  // [H, I]
};

class Checkpoint {
 public:
  // Reads and validates config.json and the safetensors header(s). Errors name the file and the
  // key or tensor at fault.
  static Result<std::unique_ptr<Checkpoint>> open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }

  // Each family's tensor names (Mixtral: ...block_sparse_moe.gate.weight and
  // ...experts.{E}.w1/w3/w2; the others: ...mlp.gate.weight and ...experts.{E}.gate_proj/up_proj/
  // down_proj). A dense layer or an expert id out of range is an error naming it.
  Result<std::vector<float>> gateWeight(uint32_t layer) const;          // [E, H]
  Result<ExpertTensors> expert(uint32_t layer, uint32_t expert) const;  // w1=gate, w3=up, w2=down
  // Shared expert FFN [Is, H]/[Is, H]/[H, Is] (Qwen2-MoE mlp.shared_expert.*, DeepSeek
  // mlp.shared_experts.*); an error when the model has none.
  Result<ExpertTensors> sharedExpert(uint32_t layer) const;
  Result<std::vector<float>> sharedExpertGate(uint32_t layer) const;     // [1, H] Qwen2-MoE
  Result<std::vector<float>> scoreCorrectionBias(uint32_t layer) const;  // [E] DeepSeek-V3

  // Any tensor by name, widened to fp32, with its shape checked ("tensor X: shape [a,b] expected,
  // file has [c,d]"; "tensor X missing from <dir>").
  Result<std::vector<float>> loadF32(const std::string& name,
                                     const std::vector<uint64_t>& expectedShape) const;

 private:
  Checkpoint() = default;
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> tensorFile_;
};

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
};
Status writeSyntheticCheckpoint(const SyntheticModelSpec& spec, const std::string& dir);

}  // namespace moe
