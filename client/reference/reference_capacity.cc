// Reference expert capacity; see reference_capacity.h.
#include "client/reference/reference_capacity.h"

#include <algorithm>
#include <cmath>

namespace moe::client {

uint64_t referenceCapacity(double capacityFactor, size_t T, uint32_t k, uint32_t E) {
  return static_cast<uint64_t>(
      std::ceil(capacityFactor * static_cast<double>(T) * static_cast<double>(k) / E));
}

void applyReferenceCapacity(const RoutingOptions& options, uint32_t numExperts,
                            uint32_t numFfnExperts, size_t T, uint32_t k,
                            std::span<const uint32_t> ids, std::span<float> weights,
                            std::vector<uint8_t>& dropped) {
  dropped.assign(T * k, 0);
  if (options.capacityFactor <= 0) return;
  const uint64_t cap = referenceCapacity(options.capacityFactor, T, k, numExperts);
  // Each token's weight sum before anything is dropped, for the optional renormalization.
  std::vector<float> before(T, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    for (uint32_t j = 0; j < k; ++j) before[t] += weights[t * k + j];
  }
  std::vector<size_t> slots;  // positions t·k + j routed to the current expert
  std::vector<bool> lost(T, false);
  for (uint32_t e = 0; e < numFfnExperts; ++e) {
    slots.clear();
    for (size_t i = 0; i < T * k; ++i) {
      if (ids[i] == e) slots.push_back(i);
    }
    if (slots.size() <= cap) continue;
    // Highest weight first; among equal weights the earlier token (slots ascend by token) stays.
    std::stable_sort(slots.begin(), slots.end(),
                     [&](size_t a, size_t b) { return weights[a] > weights[b]; });
    for (size_t n = cap; n < slots.size(); ++n) {
      dropped[slots[n]] = 1;
      weights[slots[n]] = 0.0f;
      lost[slots[n] / k] = true;
    }
  }
  if (!options.capacityRenormalize) return;
  for (size_t t = 0; t < T; ++t) {
    if (!lost[t]) continue;
    float kept = 0;
    for (uint32_t j = 0; j < k; ++j) kept += weights[t * k + j];
    if (kept <= 0) continue;
    const float scale = before[t] / kept;
    for (uint32_t j = 0; j < k; ++j) weights[t * k + j] *= scale;
  }
}

}  // namespace moe::client
