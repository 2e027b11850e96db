// Counter-based normal samples for noisy top-k.
#include "common/routing_noise.h"

#include <cmath>

namespace moe {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A uniform in (0, 1]: 53 random bits, shifted off zero so log() is finite.
double uniform01(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;
}

}  // namespace

float routingNoise(uint64_t seed, uint32_t layer, uint32_t token, uint32_t expert) {
  const uint64_t key = splitmix64(splitmix64(seed) ^ (uint64_t{layer} << 32 | token));
  const uint64_t a = splitmix64(key ^ (uint64_t{expert} << 1));
  const uint64_t b = splitmix64(key ^ (uint64_t{expert} << 1 | 1));
  const double r = std::sqrt(-2.0 * std::log(uniform01(a)));
  return static_cast<float>(r * std::cos(6.283185307179586 * uniform01(b)));
}

}  // namespace moe
