// RouterModel loading and the per-layer view; see router_model.h.
#include "router_service/router_model.h"

#include <algorithm>

#include "common/model_fingerprint.h"
#include "kernels/device_backend.h"

namespace moe::router {

Result<std::unique_ptr<RouterModel>> RouterModel::load(const ClusterConfig& cluster) {
  auto ckpt = Checkpoint::open(cluster.modelPath);
  if (!ckpt) return makeError(ckpt.status());
  auto m = std::make_unique<RouterModel>();
  m->cluster = cluster;
  m->model = ckpt.value()->config();
  auto fingerprint = modelFingerprint(cluster.modelPath);
  if (!fingerprint) return makeError(fingerprint.status());
  m->fingerprint = std::move(fingerprint).value();
  if (auto s = validatePlacement(cluster, m->model); !s) return makeError(s);
  if (auto s = validateLimits(cluster, m->model); !s) return makeError(s);
  const uint64_t batchBytes =
      uint64_t{cluster.router.maxTokens} * m->model.hiddenSize * sizeof(float);
  if (batchBytes > (uint64_t{1} << 29)) {
    return makeError(
        StatusCode::kFailedPrecondition,
        cluster.sourcePath + ": router.max_tokens " + std::to_string(cluster.router.maxTokens) +
            " × hidden " + std::to_string(m->model.hiddenSize) +
            " × 4 bytes exceeds the 512 MiB per-message limit; lower router.max_tokens");
  }
  auto backend = kernels::createBackendFor(cluster.router.device, cluster.router.threads);
  if (!backend)
    return makeError(StatusCode::kFailedPrecondition,
                     "router.device " + cluster.router.device.str() + ": " + backend.error());
  m->backend = std::move(backend).value();
  m->placement = std::make_shared<const Placement>(Placement::fromConfig(cluster, m->model));
  m->dtype = resolveModelDType(cluster.modelDtype, ckpt.value()->expertsDType());
  if (m->model.sharedIntermediateSize > 0 &&
      !m->backend->supports(kernels::Op::kExpertFfn, m->dtype)) {
    return makeError(StatusCode::kFailedPrecondition,
                     "router.device " + cluster.router.device.str() + ": backend " +
                         std::string(m->backend->name()) + " cannot compute experts in " +
                         std::string(dtypeName(m->dtype)) + " (model.dtype)");
  }
  for (uint32_t layer : m->model.moeLayers) {
    const bool sharedOnShard = std::any_of(
        cluster.shards.begin(), cluster.shards.end(),
        [layer](const ShardConfig& s) { return s.sharedExpert && s.servesLayer(layer); });
    auto gate = GateNetwork::load(*ckpt.value(), layer, cluster.routing);
    if (!gate) return makeError(gate.status());
    m->gates.emplace(layer, std::move(gate).value());
    if (m->model.routing.choiceBias) {
      auto b = ckpt.value()->scoreCorrectionBias(layer);
      if (!b) return makeError(b.status());
      m->bias.emplace(layer, std::move(b).value());
    }
    if (m->model.sharedIntermediateSize > 0) {
      auto shared = SharedExpert::load(*m->backend, *ckpt.value(), layer, !sharedOnShard, m->dtype);
      if (!shared) return makeError(shared.status());
      m->shared.emplace(layer, std::move(shared).value());
    }
    if (m->model.numFfnExperts < m->model.numExperts) {
      auto zero = ZeroComputeExperts::load(*ckpt.value(), layer);
      if (!zero) return makeError(zero.status());
      m->zeroCompute.emplace(layer, std::move(zero).value());
    }
  }
  return m;
}

std::optional<LayerModel> RouterModel::layerModel(uint32_t layer) const {
  auto gate = gates.find(layer);
  if (gate == gates.end()) return std::nullopt;
  std::optional<LayerModel> l(std::in_place);
  l->layer = layer;
  l->model = &model;
  l->routing = &cluster.routing;
  l->backend = backend.get();
  l->placement = placement.get();
  l->gate = gate->second.get();
  if (auto it = shared.find(layer); it != shared.end()) l->shared = it->second.get();
  if (auto it = bias.find(layer); it != bias.end()) l->bias = it->second;
  if (auto it = zeroCompute.find(layer); it != zeroCompute.end()) l->zero = it->second.get();
  return l;
}

}  // namespace moe::router
