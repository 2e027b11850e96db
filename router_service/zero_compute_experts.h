// MoE++ zero-computation experts (SkyworkAI MoE-plus-plus, moe_plus_plus_layer.py), evaluated on
// the router so that tokens routed to them cause no network traffic. On the expert input x̃
// (= k·x unless the model disables the scaling):
//   copy      x̃
//   constant  [a1, a2] = softmax(Wc·x̃); a1·x̃ + a2·v     (two of them, each with its Wc and v)
//   zero      0                                         (its routing weight is 0 anyway)
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "router_service/gating.h"

namespace moe::router {

class ZeroComputeExperts {
 public:
  static Result<std::unique_ptr<ZeroComputeExperts>> load(const Checkpoint& ckpt, uint32_t layer);

  // out[t] += w · expert(x̃[t]) with x̃ = scale · x, for every kept assignment of `d` to a
  // zero-computation expert. x, out: [T, H]. Returns the number of assignments evaluated.
  uint32_t accumulate(const RoutingDecision& d, std::span<const float> x, float scale,
                      std::span<float> out) const;

 private:
  ModelConfig model_;
  struct Constant {
    std::vector<float> wc;  // [2, H]
    std::vector<float> v;   // [H]
  };
  std::vector<Constant> constants_;  // by expert id - numFfnExperts
};

}  // namespace moe::router
