// ZeroComputeExperts implementation: plain loops; each is O(H) per assignment.
#include "router_service/zero_compute_experts.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moe::router {

Result<std::unique_ptr<ZeroComputeExperts>> ZeroComputeExperts::load(const Checkpoint& ckpt,
                                                                     uint32_t layer) {
  auto z = std::make_unique<ZeroComputeExperts>();
  z->model_ = ckpt.config();
  for (uint32_t e = z->model_.numFfnExperts; e < z->model_.numExperts; ++e) {
    if (z->model_.expertKind(e) != ExpertKind::kConstant) continue;
    auto t = ckpt.constantExpert(layer, e);
    if (!t) return makeError(t.status());
    z->constants_.push_back({std::move(t.value().wc), std::move(t.value().v)});
  }
  return z;
}

uint32_t ZeroComputeExperts::accumulate(const RoutingDecision& d, std::span<const float> xs,
                                        float scale, std::span<float> out) const {
  const size_t H = model_.hiddenSize;
  uint32_t evaluated = 0;
  std::vector<float> scaled(H);  // x̃ of the current token, made on first use
  for (uint32_t t = 0; t < d.tokens; ++t) {
    const float* x = scaled.data();
    bool ready = false;
    float* y = out.data() + size_t{t} * H;
    for (uint32_t j = 0; j < d.k; ++j) {
      const size_t at = size_t{t} * d.k + j;
      const uint32_t e = d.ids[at];
      if (e < model_.numFfnExperts || d.isDropped(at)) continue;
      ++evaluated;
      if (!ready) {
        for (size_t h = 0; h < H; ++h) scaled[h] = scale * xs[size_t{t} * H + h];
        ready = true;
      }
      const float w = d.weights[at];
      switch (model_.expertKind(e)) {
        case ExpertKind::kCopy:
          for (size_t h = 0; h < H; ++h) y[h] += w * x[h];
          break;
        case ExpertKind::kConstant: {
          const Constant& c = constants_[e - model_.numFfnExperts];
          float l0 = 0, l1 = 0;
          for (size_t h = 0; h < H; ++h) {
            l0 += c.wc[h] * x[h];
            l1 += c.wc[H + h] * x[h];
          }
          const float m = std::max(l0, l1);
          const float e0 = std::exp(l0 - m), e1 = std::exp(l1 - m);
          const float a1 = e0 / (e0 + e1), a2 = e1 / (e0 + e1);
          for (size_t h = 0; h < H; ++h) y[h] += w * (a1 * x[h] + a2 * c.v[h]);
          break;
        }
        case ExpertKind::kZero:
        case ExpertKind::kFfn:
          break;
      }
    }
  }
  return evaluated;
}

}  // namespace moe::router
