// SharedExpert: the always-on expert of a layer: y = g(x) · FFN_shared(x), with
// g = sigmoid(x·w_gateᵀ) for Qwen2-MoE and g = 1 for DeepSeek. The router always computes g; the
// FFN runs on the router (through the backend's grouped FFN, one segment over every token) unless
// a shard holds it (shards[].shared_expert), in which case g travels as the segment's weights.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "kernels/backend.h"
#include "kernels/resident_expert.h"

namespace moe::router {

class SharedExpert {
 public:
  // Loads layer `layer`'s shared-expert gate (when the model gates it) and, when `withFfn`, its
  // FFN onto `backend`, resident in `dtype` (model.dtype; the sigmoid gate stays fp32).
  static Result<std::unique_ptr<SharedExpert>> load(kernels::Backend& backend,
                                                    const Checkpoint& ckpt, uint32_t layer,
                                                    bool withFfn, DType dtype = DType::kF32);

  // g(x) per token: [T].
  Result<std::vector<float>> weights(kernels::Backend& backend, std::span<const float> x,
                                     uint32_t T) const;

  // Whether the FFN was loaded here (no shard held it at start-up).
  bool hasFfn() const { return hasFfn_; }

  // out = the shared contribution for x. x: [T, H], out: [T, H] (overwritten). Needs the FFN.
  Status compute(kernels::Backend& backend, std::span<const float> x, uint32_t T,
                 std::span<float> out) const;

 private:
  kernels::ResidentExpert ffn_;
  std::unique_ptr<kernels::Matrix> gate_;  // [1, H], or null when ungated
  uint32_t hidden_ = 0;
  bool hasFfn_ = false;
};

}  // namespace moe::router
