// GateNetwork implementation.
#include "router_service/gate_network.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/routing_noise.h"
#include "kernels/row_invariant_linear.h"

namespace moe::router {
namespace {

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

Status GateNetwork::Weights::apply(std::span<const float> x, uint32_t T, std::span<float> y,
                                   const char* what) const {
  const size_t want = size_t{T} * cols, out = size_t{T} * rows;
  if (x.size() != want || y.size() != out) {
    return Status::error(StatusCode::kInternal,
                         std::string(what) + ": x has " + std::to_string(x.size()) +
                             " elements, expected " + std::to_string(want) + "; y has " +
                             std::to_string(y.size()) + ", expected " + std::to_string(out));
  }
  kernels::linearRowInvariant(data, rows, cols, x, T, y);
  return Status::ok();
}

Result<GateNetwork::Weights> GateNetwork::named(Result<std::vector<float>> weights, uint32_t rows,
                                                uint32_t cols, const std::string& what) {
  if (!weights) return makeError(weights.status());
  if (weights.value().size() != size_t{rows} * cols) {
    return makeError(StatusCode::kFailedPrecondition,
                     what + ": " + std::to_string(weights.value().size()) + " values, expected [" +
                         std::to_string(rows) + ", " + std::to_string(cols) + "]");
  }
  return Weights{std::move(weights).value(), rows, cols};
}

Result<std::unique_ptr<GateNetwork>> GateNetwork::load(const Checkpoint& ckpt, uint32_t layer,
                                                       const RoutingOptions& routing) {
  const ModelConfig& m = ckpt.config();
  const uint32_t E = m.numExperts, H = m.hiddenSize;
  const std::string where = "layer " + std::to_string(layer) + " ";
  auto g = std::make_unique<GateNetwork>();
  g->kind_ = m.gateKind;
  g->experts_ = E;
  Result<Weights> first = makeError("");
  switch (m.gateKind) {
    case GateKind::kLinear:
      first = named(ckpt.gateWeight(layer), E, H, where + "gate");
      break;
    case GateKind::kTwoLayerTanh: {
      auto t = ckpt.twoLayerGate(layer);
      if (!t) return makeError(t.status());
      first = named(std::move(t.value().w1), 8 * E, H, where + "gate W1");
      auto second = named(std::move(t.value().w2), E, 8 * E, where + "gate W2");
      if (!second) return makeError(second.status());
      g->second_ = std::move(second).value();
      break;
    }
    case GateKind::kAttention:
      first = named(ckpt.attentionRouter(layer), 3 * E, H, where + "router qkv");
      break;
  }
  if (!first) return makeError(first.status());
  g->first_ = std::move(first).value();
  g->inputBound_ = g->computeInputBound();
  if (m.routing.routerBias) {
    auto b = ckpt.routerBias(layer);
    if (!b) return makeError(b.status());
    g->bias_ = std::move(b).value();
  }
  if (m.gatingResidual) {
    auto map = named(ckpt.gateResidualMap(layer), E, E, where + "gate_map");
    if (!map) return makeError(map.status());
    g->residualMap_ = std::move(map).value();
  }
  if (routing.noisyTopk) {
    auto noise = ckpt.noiseWeight(layer);
    if (!noise) {
      return makeError(
          noise.code(),
          "routing.noisy_topk is on but the checkpoint has no noise weights: " + noise.error());
    }
    auto w = named(std::move(noise), E, H, where + "w_noise");
    if (!w) return makeError(w.status());
    g->noise_ = std::move(w).value();
  }
  return g;
}

float GateNetwork::computeInputBound() const {
  float maxW = 0;
  for (float w : first_.data) maxW = std::max(maxW, std::fabs(w));
  const double bound =
      std::numeric_limits<float>::max() / 4.0 /
      (std::max(1.0, static_cast<double>(first_.cols)) * std::max(double{maxW}, 1e-30));
  return static_cast<float>(std::min(bound, double{std::numeric_limits<float>::max()}));
}

std::unique_ptr<GateNetwork> GateNetwork::linear(std::vector<float> wg, uint32_t E, uint32_t H) {
  auto g = std::make_unique<GateNetwork>();
  g->kind_ = GateKind::kLinear;
  g->experts_ = E;
  g->first_ = Weights{std::move(wg), E, H};
  g->inputBound_ = g->computeInputBound();
  return g;
}

Status GateNetwork::logits(std::span<const float> x, uint32_t T, std::span<float> out) const {
  const uint32_t E = experts_;
  switch (kind_) {
    case GateKind::kLinear: {
      if (auto s = first_.apply(x, T, out, "gate"); !s) return s;
      // gpt-oss: F.linear(x, W, b), the bias part of the logits.
      if (!bias_.empty()) {
        for (uint32_t t = 0; t < T; ++t) {
          for (uint32_t e = 0; e < E; ++e) out[size_t{t} * E + e] += bias_[e];
        }
      }
      return Status::ok();
    }
    case GateKind::kTwoLayerTanh: {
      std::vector<float> hidden(size_t{T} * first_.rows);
      if (auto s = first_.apply(x, T, hidden, "gate W1"); !s) return s;
      for (float& h : hidden) h = std::tanh(h);
      return second_.apply(hidden, T, out, "gate W2");
    }
    case GateKind::kAttention: {
      std::vector<float> qkv(size_t{T} * 3 * E), scratch;
      if (auto s = first_.apply(x, T, qkv, "attention router"); !s) return s;
      for (uint32_t t = 0; t < T; ++t) {
        const float* row = qkv.data() + size_t{t} * 3 * E;
        attentionAcrossExperts(row, row + E, row + 2 * E, E, out.data() + size_t{t} * E, scratch);
      }
      break;
    }
  }
  return Status::ok();
}

Status GateNetwork::addResidual(std::span<const float> prev, uint32_t T,
                                std::span<float> logits) const {
  if (!hasResidual()) {
    return Status::error(StatusCode::kInternal, "gate_map: this layer has no gating residual");
  }
  std::vector<float> residual(size_t{T} * experts_);
  if (auto s = residualMap_.apply(prev, T, residual, "gate_map"); !s) return s;
  for (size_t i = 0; i < residual.size(); ++i) logits[i] += residual[i];
  return Status::ok();
}

Status GateNetwork::addNoise(std::span<const float> x, uint32_t T, uint64_t seed, uint32_t layer,
                             std::span<float> logits) const {
  const uint32_t E = experts_;
  if (!hasNoise()) {
    return Status::error(StatusCode::kInternal, "w_noise: noisy top-k was not loaded");
  }
  std::vector<float> scale(size_t{T} * E);
  if (auto s = noise_.apply(x, T, scale, "w_noise"); !s) return s;
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t i = 0; i < E; ++i) {
      const size_t at = size_t{t} * E + i;
      logits[at] += routingNoise(seed, layer, t, i) * softplus(scale[at]);
    }
  }
  return Status::ok();
}

}  // namespace moe::router
