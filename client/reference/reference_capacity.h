// Expert capacity of the reference layer (DESIGN.md §6 "capacity", RoutingOptions): how many
// assignments one FFN expert takes in one forward call, and which ones beyond that it drops.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/config.h"

namespace moe::client {

// ceil(capacityFactor · T · k / E) (E: all experts of the layer, MoE++'s zero-computation ones
// included).
uint64_t referenceCapacity(double capacityFactor, size_t T, uint32_t k, uint32_t E);

// Applies the cap of `options` (no-op when capacityFactor is 0) to the routing ids/weights [T, k]:
// for each FFN expert (id < numFfnExperts) with more than cap assignments, those sorted by weight
// descending, then token ascending, keep the first cap; the others get dropped = 1, weight 0.
// With capacityRenormalize, a token that lost an assignment has its kept weights scaled back to
// its pre-drop sum. dropped is resized to [T, k].
void applyReferenceCapacity(const RoutingOptions& options, uint32_t numExperts,
                            uint32_t numFfnExperts, size_t T, uint32_t k,
                            std::span<const uint32_t> ids, std::span<float> weights,
                            std::vector<uint8_t>& dropped);

}  // namespace moe::client
