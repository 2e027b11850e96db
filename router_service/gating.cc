// Gating on a compute backend.
#include "router_service/gating.h"

#include "router_service/gate_network.h"
#include "router_service/routing.h"

#include <algorithm>
#include <cmath>

namespace moe::router {
namespace {

// Σ over tokens of softmax(logits)[e]: the mean router probability per expert (P_i of the Switch
// auxiliary loss); cheap next to the GEMM, so computed here rather than asked of every backend.
std::vector<double> probabilitySums(std::span<const float> logits, size_t T, size_t E) {
  std::vector<double> sums(E, 0.0), p(E);
  for (size_t t = 0; t < T; ++t) {
    const float* row = logits.data() + t * E;
    const double m = *std::max_element(row, row + E);
    double sum = 0;
    for (size_t e = 0; e < E; ++e) sum += (p[e] = std::exp(double{row[e]} - m));
    for (size_t e = 0; e < E; ++e) sums[e] += p[e] / sum;
  }
  return sums;
}

Result<RoutingDecision> softmaxTopkOnBackend(kernels::Backend& backend,
                                             std::span<const float> logits, uint32_t T, size_t E,
                                             uint32_t k, bool renormalize) {
  RoutingDecision d;
  d.tokens = T;
  d.k = k;
  d.ids.resize(size_t{T} * k);
  d.weights.resize(size_t{T} * k);
  if (auto s = backend.softmaxTopk(logits, T, E, k, renormalize, d.ids, d.weights); !s) {
    return makeError(StatusCode::kInternal, "softmax_topk: " + s.message());
  }
  d.probSum = probabilitySums(logits, T, E);
  return d;
}

}  // namespace

Result<RoutingDecision> routeRequest(kernels::Backend& backend, const GateNetwork& gate,
                                     std::span<const float> x, std::span<const float> logits,
                                     uint32_t T, const ModelConfig& model,
                                     std::span<const float> bias, const GateInputs& inputs) {
  const uint32_t E = gate.numExperts();
  const RoutingRule rule = routingRuleFor(model);
  std::span<const float> scores = logits;
  std::vector<float> noisy;
  if (inputs.noiseSeed) {
    noisy.assign(logits.begin(), logits.end());
    if (auto s = gate.addNoise(x, T, *inputs.noiseSeed, inputs.layer, noisy); !s)
      return makeError(s);
    scores = noisy;
  }
  if (rule.isPlainSoftmaxTopk()) {
    return softmaxTopkOnBackend(backend, scores, T, E, rule.k,
                                rule.normalize == RoutingRule::Normalize::kSum);
  }
  return routeLogits(scores, T, E, rule, bias);
}

Result<GateResult> routeTokens(kernels::Backend& backend, const GateNetwork& gate,
                               std::span<const float> x, uint32_t T, const ModelConfig& model,
                               std::span<const float> bias, const GateInputs& inputs) {
  GateResult r;
  r.logits.resize(size_t{T} * gate.numExperts());
  if (auto s = gate.logits(x, T, r.logits); !s) return makeError(s);
  if (!inputs.prevLogits.empty()) {
    if (auto s = gate.addResidual(inputs.prevLogits, T, r.logits); !s) return makeError(s);
  }
  auto d = routeRequest(backend, gate, x, r.logits, T, model, bias, inputs);
  if (!d) return makeError(d.status());
  r.decision = std::move(d).value();
  return r;
}

}  // namespace moe::router
