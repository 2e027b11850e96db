// Reference gate networks; see reference_gates.h. Matrix products go through Backend::linear, the
// element-wise steps are plain loops over the reference code's tensor ops.
#include "client/reference/reference_gates.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "client/reference/reference_routing.h"
#include "common/routing_noise.h"

namespace moe::client {

Result<std::unique_ptr<kernels::Matrix>> uploadTensor(kernels::Backend& b,
                                                      const Result<std::vector<float>>& tensor,
                                                      size_t rows, size_t cols) {
  if (!tensor) return makeError(tensor.status());
  return b.upload(tensor.value(), rows, cols);
}

Result<ReferenceGate> loadReferenceGate(const Checkpoint& ckpt, kernels::Backend& b, uint32_t layer,
                                        bool noisy) {
  const ModelConfig& c = ckpt.config();
  const size_t E = c.numExperts, H = c.hiddenSize;
  ReferenceGate g;
  g.kind = c.gateKind;
  g.numExperts = c.numExperts;
  // Each step fills one matrix slot or fails; the slots a model lacks stay null.
  auto fill = [&](std::unique_ptr<kernels::Matrix>& slot, const Result<std::vector<float>>& t,
                  size_t rows, size_t cols) {
    auto m = uploadTensor(b, t, rows, cols);
    if (!m) return m.status();
    slot = std::move(m).value();
    return Status::ok();
  };
  Status s;
  switch (g.kind) {
    case GateKind::kLinear:
      s = fill(g.w, ckpt.gateWeight(layer), E, H);
      break;
    case GateKind::kTwoLayerTanh: {
      auto t = ckpt.twoLayerGate(layer);
      if (!t) return makeError(t.status());
      s = fill(g.w, std::move(t.value().w1), 8 * E, H);
      if (s) s = fill(g.w2, std::move(t.value().w2), E, 8 * E);
      break;
    }
    case GateKind::kAttention:
      s = fill(g.w, ckpt.attentionRouter(layer), 3 * E, H);
      break;
  }
  if (s && c.gatingResidual) s = fill(g.residualMap, ckpt.gateResidualMap(layer), E, E);
  if (s && noisy) s = fill(g.noise, ckpt.noiseWeight(layer), E, H);
  if (!s) return makeError(s);
  if (c.routing.routerBias) {
    auto bias = ckpt.routerBias(layer);
    if (!bias) return makeError(bias.status());
    g.bias = std::move(bias).value();
  }
  return g;
}

Status referenceGateLogits(kernels::Backend& b, const ReferenceGate& gate, std::span<const float> x,
                           size_t T, std::span<const float> prevLogits, std::span<float> logits) {
  const size_t E = gate.numExperts;
  switch (gate.kind) {
    case GateKind::kLinear:
      // F.linear(x, W, b): the router bias (gpt-oss) added to every token's logits.
      if (auto s = b.linear(*gate.w, x, T, logits); !s) return s;
      for (size_t t = 0; t < T && !gate.bias.empty(); ++t) {
        for (size_t e = 0; e < E; ++e) logits[t * E + e] += gate.bias[e];
      }
      break;
    case GateKind::kTwoLayerTanh: {
      // wg = Sequential(Linear(H, 8E), Tanh(), Linear(8E, E)), all fp32, no bias.
      std::vector<float> h(T * 8 * E);
      if (auto s = b.linear(*gate.w, x, T, h); !s) return s;
      for (float& v : h) v = std::tanh(v);
      if (auto s = b.linear(*gate.w2, h, T, logits); !s) return s;
      break;
    }
    case GateKind::kAttention: {
      // mix = query_key_value(x); q, k, v = chunk(mix, 3); each viewed [E, 1] in fp32;
      // attn = softmax(q·kᵀ, dim=-1) (no 1/√d scaling); logits = (attn · v).squeeze().
      std::vector<float> qkv(T * 3 * E);
      if (auto s = b.linear(*gate.w, x, T, qkv); !s) return s;
      std::vector<float> scores(E);
      for (size_t t = 0; t < T; ++t) {
        const float* q = &qkv[t * 3 * E];
        const float* k = q + E;
        const float* v = k + E;
        for (size_t i = 0; i < E; ++i) {
          for (size_t j = 0; j < E; ++j) scores[j] = q[i] * k[j];
          const auto a = referenceSoftmax(scores);
          float sum = 0;
          for (size_t j = 0; j < E; ++j) sum += a[j] * v[j];
          logits[t * E + i] = sum;
        }
      }
      break;
    }
  }
  if (prevLogits.empty()) return Status::ok();
  if (!gate.residualMap) {
    return Status::error(
        "previous-layer logits given, but this model's gate has no gating "
        "residual (gate_map)");
  }
  if (prevLogits.size() != T * E) {
    return Status::error("previous-layer logits have " + std::to_string(prevLogits.size()) +
                         " values, expected T * E = " + std::to_string(T * E));
  }
  // logits += gate_map(gate_residual): s_i += Σ_j Wmap[i][j] · prev_j.
  std::vector<float> residual(T * E);
  if (auto s = b.linear(*gate.residualMap, prevLogits, T, residual); !s) return s;
  for (size_t i = 0; i < T * E; ++i) logits[i] += residual[i];
  return Status::ok();
}

Status addReferenceNoise(kernels::Backend& b, const ReferenceGate& gate, std::span<const float> x,
                         size_t T, uint64_t seed, uint32_t layer, std::span<float> logits) {
  if (!gate.noise) return Status::error("noisy top-k needs W_noise, which was not loaded");
  const uint32_t E = gate.numExperts;
  std::vector<float> z(T * E);
  if (auto s = b.linear(*gate.noise, x, T, z); !s) return s;
  for (size_t t = 0; t < T; ++t) {
    for (uint32_t i = 0; i < E; ++i) {
      // softplus without overflow: log(1 + e^z) = log1p(e^-|z|) + max(z, 0).
      const float zi = z[t * E + i];
      const float softplus = std::log1p(std::exp(-std::fabs(zi))) + std::max(zi, 0.0f);
      logits[t * E + i] += routingNoise(seed, layer, static_cast<uint32_t>(t), i) * softplus;
    }
  }
  return Status::ok();
}

}  // namespace moe::client
