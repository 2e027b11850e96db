// Gating on a compute backend.
#include "router_service/gating.h"

#include "router_service/routing.h"

#include <algorithm>
#include <cmath>

namespace moe::router {
namespace {

// logits [T, E] = x · gateᵀ on the backend.
Result<std::vector<float>> gateLogits(kernels::Backend& backend, const kernels::Matrix& gate,
                                      std::span<const float> x, uint32_t T) {
  std::vector<float> logits(size_t{T} * gate.rows());
  if (auto s = backend.linear(gate, x, T, logits); !s) return makeError("gate: " + s.message());
  return logits;
}

}  // namespace

Result<RoutingDecision> softmaxTopkRouting(kernels::Backend& backend, const kernels::Matrix& gate,
                                           std::span<const float> x, uint32_t T, uint32_t k,
                                           bool renormalize) {
  const size_t E = gate.rows();
  auto gated = gateLogits(backend, gate, x, T);
  if (!gated) return makeError(gated.error());
  const std::vector<float>& logits = gated.value();
  RoutingDecision d;
  d.tokens = T;
  d.k = k;
  d.ids.resize(size_t{T} * k);
  d.weights.resize(size_t{T} * k);
  if (auto s = backend.softmaxTopk(logits, T, E, k, renormalize, d.ids, d.weights); !s) {
    return makeError("softmax_topk: " + s.message());
  }
  // Mean router probability per expert (P_i of the Switch auxiliary loss); cheap next to the
  // GEMM, so it is computed here rather than asked of every backend.
  d.probSum.assign(E, 0.0);
  std::vector<double> p(E);
  for (size_t t = 0; t < T; ++t) {
    const float* row = logits.data() + t * E;
    const double m = *std::max_element(row, row + E);
    double sum = 0;
    for (size_t e = 0; e < E; ++e) sum += (p[e] = std::exp(double{row[e]} - m));
    for (size_t e = 0; e < E; ++e) d.probSum[e] += p[e] / sum;
  }
  return d;
}

Result<RoutingDecision> routeTokens(kernels::Backend& backend, const kernels::Matrix& gate,
                                    std::span<const float> x, uint32_t T, const ModelConfig& model,
                                    std::span<const float> bias) {
  if (!isDeepseekFamily(model.family)) {
    return softmaxTopkRouting(backend, gate, x, T, model.topK, model.normTopkProb);
  }
  auto logits = gateLogits(backend, gate, x, T);
  if (!logits) return makeError(logits.error());
  return routeLogits(logits.value(), T, static_cast<uint32_t>(gate.rows()), routingRuleFor(model),
                     bias);
}

}  // namespace moe::router
