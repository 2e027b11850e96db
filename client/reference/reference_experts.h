// The expert half of the reference layer: each kept assignment's weight times its expert's output,
// for FFN experts (through kernels/moe_layer.h) and MoE++'s zero-computation experts (copy,
// constant, zero; moe_plus_plus_layer.py), written as plain loops.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "client/reference/in_process_layer.h"
#include "common/checkpoint.h"
#include "kernels/backend.h"

namespace moe::client {

// y[T, H] += Σ over the routing's FFN assignments not dropped of weight · FFN_id(x[t]), or of
// FFN_id(weight · x[t]) when `weightOnInput` (Llama4TextMoe). ffn: the layer's FFN experts,
// indexed by id (size numFfnExperts), each with its activation and biases (GptOssExperts).
Status addFfnExperts(kernels::Backend& b, std::span<const kernels::ExpertFfnWeights> ffn,
                     std::span<const float> x, size_t T, size_t H, const ReferenceRouting& routing,
                     std::span<float> y, bool weightOnInput = false);

// y[T, H] += Σ over the routing's zero-computation assignments of weight · Expert_id(x[t]):
// copy → x; constant → a1·x + a2·v with [a1, a2] = softmax(Wc·x); zero → 0. constants[j] is
// expert numFfnExperts + j.
void addZeroComputeExperts(const ModelConfig& model,
                           std::span<const ConstantExpertTensors> constants,
                           std::span<const float> x, size_t T, const ReferenceRouting& routing,
                           std::span<float> y);

}  // namespace moe::client
