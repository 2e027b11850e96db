// InProcessModel: the MoE layers of a checkpoint computed in this process, the straightforward
// way (kernels/moe_layer.h), to check what the cluster returns (`moe-client --check`, tests).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "client/reference/reference_gates.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "kernels/backend.h"
#include "kernels/resident_expert.h"

namespace moe::client {

// What one forward call may pass beyond the tokens.
struct ReferenceRequest {
  std::span<const float> prevLogits;  // [T, E] MoE++ gating residual (previous layer's logits)
  std::optional<uint64_t> noiseSeed;  // overrides RoutingOptions::noiseSeed for this call
  // [numFfnExperts] 1 where the expert can be served; empty: all. With experts missing, the
  // layer follows RoutingOptions::missingExpert (reference_missing.h).
  std::span<const uint8_t> available;
};

// What the layer decided, for checking the cluster's routing token by token.
struct ReferenceRouting {
  uint32_t k = 0;
  std::vector<uint32_t> ids;      // [T, k] experts chosen, in selection order
  std::vector<float> weights;     // [T, k] final weights (0 where dropped by capacity)
  std::vector<uint8_t> dropped;   // [T, k] 1 where the capacity cap dropped the assignment (or,
                                  // reference_missing.h, its expert had no replica left)
  std::vector<uint8_t> affected;  // [T] 1 where a token lost an expert (reference_missing.h);
                                  // empty when none did
  std::vector<float> logits;      // [T, E] gate logits incl. the MoE++ residual, without noise
};

class InProcessModel {
 public:
  // Loads gate and experts of `layers` onto `backend`; `routing` adds noisy top-k / capacity.
  static Result<std::unique_ptr<InProcessModel>> load(const std::string& checkpointDir,
                                                      std::unique_ptr<kernels::Backend> backend,
                                                      const std::vector<uint32_t>& layers,
                                                      const RoutingOptions& routing = {});
  const ModelConfig& config() const { return config_; }
  // y[T, H] = the MoE layer applied to x[T, H] with the family's routing (DESIGN.md §6): gate
  // network (linear, MoE++ two-layer tanh + residual, Yuan attention router), optional noise,
  // the family's selection and weights, optional capacity, FFN experts, MoE++ zero-computation
  // experts on k·x, plus the shared expert (sigmoid-gated for Qwen2-MoE) when it has one, the
  // sum halved where the shared expert is averaged in (Cohere2-MoE).
  Status forward(uint32_t layer, std::span<const float> x, size_t T, std::span<float> y,
                 const ReferenceRequest& request = {}, ReferenceRouting* routing = nullptr);

 private:
  struct Layer {
    ReferenceGate gate;
    std::vector<kernels::ResidentExpert> resident;   // FFN experts [numFfnExperts]
    std::vector<kernels::ExpertFfnWeights> experts;  // views of `resident`, indexed by id
    std::vector<ConstantExpertTensors> constants;    // MoE++ constant experts, host fp32
    std::optional<kernels::ResidentExpert> shared;
    std::unique_ptr<kernels::Matrix> sharedGate;  // [1, H] or null
    std::vector<float> bias;                      // [E] DeepSeek-V3 score correction, or empty
  };
  // The family's selection and weights (DESIGN.md §6) from the (noisy) logits [T, E].
  void select(const Layer& l, std::span<const float> logits, size_t T, ReferenceRouting& r) const;
  // The shared expert on x, added into y.
  Status addSharedExpert(const Layer& l, std::span<const float> x, size_t T, std::span<float> y);

  ModelConfig config_;
  RoutingOptions routing_;
  std::unique_ptr<kernels::Backend> backend_;
  std::map<uint32_t, Layer> layers_;
};

}  // namespace moe::client
