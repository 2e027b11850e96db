// CPU softmax + top-k; see cpu_softmax_topk.h.
#include "kernels/cpu_softmax_topk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace moe::kernels {

void cpuSoftmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k, bool renormalize,
                    std::span<uint32_t> ids, std::span<float> weights) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> p(E);         // [E] probabilities of the current row
  std::vector<uint32_t> order(E);  // [E] expert ids, best first after the partial sort
  // NaN compares false with everything, which would break the strict weak ordering that
  // partial_sort needs; ranking NaN as -inf keeps the order total.
  auto key = [&](uint32_t e) { return std::isnan(p[e]) ? kNegInf : p[e]; };
  auto before = [&](uint32_t a, uint32_t b) {
    const float ka = key(a), kb = key(b);
    return ka > kb || (ka == kb && a < b);
  };

  for (size_t t = 0; t < T; ++t) {
    const std::span<const float> row = logits.subspan(t * E, E);
    float rowMax = kNegInf;
    for (size_t e = 0; e < E; ++e) rowMax = std::max(rowMax, row[e]);
    float sum = 0.0f;
    for (size_t e = 0; e < E; ++e) {
      p[e] = std::exp(row[e] - rowMax);
      sum += p[e];
    }
    for (size_t e = 0; e < E; ++e) p[e] = p[e] / sum;

    std::iota(order.begin(), order.end(), 0u);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      before);
    float selected = 0.0f;
    for (size_t j = 0; j < k; ++j) selected += p[order[j]];
    for (size_t j = 0; j < k; ++j) {
      ids[t * k + j] = order[j];
      weights[t * k + j] = renormalize ? p[order[j]] / selected : p[order[j]];
    }
  }
}

}  // namespace moe::kernels
