// SharedExpert: the always-on expert of a layer, evaluated on the router next to gating:
// y = g(x) · FFN_shared(x), with g = sigmoid(x·w_gateᵀ) for Qwen2-MoE and g = 1 for DeepSeek.
// It runs through the backend's grouped FFN as one segment over every token, weighted by g.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/checkpoint.h"
#include "kernels/backend.h"
#include "kernels/resident_expert.h"

namespace moe::router {

class SharedExpert {
 public:
  // Loads layer `layer`'s shared expert (and its gate, when the model gates it) onto `backend`.
  static Result<std::unique_ptr<SharedExpert>> load(kernels::Backend& backend,
                                                    const Checkpoint& ckpt, uint32_t layer);

  // out = the shared contribution for x. x: [T, H], out: [T, H] (overwritten).
  Status compute(kernels::Backend& backend, std::span<const float> x, uint32_t T,
                 std::span<float> out) const;

 private:
  kernels::ResidentExpert ffn_;
  std::unique_ptr<kernels::Matrix> gate_;  // [1, H], or null when ungated
  uint32_t hidden_ = 0;
};

}  // namespace moe::router
