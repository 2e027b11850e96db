// Capacity enforcement; see capacity.h for the policy.
#include "router_service/capacity.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moe::router {

uint32_t expertCapacity(const RoutingOptions& routing, uint32_t T, uint32_t k, uint32_t E) {
  if (routing.capacityFactor <= 0) return UINT32_MAX;
  const double cap = std::ceil(routing.capacityFactor * T * k / E);
  return cap >= UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(cap);
}

uint32_t applyCapacity(RoutingDecision& d, const RoutingOptions& routing, uint32_t numExperts,
                       uint32_t numFfnExperts) {
  const uint32_t cap = expertCapacity(routing, d.tokens, d.k, numExperts);
  if (cap == UINT32_MAX) return 0;
  const size_t n = size_t{d.tokens} * d.k;
  // Assignments per expert, in token order (so a stable sort breaks weight ties by token).
  std::vector<std::vector<size_t>> byExpert(numFfnExperts);
  for (size_t at = 0; at < n; ++at) {
    if (d.ids[at] < numFfnExperts) byExpert[d.ids[at]].push_back(at);
  }
  uint32_t droppedCount = 0;
  for (auto& list : byExpert) {
    if (list.size() <= cap) continue;
    std::stable_sort(list.begin(), list.end(),
                     [&](size_t a, size_t b) { return d.weights[a] > d.weights[b]; });
    if (d.dropped.empty()) d.dropped.assign(n, 0);
    for (size_t i = cap; i < list.size(); ++i) d.dropped[list[i]] = 1;
    droppedCount += static_cast<uint32_t>(list.size() - cap);
  }
  if (droppedCount == 0) return 0;
  for (uint32_t t = 0; t < d.tokens; ++t) {
    float before = 0, kept = 0;
    bool lost = false;
    for (uint32_t j = 0; j < d.k; ++j) {
      const size_t at = size_t{t} * d.k + j;
      before += d.weights[at];
      if (d.dropped[at]) {
        lost = true;
        d.weights[at] = 0.0f;
      }
      kept += d.weights[at];
    }
    if (lost && routing.capacityRenormalize && kept > 0) {
      for (uint32_t j = 0; j < d.k; ++j) d.weights[size_t{t} * d.k + j] *= before / kept;
    }
  }
  return droppedCount;
}

}  // namespace moe::router
