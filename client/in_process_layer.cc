// InProcessModel implementation.
#include "client/in_process_layer.h"

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
      auto w1 = m->backend_->upload(t.value().w1, c.intermediateSize, c.hiddenSize);
      auto w3 = m->backend_->upload(t.value().w3, c.intermediateSize, c.hiddenSize);
      auto w2 = m->backend_->upload(t.value().w2, c.hiddenSize, c.intermediateSize);
      for (auto* r : {&w1, &w3, &w2}) {
        if (!*r) return makeError(r->error());
      }
      l.experts.push_back({w1.value().get(), w3.value().get(), w2.value().get()});
      l.matrices.push_back(std::move(w1).value());
      l.matrices.push_back(std::move(w3).value());
      l.matrices.push_back(std::move(w2).value());
    }
    m->layers_.emplace(layer, std::move(l));
  }
  return m;
}

Status InProcessModel::forward(uint32_t layer, std::span<const float> x, size_t T,
                               std::span<float> y) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) return Status::error("layer " + std::to_string(layer) + " not loaded");
  return kernels::moeLayerInProcess(*backend_, *it->second.gate, it->second.experts, x, T,
                                    config_.hiddenSize, config_.topK, /*renormalize=*/true, y);
}

}  // namespace moe::client
