// GateNetwork implementation.
#include "router_service/gate_network.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/routing_noise.h"

namespace moe::router {
namespace {

Result<std::unique_ptr<kernels::Matrix>> uploadNamed(kernels::Backend& backend,
                                                     Result<std::vector<float>> weights,
                                                     uint32_t rows, uint32_t cols,
                                                     const std::string& what) {
  if (!weights) return makeError(weights.error());
  auto m = backend.upload(weights.value(), rows, cols);
  if (!m) return makeError(what + ": " + m.error());
  return std::move(m).value();
}

// Numerically stable log(1 + eˣ).
float softplus(float z) {
  return std::max(z, 0.0f) + std::log1p(std::exp(-std::fabs(z)));
}

// Yuan's ParallelAttention_router on one token: q, k, v ∈ ℝᴱ; out_i = Σ_j softmax_j(q_i·k_j)·v_j.
void attentionAcrossExperts(const float* q, const float* k, const float* v, uint32_t E, float* out,
                            std::vector<float>& scratch) {
  scratch.resize(E);
  for (uint32_t i = 0; i < E; ++i) {
    float m = -INFINITY;
    for (uint32_t j = 0; j < E; ++j) m = std::max(m, scratch[j] = q[i] * k[j]);
    float sum = 0, acc = 0;
    for (uint32_t j = 0; j < E; ++j) {
      const float a = std::exp(scratch[j] - m);
      sum += a;
      acc += a * v[j];
    }
    out[i] = acc / sum;
  }
}

}  // namespace

Result<std::unique_ptr<GateNetwork>> GateNetwork::load(kernels::Backend& backend,
                                                       const Checkpoint& ckpt, uint32_t layer,
                                                       const RoutingOptions& routing) {
  const ModelConfig& m = ckpt.config();
  const uint32_t E = m.numExperts, H = m.hiddenSize;
  const std::string where = "layer " + std::to_string(layer) + " ";
  auto g = std::make_unique<GateNetwork>();
  g->kind_ = m.gateKind;
  g->experts_ = E;
  Result<std::unique_ptr<kernels::Matrix>> first = makeError("");
  switch (m.gateKind) {
    case GateKind::kLinear:
      first = uploadNamed(backend, ckpt.gateWeight(layer), E, H, where + "gate");
      break;
    case GateKind::kTwoLayerTanh: {
      auto t = ckpt.twoLayerGate(layer);
      if (!t) return makeError(t.error());
      first = uploadNamed(backend, std::move(t.value().w1), 8 * E, H, where + "gate W1");
      auto second = uploadNamed(backend, std::move(t.value().w2), E, 8 * E, where + "gate W2");
      if (!second) return makeError(second.error());
      g->second_ = std::move(second).value();
      break;
    }
    case GateKind::kAttention:
      first = uploadNamed(backend, ckpt.attentionRouter(layer), 3 * E, H, where + "router qkv");
      break;
  }
  if (!first) return makeError(first.error());
  g->first_ = std::move(first).value();
  if (m.gatingResidual) {
    auto map = uploadNamed(backend, ckpt.gateResidualMap(layer), E, E, where + "gate_map");
    if (!map) return makeError(map.error());
    g->residualMap_ = std::move(map).value();
  }
  if (routing.noisyTopk) {
    auto noise = ckpt.noiseWeight(layer);
    if (!noise) {
      return makeError("routing.noisy_topk is on but the checkpoint has no noise weights: " +
                       noise.error());
    }
    auto w = uploadNamed(backend, std::move(noise), E, H, where + "w_noise");
    if (!w) return makeError(w.error());
    g->noise_ = std::move(w).value();
  }
  return g;
}

std::unique_ptr<GateNetwork> GateNetwork::linear(std::unique_ptr<kernels::Matrix> wg) {
  auto g = std::make_unique<GateNetwork>();
  g->kind_ = GateKind::kLinear;
  g->experts_ = static_cast<uint32_t>(wg->rows());
  g->first_ = std::move(wg);
  return g;
}

Status GateNetwork::logits(kernels::Backend& backend, std::span<const float> x, uint32_t T,
                           std::span<const float> prev, std::span<float> out) const {
  const uint32_t E = experts_;
  switch (kind_) {
    case GateKind::kLinear:
      if (auto s = backend.linear(*first_, x, T, out); !s)
        return Status::error("gate: " + s.message());
      break;
    case GateKind::kTwoLayerTanh: {
      std::vector<float> hidden(size_t{T} * first_->rows());
      if (auto s = backend.linear(*first_, x, T, hidden); !s)
        return Status::error("gate W1: " + s.message());
      for (float& h : hidden) h = std::tanh(h);
      if (auto s = backend.linear(*second_, hidden, T, out); !s)
        return Status::error("gate W2: " + s.message());
      break;
    }
    case GateKind::kAttention: {
      std::vector<float> qkv(size_t{T} * 3 * E), scratch;
      if (auto s = backend.linear(*first_, x, T, qkv); !s)
        return Status::error("attention router: " + s.message());
      for (uint32_t t = 0; t < T; ++t) {
        const float* row = qkv.data() + size_t{t} * 3 * E;
        attentionAcrossExperts(row, row + E, row + 2 * E, E, out.data() + size_t{t} * E, scratch);
      }
      break;
    }
  }
  if (!prev.empty()) {
    std::vector<float> residual(size_t{T} * E);
    if (auto s = backend.linear(*residualMap_, prev, T, residual); !s)
      return Status::error("gate_map: " + s.message());
    for (size_t i = 0; i < residual.size(); ++i) out[i] += residual[i];
  }
  return Status::ok();
}

Status GateNetwork::addNoise(kernels::Backend& backend, std::span<const float> x, uint32_t T,
                             uint64_t seed, uint32_t layer, std::span<float> logits) const {
  const uint32_t E = experts_;
  std::vector<float> scale(size_t{T} * E);
  if (auto s = backend.linear(*noise_, x, T, scale); !s)
    return Status::error("w_noise: " + s.message());
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t i = 0; i < E; ++i) {
      const size_t at = size_t{t} * E + i;
      logits[at] += routingNoise(seed, layer, t, i) * softplus(scale[at]);
    }
  }
  return Status::ok();
}

}  // namespace moe::router
