// The router networks of the reference layer (DESIGN.md §6), written op by op after the published
// code: the linear gate, MoE++'s two-layer tanh gate and gating residual (moe_plus_plus_layer.py
// Router), Yuan 2.0-M32's attention router (ParallelAttention_router), and noisy top-k's noise.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "kernels/backend.h"

namespace moe::client {

// One layer's gate weights, uploaded to the backend that computes them.
struct ReferenceGate {
  GateKind kind = GateKind::kLinear;
  uint32_t numExperts = 0;
  // kLinear: Wg [E, H]; kTwoLayerTanh: W1 [8E, H]; kAttention: Wqkv [3E, H] (query, key, value).
  std::unique_ptr<kernels::Matrix> w;
  std::unique_ptr<kernels::Matrix> w2;           // kTwoLayerTanh: W2 [E, 8E]
  std::unique_ptr<kernels::Matrix> residualMap;  // MoE++ gate_map [E, E], or null
  std::unique_ptr<kernels::Matrix> noise;        // W_noise [E, H] for noisy top-k, or null
  std::vector<float> bias;                       // gpt-oss router bias [E], or empty
};

// Uploads a checkpoint tensor [rows, cols], or passes the checkpoint's error on.
Result<std::unique_ptr<kernels::Matrix>> uploadTensor(kernels::Backend& b,
                                                      const Result<std::vector<float>>& tensor,
                                                      size_t rows, size_t cols);

// Reads the gate of `layer` for the model's GateKind, the MoE++ gate_map when the model has the
// gating residual, and W_noise when `noisy`.
Result<ReferenceGate> loadReferenceGate(const Checkpoint& ckpt, kernels::Backend& b, uint32_t layer,
                                        bool noisy);

// logits[T, E] (fp32) = the gate network on x[T, H], plus prevLogits · Wmapᵀ when prevLogits
// ([T, E]) is non-empty; an error when it is given to a gate without a gating residual.
Status referenceGateLogits(kernels::Backend& b, const ReferenceGate& gate, std::span<const float> x,
                           size_t T, std::span<const float> prevLogits, std::span<float> logits);

// Noisy top-k: logits[t, i] += routingNoise(seed, layer, t, i) · softplus((x · W_noiseᵀ)[t, i]).
Status addReferenceNoise(kernels::Backend& b, const ReferenceGate& gate, std::span<const float> x,
                         size_t T, uint64_t seed, uint32_t layer, std::span<float> logits);

}  // namespace moe::client
