// InProcessModel: the MoE layers of a checkpoint computed in this process, the straightforward
// way (kernels/moe_layer.h), to check what the cluster returns (`moe-client --check`, tests).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "kernels/backend.h"
#include "kernels/resident_expert.h"

namespace moe::client {

class InProcessModel {
 public:
  // Loads gate and experts of `layers` onto `backend`.
  static Result<std::unique_ptr<InProcessModel>> load(const std::string& checkpointDir,
                                                      std::unique_ptr<kernels::Backend> backend,
                                                      const std::vector<uint32_t>& layers);
  const ModelConfig& config() const { return config_; }
  // y[T, H] = the MoE layer applied to x[T, H]: softmax top-k (renormalized when the model says
  // norm_topk_prob), plus the shared expert (sigmoid-gated for Qwen2-MoE) when it has one.
  Status forward(uint32_t layer, std::span<const float> x, size_t T, std::span<float> y);

 private:
  struct Layer {
    std::unique_ptr<kernels::Matrix> gate;
    std::vector<kernels::ResidentExpert> resident;
    std::vector<kernels::ExpertFfnWeights> experts;
    std::optional<kernels::ResidentExpert> shared;
    std::unique_ptr<kernels::Matrix> sharedGate;  // [1, H] or null
    std::vector<float> bias;                      // [E] DeepSeek-V3 score correction, or empty
  };
  ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
  std::map<uint32_t, Layer> layers_;
};

}  // namespace moe::client
