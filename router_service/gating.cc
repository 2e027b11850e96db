// Gating on a compute backend.
#include "router_service/gating.h"

namespace moe::router {

Result<RoutingDecision> softmaxTopkRouting(kernels::Backend& backend, const kernels::Matrix& gate,
                                           std::span<const float> x, uint32_t T, uint32_t k,
                                           bool renormalize) {
  const size_t E = gate.rows();
  std::vector<float> logits(size_t{T} * E);  // [T, E]
  if (auto s = backend.linear(gate, x, T, logits); !s) return makeError("gate: " + s.message());
  RoutingDecision d;
  d.tokens = T;
  d.k = k;
  d.ids.resize(size_t{T} * k);
  d.weights.resize(size_t{T} * k);
  if (auto s = backend.softmaxTopk(logits, T, E, k, renormalize, d.ids, d.weights); !s) {
    return makeError("softmax_topk: " + s.message());
  }
  return d;
}

}  // namespace moe::router
