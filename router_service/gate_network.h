// GateNetwork: one MoE layer's router network, from tokens to logits over the experts, in the
// form the model family uses (DESIGN.md §6):
//   linear (most families)      s = x·Wgᵀ
//   MoE++ two-layer gate        s = W2·tanh(W1·x)
//   Yuan 2.0-M32 attention      [q;k;v] = Wqkv·x, s_i = Σ_j softmax_j(q_i·k_j)·v_j
// plus MoE++'s gating residual s += Wmap·s_prev, and noisy top-k's noise term when configured.
// Every product runs on the CPU through kernels::linearRowInvariant, so a token's logits do not
// depend on which other tokens share its batch (the router merges concurrent requests); gate
// matrices are small next to the experts, so this costs little.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include <string>
#include <vector>
#include "common/checkpoint.h"
#include "common/config.h"

namespace moe::router {

class GateNetwork {
 public:
  // Loads layer `layer`'s gate weights (and W_noise when routing.noisyTopk).
  static Result<std::unique_ptr<GateNetwork>> load(const Checkpoint& ckpt, uint32_t layer,
                                                   const RoutingOptions& routing);

  // A plain linear gate s = x·Wgᵀ over Wg [E, H] row-major (tests build routers this way).
  static std::unique_ptr<GateNetwork> linear(std::vector<float> wg, uint32_t E, uint32_t H);

  // logits [T, E] for x [T, H], without the gating residual.
  Status logits(std::span<const float> x, uint32_t T, std::span<float> out) const;

  // MoE++ gating residual: logits [T, E] += prev [T, E] (the previous MoE layer's) · Wmapᵀ.
  Status addResidual(std::span<const float> prev, uint32_t T, std::span<float> logits) const;

  // Noisy top-k: logits[t, i] += routingNoise(seed, layer, t, i) · softplus((x·W_noiseᵀ)[t, i]),
  // t the token's index within its own request (x is that request's rows only).
  Status addNoise(std::span<const float> x, uint32_t T, uint64_t seed, uint32_t layer,
                  std::span<float> logits) const;

  bool hasResidual() const { return !residualMap_.data.empty(); }
  // The largest |x| a hidden value may have so that the first gate matrix cannot overflow float32
  // (H · max|W| · |x| stays 4× below FLT_MAX). Decode rejects larger values: a client's input, not
  // a shard, is what overflows then.
  float inputBound() const { return inputBound_; }
  bool hasNoise() const { return !noise_.data.empty(); }
  uint32_t numExperts() const { return experts_; }

 private:
  // A row-major weight matrix [rows, cols] on the host.
  struct Weights {
    std::vector<float> data;
    uint32_t rows = 0, cols = 0;
    // y [T, rows] = x [T, cols] · dataᵀ; `what` names the matrix in a shape error.
    Status apply(std::span<const float> x, uint32_t T, std::span<float> y, const char* what) const;
  };
  static Result<Weights> named(Result<std::vector<float>> weights, uint32_t rows, uint32_t cols,
                               const std::string& what);

  float computeInputBound() const;
  GateKind kind_ = GateKind::kLinear;
  float inputBound_ = 0;
  uint32_t experts_ = 0;
  Weights first_;            // linear Wg [E,H] | W1 [8E,H] | Wqkv [3E,H]
  Weights second_;           // two-layer gate W2 [E, 8E]
  Weights residualMap_;      // MoE++ gate_map [E, E]
  Weights noise_;            // W_noise [E, H]
  std::vector<float> bias_;  // [E] the router's own bias (gpt-oss), or empty
};

}  // namespace moe::router
