// The families' expert selection written op by op after the published reference code
// (transformers' routers of every family in common/model_families.h, Yuan's YuanSparseMoeBlock,
// MoE++'s gating() in moe_plus_plus_layer.py),
// independently of router_service/, so the in-process check does not share the router's code.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/checkpoint.h"

namespace moe::client {

// F.softmax(v, dim=-1) in fp32, max-subtracted as torch does. v is non-empty.
std::vector<float> referenceSoftmax(std::span<const float> v);

// Softmax families (Mixtral, Qwen2/3-MoE, OLMoE, Yuan): p = softmax(s); the k largest p, ties to
// the lower id; w = p_sel, divided by Σ p_sel when `renormalize`. logits: [T, E]; ids/weights:
// [T, k] in selection order.
void referenceSoftmaxRoute(std::span<const float> logits, size_t T, uint32_t E, uint32_t k,
                           bool renormalize, std::vector<uint32_t>& ids,
                           std::vector<float>& weights);

// MoE++ gating(): optional logits norm (s / (std(s) / moe_gate_norm_std), unbiased std), then
// either the default gating (softmax, top-k by p, a selected zero expert — id E-1 — gets weight 0,
// renormalize) or the mixtral gating (top-k of s, softmax over those k values).
void referenceMoePlusPlusRoute(const ModelConfig& model, std::span<const float> logits, size_t T,
                               std::vector<uint32_t>& ids, std::vector<float>& weights);

// Any family's recipe (ModelConfig::routing), op by op after its reference code: DeepSeek-V2/V3,
// GLM-4-MoE, dots1 (groups, correction bias), MiniMax-M2, ERNIE-4.5, DBRX (p-norm), gpt-oss and
// Granite (softmax over the top-k logits), Llama 4 (sigmoid of the top-k logits), PhiMoE
// (sparsemixer, eval mode), the softmax families; MoE++ goes to referenceMoePlusPlusRoute. logits:
// [T, E]; bias: [E] or empty. ids/weights: [T, k].
void referenceRoute(const ModelConfig& model, std::span<const float> logits, size_t T,
                    std::span<const float> bias, std::vector<uint32_t>& ids,
                    std::vector<float>& weights);

}  // namespace moe::client
