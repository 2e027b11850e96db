// The standard-normal draws of noisy top-k routing, as a pure function of (seed, layer, token,
// expert): the same request with the same seed routes the same way on any router replica and in
// the in-process check, and concurrent requests do not disturb each other's noise.
#pragma once

#include <cstdint>

namespace moe {

// One N(0,1) sample (Box–Muller over two counter-based uniforms from SplitMix64).
float routingNoise(uint64_t seed, uint32_t layer, uint32_t token, uint32_t expert);

}  // namespace moe
