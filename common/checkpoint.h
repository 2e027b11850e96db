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

// The model facts the cluster needs, read from config.json (Mixtral field names).
struct ModelConfig {
  std::string modelType;            // "mixtral"
  uint32_t hiddenSize = 0;          // hidden_size
  uint32_t intermediateSize = 0;    // intermediate_size
  uint32_t numExperts = 0;          // num_local_experts
  uint32_t topK = 0;                // num_experts_per_tok
  uint32_t numLayers = 0;           // num_hidden_layers
  std::vector<uint32_t> moeLayers;  // layers with a sparse MoE block (all, for Mixtral)
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

  // Mixtral tensor names: model.layers.{L}.block_sparse_moe.gate.weight  [E, H]
  //                       model.layers.{L}.block_sparse_moe.experts.{E}.w{1,2,3}.weight
  Result<std::vector<float>> gateWeight(uint32_t layer) const;
  Result<ExpertTensors> expert(uint32_t layer, uint32_t expert) const;

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

// Synthetic Mixtral-layout checkpoint, deterministic from `seed` (same seed ⇒ same bytes).
struct SyntheticModelSpec {
  uint32_t hiddenSize = 1024;
  uint32_t intermediateSize = 3584;
  uint32_t numExperts = 8;
  uint32_t topK = 2;
  uint32_t numLayers = 2;
  uint64_t seed = 1;
  DType dtype = DType::kBF16;
  uint32_t numFiles = 1;  // >1 writes model-0000i-of-0000n.safetensors + index.json
};
Status writeSyntheticCheckpoint(const SyntheticModelSpec& spec, const std::string& dir);

}  // namespace moe
