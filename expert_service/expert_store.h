// ExpertStore: the (layer, expert) FFN weights one shard serves, resident on its backend (GPU
// memory or host), with the model's expert activation and biases. Loaded once at start-up from the
// checkpoint, reading only this shard's tensors.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include "common/checkpoint.h"
#include "common/config.h"
#include "kernels/backend.h"
#include "kernels/resident_expert.h"

namespace moe::expert {

class ExpertStore {
 public:
  // Experts are held in `dtype` (model.dtype resolved); a backend that cannot compute experts
  // in it is an error naming both.
  static Result<std::unique_ptr<ExpertStore>> load(kernels::Backend& backend,
                                                   const Checkpoint& ckpt, const ShardConfig& shard,
                                                   DType dtype = DType::kF32);

  // Where the experts' tensors come from (a checkpoint, or a test's own tensors).
  struct ExpertSource {
    std::function<Result<ExpertTensors>(uint32_t layer, uint32_t expert)> expert;
    std::function<Result<ExpertTensors>(uint32_t layer)> shared;
  };
  // As above with the model and the tensors given separately.
  static Result<std::unique_ptr<ExpertStore>> load(kernels::Backend& backend,
                                                   const ModelConfig& model,
                                                   const ExpertSource& source,
                                                   const ShardConfig& shard,
                                                   DType dtype = DType::kF32);

  // nullptr when this shard does not hold (layer, expert).
  const kernels::ExpertFfnWeights* find(uint32_t layer, uint32_t expert) const;
  // The layer's shared expert, when this shard holds it (shards[].shared_expert); else nullptr.
  const kernels::ExpertFfnWeights* findShared(uint32_t layer) const;
  bool servesLayer(uint32_t layer) const;
  const std::map<uint32_t, std::vector<uint32_t>>& experts() const { return byLayer_; }
  // Bytes of expert weights held on the device, summed from the matrices' allocations.
  uint64_t residentBytes() const { return residentBytes_; }
  DType dtype() const { return dtype_; }

 private:
  struct Resident {
    kernels::ResidentExpert matrices;
    kernels::ExpertFfnWeights view{};
  };
  // Uploads one routed expert (the model's activation and biases) and accounts for its bytes.
  Status add(kernels::Backend& backend, const ModelConfig& model, const ExpertTensors& t,
             const std::string& where, Resident& into);
  // Uploads a shared expert (plain SwiGLU in every family) and accounts for its bytes.
  Status addShared(kernels::Backend& backend, const ModelConfig& model, const ExpertTensors& t,
                   const std::string& where, Resident& into);
  Status keep(kernels::ResidentExpert resident, Resident& into);
  DType dtype_ = DType::kF32;

  std::map<std::pair<uint32_t, uint32_t>, Resident> weights_;
  std::map<uint32_t, Resident> shared_;                // layer -> shared expert
  std::map<uint32_t, std::vector<uint32_t>> byLayer_;  // layer -> expert ids
  uint64_t residentBytes_ = 0;
};

}  // namespace moe::expert
