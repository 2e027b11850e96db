// InProcessModel implementation.
#include "client/in_process_layer.h"

#include <cmath>
#include <vector>

#include "client/reference_routing.h"
#include "kernels/moe_layer.h"

namespace moe::client {

Result<std::unique_ptr<InProcessModel>> InProcessModel::load(
    const std::string& checkpointDir, std::unique_ptr<kernels::Backend> backend,
    const std::vector<uint32_t>& layers) {
  auto ckpt = Checkpoint::open(checkpointDir);
  if (!ckpt) return makeError(ckpt.error());
  std::unique_ptr<InProcessModel> m(new InProcessModel());
  m->config_ = ckpt.value()->config();
  m->backend_ = std::move(backend);
  const auto& c = m->config_;
  for (uint32_t layer : layers) {
    Layer l;
    auto g = ckpt.value()->gateWeight(layer);
    if (!g) return makeError(g.error());
    auto gate = m->backend_->upload(g.value(), c.numExperts, c.hiddenSize);
    if (!gate) return makeError(gate.error());
    l.gate = std::move(gate).value();
    for (uint32_t e = 0; e < c.numExperts; ++e) {
      auto t = ckpt.value()->expert(layer, e);
      if (!t) return makeError(t.error());
      auto resident =
          kernels::uploadExpert(*m->backend_, t.value(), c.intermediateSize, c.hiddenSize);
      if (!resident) return makeError(resident.error());
      l.experts.push_back(resident.value().view());
      l.resident.push_back(std::move(resident).value());
    }
    if (c.hasScoreCorrectionBias) {
      auto b = ckpt.value()->scoreCorrectionBias(layer);
      if (!b) return makeError(b.error());
      l.bias = std::move(b).value();
    }
    if (c.sharedIntermediateSize > 0) {
      auto t = ckpt.value()->sharedExpert(layer);
      if (!t) return makeError(t.error());
      auto shared =
          kernels::uploadExpert(*m->backend_, t.value(), c.sharedIntermediateSize, c.hiddenSize);
      if (!shared) return makeError(shared.error());
      l.shared = std::move(shared).value();
      if (c.sharedExpertGated) {
        auto g = ckpt.value()->sharedExpertGate(layer);
        if (!g) return makeError(g.error());
        auto gate = m->backend_->upload(g.value(), 1, c.hiddenSize);
        if (!gate) return makeError(gate.error());
        l.sharedGate = std::move(gate).value();
      }
    }
    m->layers_.emplace(layer, std::move(l));
  }
  return m;
}

Status InProcessModel::forward(uint32_t layer, std::span<const float> x, size_t T,
                               std::span<float> y) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) return Status::error("layer " + std::to_string(layer) + " not loaded");
  const Layer& l = it->second;
  const size_t H = config_.hiddenSize;
  if (isDeepseekFamily(config_.family)) {
    std::vector<float> logits(T * config_.numExperts);
    if (auto s = backend_->linear(*l.gate, x, T, logits); !s) return s;
    std::vector<uint32_t> ids;
    std::vector<float> weights;
    referenceDeepseekRoute(config_, logits, T, l.bias, ids, weights);
    if (auto s = kernels::moeExpertsInProcess(*backend_, l.experts, x, T, H, config_.topK, ids,
                                              weights, y);
        !s) {
      return s;
    }
  } else if (auto s = kernels::moeLayerInProcess(*backend_, *l.gate, l.experts, x, T, H,
                                                 config_.topK, config_.normTopkProb, y);
             !s) {
    return s;
  }
  if (!l.shared) return Status::ok();
  // The shared expert, written out op by op (not through expertFfn, which the cluster uses).
  const size_t I = config_.sharedIntermediateSize;
  std::vector<float> h1(T * I), h3(T * I), h(T * I), o(T * H), g(T, 0.0f);
  for (auto s :
       {backend_->linear(*l.shared->w1, x, T, h1), backend_->linear(*l.shared->w3, x, T, h3),
        backend_->swiglu(h1, h3, h), backend_->linear(*l.shared->w2, h, T, o)}) {
    if (!s) return s;
  }
  if (l.sharedGate) {
    if (auto s = backend_->linear(*l.sharedGate, x, T, g); !s) return s;
  }
  for (size_t t = 0; t < T; ++t) {
    const float w = l.sharedGate ? 1.0f / (1.0f + std::exp(-g[t])) : 1.0f;
    for (size_t i = 0; i < H; ++i) y[t * H + i] += w * o[t * H + i];
  }
  return Status::ok();
}

}  // namespace moe::client
