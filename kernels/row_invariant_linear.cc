// linearRowInvariant: see row_invariant_linear.h.
#include "kernels/row_invariant_linear.h"

#include <algorithm>

namespace moe::kernels {
namespace {

constexpr size_t kLanes = 16;    // independent partial sums: vectorizable without reassociation
constexpr size_t kRowBlock = 8;  // rows that reuse one weight row while it is in L1

// One fixed summation order: lane j sums elements j, j+16, …; the tail goes to lanes 0…; the
// lanes are then added pairwise. The same for every call, so the result depends only on a and b.
float dotFixedOrder(const float* a, const float* b, size_t K) {
  float lane[kLanes] = {};
  size_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lane[j] += a[k + j] * b[k + j];
  }
  for (size_t j = 0; k < K; ++k, ++j) lane[j] += a[k] * b[k];
  for (size_t width = kLanes / 2; width > 0; width /= 2) {
    for (size_t j = 0; j < width; ++j) lane[j] += lane[j + width];
  }
  return lane[0];
}

}  // namespace

void linearRowInvariant(std::span<const float> w, size_t N, size_t K, std::span<const float> x,
                        size_t T, std::span<float> y) {
  for (size_t t0 = 0; t0 < T; t0 += kRowBlock) {
    const size_t t1 = std::min(T, t0 + kRowBlock);
    for (size_t n = 0; n < N; ++n) {
      const float* wn = w.data() + n * K;
      for (size_t t = t0; t < t1; ++t) y[t * N + n] = dotFixedOrder(x.data() + t * K, wn, K);
    }
  }
}

}  // namespace moe::kernels
