// ExpertStore loading.
#include "expert_service/expert_store.h"

namespace moe::expert {

Result<std::unique_ptr<ExpertStore>> ExpertStore::load(kernels::Backend& backend,
                                                       const Checkpoint& ckpt,
                                                       const ShardConfig& shard, DType dtype) {
  ExpertSource source;
  source.expert = [&ckpt](uint32_t layer, uint32_t e) { return ckpt.expert(layer, e); };
  source.shared = [&ckpt](uint32_t layer) { return ckpt.sharedExpert(layer); };
  return load(backend, ckpt.config(), source, shard, dtype);
}

Result<std::unique_ptr<ExpertStore>> ExpertStore::load(kernels::Backend& backend,
                                                       const ModelConfig& m,
                                                       const ExpertSource& source,
                                                       const ShardConfig& shard, DType dtype) {
  if (!backend.supports(kernels::Op::kExpertFfn, dtype)) {
    return makeError(StatusCode::kInvalidArgument,
                     "shard " + shard.name + ": backend " + std::string(backend.name()) +
                         " cannot compute experts in " + std::string(dtypeName(dtype)) +
                         " (model.dtype); use model.dtype: f32 there");
  }
  // One call's segments share weightOnInput, the shared expert's included: only an ungated one
  // (weight 1, FFN(1·x) = 1·FFN(x)) can ride along with a weight-on-input model (Llama 4's is).
  if (m.weightOnInput && shard.sharedExpert && m.sharedExpertGated) {
    return makeError(StatusCode::kInvalidArgument,
                     "shard " + shard.name +
                         ": a gated shared expert with the routing weight on the experts' input "
                         "is not supported; leave shared_expert off this shard");
  }
  auto store = std::make_unique<ExpertStore>();
  store->dtype_ = dtype;
  for (uint32_t layer : m.moeLayers) {
    if (!shard.servesLayer(layer)) continue;
    for (uint32_t e : shard.experts) {
      auto t = source.expert(layer, e);
      if (!t) return makeError(t.status());
      const std::string where = "layer " + std::to_string(layer) + " expert " + std::to_string(e);
      Resident res;
      if (auto s = store->add(backend, m, t.value(), where, res); !s) return makeError(s);
      store->weights_.emplace(std::make_pair(layer, e), std::move(res));
      store->byLayer_[layer].push_back(e);
    }
    if (shard.sharedExpert) {
      auto t = source.shared(layer);
      if (!t) return makeError(t.status());
      Resident res;
      if (auto s = store->addShared(backend, m, t.value(),
                                    "layer " + std::to_string(layer) + " shared expert", res);
          !s)
        return makeError(s);
      store->shared_.emplace(layer, std::move(res));
    }
  }
  return store;
}

Status ExpertStore::add(kernels::Backend& backend, const ModelConfig& model, const ExpertTensors& t,
                        const std::string& where, Resident& into) {
  auto resident = kernels::uploadRoutedExpert(backend, model, t, dtype_);
  if (!resident) return Status::error(where + ": " + resident.error());
  return keep(std::move(resident).value(), into);
}

Status ExpertStore::addShared(kernels::Backend& backend, const ModelConfig& model,
                              const ExpertTensors& t, const std::string& where, Resident& into) {
  auto resident = kernels::uploadSharedExpert(backend, model, t, dtype_);
  if (!resident) return Status::error(where + ": " + resident.error());
  return keep(std::move(resident).value(), into);
}

Status ExpertStore::keep(kernels::ResidentExpert resident, Resident& into) {
  into.matrices = std::move(resident);
  into.view = into.matrices.view();
  residentBytes_ += into.matrices.residentBytes();
  return Status::ok();
}

const kernels::ExpertFfnWeights* ExpertStore::findShared(uint32_t layer) const {
  auto it = shared_.find(layer);
  return it == shared_.end() ? nullptr : &it->second.view;
}

const kernels::ExpertFfnWeights* ExpertStore::find(uint32_t layer, uint32_t expert) const {
  auto it = weights_.find({layer, expert});
  return it == weights_.end() ? nullptr : &it->second.view;
}

bool ExpertStore::servesLayer(uint32_t layer) const {
  return byLayer_.count(layer) != 0;
}

}  // namespace moe::expert
