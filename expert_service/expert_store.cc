// ExpertStore loading.
#include "expert_service/expert_store.h"

namespace moe::expert {

Result<std::unique_ptr<ExpertStore>> ExpertStore::load(kernels::Backend& backend,
                                                       const Checkpoint& ckpt,
                                                       const ShardConfig& shard) {
  const ModelConfig& m = ckpt.config();
  auto store = std::make_unique<ExpertStore>();
  for (uint32_t layer : m.moeLayers) {
    if (!shard.servesLayer(layer)) continue;
    for (uint32_t e : shard.experts) {
      auto t = ckpt.expert(layer, e);
      if (!t) return makeError(t.error());
      const std::string where = "layer " + std::to_string(layer) + " expert " + std::to_string(e);
      auto resident = kernels::uploadExpert(backend, t.value(), m.intermediateSize, m.hiddenSize);
      if (!resident) return makeError(where + ": " + resident.error());
      Resident res{std::move(resident).value(), {}};
      res.view = res.matrices.view();
      store->weights_.emplace(std::make_pair(layer, e), std::move(res));
      store->byLayer_[layer].push_back(e);
      store->residentBytes_ +=
          (t.value().w1.size() + t.value().w3.size() + t.value().w2.size()) * sizeof(float);
    }
  }
  return store;
}

const kernels::ExpertFfnWeights* ExpertStore::find(uint32_t layer, uint32_t expert) const {
  auto it = weights_.find({layer, expert});
  return it == weights_.end() ? nullptr : &it->second.view;
}

bool ExpertStore::servesLayer(uint32_t layer) const {
  return byLayer_.count(layer) != 0;
}

}  // namespace moe::expert
