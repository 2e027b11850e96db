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
    return makeError("softmax_topk: " + s.message());
  }
  d.probSum = probabilitySums(logits, T, E);
  return d;
}

}  // namespace

Result<GateResult> routeTokens(kernels::Backend& backend, const GateNetwork& gate,
                               std::span<const float> x, uint32_t T, const ModelConfig& model,
                               std::span<const float> bias, const GateInputs& inputs) {
  const uint32_t E = gate.numExperts();
  GateResult r;
  r.logits.resize(size_t{T} * E);
  if (auto s = gate.logits(backend, x, T, inputs.prevLogits, r.logits); !s)
    return makeError(s.message());
  const RoutingRule rule = routingRuleFor(model);
  std::span<const float> scores = r.logits;
  std::vector<float> noisy;
  if (inputs.noiseSeed) {
    noisy = r.logits;
    if (auto s = gate.addNoise(backend, x, T, *inputs.noiseSeed, inputs.layer, noisy); !s)
      return makeError(s.message());
    scores = noisy;
  }
  if (rule.isPlainSoftmaxTopk()) {
    auto d = softmaxTopkOnBackend(backend, scores, T, E, rule.k, rule.normTopkProb);
    if (!d) return makeError(d.error());
    r.decision = std::move(d).value();
  } else {
    r.decision = routeLogits(scores, T, E, rule, bias);
  }
  return r;
}

}  // namespace moe::router
