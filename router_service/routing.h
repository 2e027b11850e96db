// Routing rules of the model families, from router logits to (expert ids, weights) per token, as
// pure functions on the CPU (scores are cheap next to the gate GEMM). The rule is the family's
// RoutingRecipe (common/model_families.h, filled from config.json through the family table), each
// step as the family's transformers modeling file (or MoE++/Yuan reference code) computes it:
// scores (softmax / sigmoid / softmax over the chosen logits), choice (+ correction bias, group
// limits, or the raw logits), top-k, then the weights' normalization (Σ with eps or a clamp,
// p-norm) and scale. PhiMoE's sparsemixer (eval mode) is its own two-pass rule: each pick's
// weight is a softmax over the logits within a relative 2·jitter_eps of that pick.
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

struct RoutingRule : RoutingRecipe {
  uint32_t k = 1;

  // True when the backend's softmax_topk op computes this rule exactly (the fast path).
  bool isPlainSoftmaxTopk() const {
    return scoring == Scoring::kSoftmax && !chooseOnLogits && groups == Groups::kNone &&
           !choiceBias && !zeroWeightExpert && logitsNormStd == 0.0f && logitSoftcap == 0.0f &&
           scale == 1.0f &&
           (normalize == Normalize::kNone ||
            (normalize == Normalize::kSum && normEps == 0.0f && normMin == 0.0f));
  }
};

// The rule a model's config.json implies.
RoutingRule routingRuleFor(const ModelConfig& model);

// One token's scores under a rule: the steps of routeLogits before any group limit, shared with
// the missing-expert rerouting (missing_experts.h) so both score experts identically.
struct TokenScores {
  explicit TokenScores(uint32_t E) : p(E), weight(E), choice(E), normed(E) {}
  std::vector<float> p;       // softmax of the (MoE++ std-normalized) logits
  std::vector<float> weight;  // the weight score: p, σ(s), or s itself (kSoftmaxOverChosen)
  std::vector<float> choice;  // the selection score: weight + bias (bias only for choosing), or
                              // the logits (chooseOnLogits)
  std::vector<float> normed;  // scratch: MoE++'s normalized logits
};

// Fills `out` from one token's logits s [E] (`bias`: [E] or empty).
void scoreToken(std::span<const float> s, const RoutingRule& rule, std::span<const float> bias,
                TokenScores& out);

// The family's weighting of one token's chosen experts: w [k] holds their weight scores (the
// MoE++ zero expert's as 0), `total` their sum; softmax over them (kSoftmaxOverChosen),
// normalizes and/or scales w as the rule says.
void finishWeights(const RoutingRule& rule, std::span<float> w, float total);

// Routes T tokens from logits [T, E]; `bias` is the [E] correction bias (rule.choiceBias) or empty.
// Fills ids/weights and probSum (Σ softmax(logits), for load statistics) of the returned decision.
RoutingDecision routeLogits(std::span<const float> logits, uint32_t T, uint32_t E,
                            const RoutingRule& rule, std::span<const float> bias);

}  // namespace moe::router
