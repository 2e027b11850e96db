// GateNetwork: one MoE layer's router network, from tokens to logits over the experts, in the
// form the model family uses (DESIGN.md §6):
//   linear (most families)      s = x·Wgᵀ
//   MoE++ two-layer gate        s = W2·tanh(W1·x)
//   Yuan 2.0-M32 attention      [q;k;v] = Wqkv·x, s_i = Σ_j softmax_j(q_i·k_j)·v_j
// plus MoE++'s gating residual s += Wmap·s_prev, and noisy top-k's noise term when configured.
// Matrix products run on the router's backend; the per-token O(E²) attention and the
// elementwise steps run on the CPU.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/checkpoint.h"
#include "common/config.h"
#include "kernels/backend.h"

namespace moe::router {

class GateNetwork {
 public:
  // Loads layer `layer`'s gate weights (and W_noise when routing.noisyTopk) onto `backend`.
  static Result<std::unique_ptr<GateNetwork>> load(kernels::Backend& backend,
                                                   const Checkpoint& ckpt, uint32_t layer,
                                                   const RoutingOptions& routing);

  // A plain linear gate s = x·Wgᵀ over an uploaded Wg [E, H] (tests build routers this way).
  static std::unique_ptr<GateNetwork> linear(std::unique_ptr<kernels::Matrix> wg);

  // logits [T, E] for x [T, H]; `prev` is [T, E] (the previous MoE layer's logits) or empty.
  Status logits(kernels::Backend& backend, std::span<const float> x, uint32_t T,
                std::span<const float> prev, std::span<float> out) const;

  // Noisy top-k: logits[t, i] += routingNoise(seed, layer, t, i) · softplus((x·W_noiseᵀ)[t, i]).
  Status addNoise(kernels::Backend& backend, std::span<const float> x, uint32_t T, uint64_t seed,
                  uint32_t layer, std::span<float> logits) const;

  bool hasResidual() const { return residualMap_ != nullptr; }
  bool hasNoise() const { return noise_ != nullptr; }
  uint32_t numExperts() const { return experts_; }

 private:
  GateKind kind_ = GateKind::kLinear;
  uint32_t experts_ = 0;
  std::unique_ptr<kernels::Matrix> first_;        // linear Wg [E,H] | W1 [8E,H] | Wqkv [3E,H]
  std::unique_ptr<kernels::Matrix> second_;       // two-layer gate W2 [E, 8E]
  std::unique_ptr<kernels::Matrix> residualMap_;  // MoE++ gate_map [E, E]
  std::unique_ptr<kernels::Matrix> noise_;        // W_noise [E, H]
};

}  // namespace moe::router
