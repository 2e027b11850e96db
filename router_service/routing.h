// Routing rules of the model families, from router logits to (expert ids, weights) per token, as
// pure functions on the CPU (scores are cheap next to the gate GEMM). Each rule follows its
// family's published reference code (HuggingFace transformers / deepseek-ai modeling files):
//
//   softmax greedy (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V2 "greedy"):
//     p = softmax(s); top-k of p; w = p_sel, renormalized when norm_topk_prob.
//   DeepSeek-V2 "group_limited_greedy": p = softmax(s); group score = max p in the group; keep the
//     topk_group best groups (others' scores masked to 0.0); top-k; w = p_sel.
//   DeepSeek-V2 weights: normalized (+1e-20) when k > 1 and norm_topk_prob, else × scaling factor.
//   DeepSeek-V3 "noaux_tc": σ = sigmoid(s); c = σ + bias (choice only); group score = sum of the
//     group's top-2 c; keep topk_group groups (others' c masked to 0.0); top-k of c; w = σ_sel,
//     normalized (+1e-20) when norm_topk_prob; then × routed_scaling_factor.
//   MoE++ (moe_plus_plus_layer.py gating): optionally s /= std(s)/moe_gate_norm_std (unbiased
//     std); p = softmax(s); top-2; the zero expert's (id E-1) weight set to 0, then renormalized.
//     With moe_use_mixtral_gating: no zero-expert masking (top-k of s, softmax over them, which
//     is the renormalized softmax greedy rule).
//   Yuan 2.0-M32: softmax greedy, renormalized (its router is the attention gate network).
//
// Ties go to the lower expert (and group) id everywhere; the references use torch.topk, whose tie
// order is unspecified, so this is the deterministic choice.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/checkpoint.h"
#include "router_service/gating.h"

namespace moe::router {

struct RoutingRule {
  enum class Scoring { kSoftmax, kSigmoid };
  enum class Selection { kGreedy, kGroupMax, kGroupTop2Sum };
  enum class Weighting { kNormalizeOnly, kDeepseekV2, kDeepseekV3 };
  Scoring scoring = Scoring::kSoftmax;
  Selection selection = Selection::kGreedy;
  Weighting weighting = Weighting::kNormalizeOnly;
  uint32_t k = 1;
  uint32_t nGroup = 1, topkGroup = 1;
  bool normTopkProb = true;
  float routedScalingFactor = 1.0f;
  std::optional<uint32_t> zeroWeightExpert;  // MoE++: weight 0 for this expert, then renormalize
  float logitsNormStd = 0.0f;                // MoE++ moe_use_logits_norm target std (0 = off)

  // True when the backend's softmax_topk op computes this rule exactly (the fast path).
  bool isPlainSoftmaxTopk() const {
    return scoring == Scoring::kSoftmax && selection == Selection::kGreedy &&
           weighting == Weighting::kNormalizeOnly && !zeroWeightExpert && logitsNormStd == 0.0f;
  }
};

// The rule a model's config.json implies.
RoutingRule routingRuleFor(const ModelConfig& model);

// One token's scores under a rule: the steps of routeLogits before any group limit, shared with
// the missing-expert rerouting (missing_experts.h) so both score experts identically.
struct TokenScores {
  explicit TokenScores(uint32_t E) : p(E), weight(E), choice(E), normed(E) {}
  std::vector<float> p;       // softmax of the (MoE++ std-normalized) logits
  std::vector<float> weight;  // the weight score: p, or σ(s) for sigmoid scoring
  std::vector<float> choice;  // the selection score: weight + bias (bias only for choosing)
  std::vector<float> normed;  // scratch: MoE++'s normalized logits
};

// Fills `out` from one token's logits s [E] (`bias`: [E] or empty).
void scoreToken(std::span<const float> s, const RoutingRule& rule, std::span<const float> bias,
                TokenScores& out);

// The family's weighting of one token's chosen experts: w [k] holds their weight scores (the
// MoE++ zero expert's as 0), `total` their sum; normalizes and/or scales w as rule.weighting says.
void finishWeights(const RoutingRule& rule, std::span<float> w, float total);

// Routes T tokens from logits [T, E]; `bias` is [E] (DeepSeek-V3) or empty. Fills ids/weights and
// probSum (Σ softmax(logits), for load statistics) of the returned decision.
RoutingDecision routeLogits(std::span<const float> logits, uint32_t T, uint32_t E,
                            const RoutingRule& rule, std::span<const float> bias);

}  // namespace moe::router
