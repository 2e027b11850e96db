// DeepSeek routing written op by op after the published reference code (transformers'
// DeepseekV3TopkRouter.get_topk_indices/forward; DeepSeek-V2's MoEGate), independently of
// router_service/routing.cc, so the in-process check does not share the router's routing code.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/checkpoint.h"

namespace moe::client {

// logits: [T, E]; bias: [E] or empty. ids/weights: [T, k].
void referenceDeepseekRoute(const ModelConfig& model, std::span<const float> logits, size_t T,
                            std::span<const float> bias, std::vector<uint32_t>& ids,
                            std::vector<float>& weights);

}  // namespace moe::client
