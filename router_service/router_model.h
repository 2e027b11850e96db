// RouterModel: everything the router loads at start-up (config, model, gate networks, shared
// experts, DeepSeek-V3 biases, MoE++ zero-computation experts, placement), immutable once
// serving but for the placement, which a reload replaces whole (a batch keeps the one it started
// with); and LayerModel, the borrowed view of one MoE layer that the route stage works on.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "kernels/backend.h"
#include "router_service/dispatch_plan.h"
#include "router_service/gate_network.h"
#include "router_service/shared_expert.h"
#include "router_service/zero_compute_experts.h"

namespace moe::router {

// One MoE layer as the route stage sees it.
struct LayerModel {
  uint32_t layer = 0;
  const ModelConfig* model = nullptr;
  const RoutingOptions* routing = nullptr;
  kernels::Backend* backend = nullptr;
  const Placement* placement = nullptr;
  const GateNetwork* gate = nullptr;
  const SharedExpert* shared = nullptr;      // null: the layer has no shared expert
  std::span<const float> bias;               // [E] DeepSeek-V3 score correction, or empty
  const ZeroComputeExperts* zero = nullptr;  // MoE++ layers only
};

struct RouterModel {
  ClusterConfig cluster;
  ModelConfig model;
  std::string fingerprint;    // modelFingerprint of the checkpoint: what every shard must report
  DType dtype = DType::kF32;  // model.dtype resolved: the experts' resident/compute dtype
  std::unique_ptr<kernels::Backend> backend;
  std::shared_ptr<const Placement> placement;  // replaced whole by a reload, never changed
  std::map<uint32_t, std::unique_ptr<GateNetwork>> gates;    // MoE layer -> its router network
  std::map<uint32_t, std::unique_ptr<SharedExpert>> shared;  // MoE layer -> its shared expert
  std::map<uint32_t, std::vector<float>> bias;  // MoE layer -> [E] score correction (DeepSeek-V3)
  std::map<uint32_t, std::unique_ptr<ZeroComputeExperts>> zeroCompute;  // MoE++ layers

  // Opens the checkpoint, checks the placement and loads every MoE layer's gate network, shared
  // expert (its FFN only when no shard holds it) and MoE++ zero-computation experts.
  static Result<std::unique_ptr<RouterModel>> load(const ClusterConfig& cluster);

  // The view of MoE layer `layer` with the current placement; null when it is not an MoE layer.
  std::optional<LayerModel> layerModel(uint32_t layer) const;
};

}  // namespace moe::router
