// Routing rules; see routing.h for the formulas and their sources.
#include "router_service/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace moe::router {
namespace {

// Indices of the n largest values, larger first, ties to the lower index.
std::vector<uint32_t> topIndices(std::span<const float> values, uint32_t n) {
  std::vector<uint32_t> idx(values.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](uint32_t a, uint32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  idx.resize(n);
  return idx;
}

}  // namespace

RoutingRule routingRuleFor(const ModelConfig& m) {
  RoutingRule r;
  static_cast<RoutingRecipe&>(r) = m.routing;
  r.k = m.topK;
  return r;
}

namespace {

// MoE++: logits / (logits.std() / target_std), torch's unbiased std.
const float* normalizeLogits(const float* s, uint32_t E, float targetStd,
                             std::vector<float>& normed) {
  float mean = 0, var = 0;
  for (uint32_t e = 0; e < E; ++e) mean += s[e];
  mean /= static_cast<float>(E);
  for (uint32_t e = 0; e < E; ++e) var += (s[e] - mean) * (s[e] - mean);
  const float stdev = std::sqrt(var / static_cast<float>(E - 1));
  for (uint32_t e = 0; e < E; ++e) normed[e] = s[e] / (stdev / targetStd);
  return normed.data();
}

// p = softmax(s) in fp32 as the references compute it.
void softmaxRow(const float* s, uint32_t E, std::vector<float>& p) {
  const float m = *std::max_element(s, s + E);
  float sum = 0;
  for (uint32_t e = 0; e < E; ++e) sum += (p[e] = std::exp(s[e] - m));
  for (uint32_t e = 0; e < E; ++e) p[e] /= sum;
}

// Group-limited selection: experts outside the topk_group best groups get choice rule.groupMask
// (masked_fill(~mask, 0.0) in DeepSeek-V2, -inf in transformers' DeepSeek-V3/GLM/dots routers).
void keepBestGroups(const RoutingRule& rule, uint32_t E, std::vector<float>& choice,
                    std::vector<float>& group) {
  const uint32_t perGroup = E / rule.nGroup;
  for (uint32_t g = 0; g < rule.nGroup; ++g) {
    std::span<const float> members(choice.data() + size_t{g} * perGroup, perGroup);
    if (rule.groups == RoutingRule::Groups::kMax) {
      group[g] = *std::max_element(members.begin(), members.end());
    } else {
      auto top2 = topIndices(members, std::min<uint32_t>(2, perGroup));
      group[g] = 0;
      for (uint32_t i : top2) group[g] += members[i];
    }
  }
  std::vector<bool> keep(rule.nGroup, false);
  for (uint32_t g : topIndices(group, rule.topkGroup)) keep[g] = true;
  for (uint32_t e = 0; e < E; ++e) {
    if (!keep[e / perGroup]) choice[e] = rule.groupMask;
  }
}

// torch's max(dim=-1): the first index holding the largest value (a later one only replaces it
// when strictly larger, or NaN).
uint32_t firstMax(std::span<const float> v) {
  uint32_t at = 0;
  float best = v[0];
  for (uint32_t e = 0; e < v.size(); ++e) {
    if (!(v[e] <= best)) {
      best = v[e];
      at = e;
      if (std::isnan(best)) break;
    }
  }
  return at;
}

// One sparsemixer pick (PhiMoE, eval): the expert at the largest of `candidates` (the logits, or
// the logits with the first pick at -inf), and its weight: the softmax, over the candidates with
// every expert whose relative gap (m - s_e) / max(|s_e|, m) to that largest value m exceeds
// 2·eps masked to -inf, at the pick. The gap test reads the original logits `s`.
float sparseMixerPick(std::span<const float> s, std::span<const float> candidates, float eps,
                      std::vector<float>& gates, uint32_t& pick) {
  pick = firstMax(candidates);
  const float m = candidates[pick];
  const float threshold = 2.0f * eps;
  for (size_t e = 0; e < s.size(); ++e) {
    const float a = std::fabs(s[e]);
    const float factor = a < m ? m : a;  // abs().clamp(min=m)
    gates[e] = (m - s[e]) / factor > threshold ? -INFINITY : candidates[e];
  }
  const float top = *std::max_element(gates.begin(), gates.end());
  float sum = 0;
  for (float& g : gates) sum += (g = std::exp(g - top));
  return gates[pick] / sum;
}

// PhiMoE sparsemixer (eval mode): two picks, the second among the logits without the first,
// into the token's first min(k, 2) slots (the loader refuses any k but 2).
void sparseMixerToken(std::span<const float> s, float eps, std::span<uint32_t> ids,
                      std::span<float> w) {
  std::vector<float> gates(s.size()), rest(s.begin(), s.end());
  uint32_t pick[2];
  float weight[2];
  weight[0] = sparseMixerPick(s, s, eps, gates, pick[0]);
  rest[pick[0]] = -INFINITY;
  weight[1] = sparseMixerPick(s, rest, eps, gates, pick[1]);
  for (size_t j = 0; j < std::min<size_t>(ids.size(), 2); ++j) {
    ids[j] = pick[j];
    w[j] = weight[j];
  }
}

}  // namespace

void scoreToken(std::span<const float> logits, const RoutingRule& rule, std::span<const float> bias,
                TokenScores& out) {
  const auto E = static_cast<uint32_t>(logits.size());
  const float* s = logits.data();
  if (rule.logitsNormStd > 0.0f) s = normalizeLogits(s, E, rule.logitsNormStd, out.normed);
  if (rule.logitSoftcap > 0.0f) {  // Laguna: tanh(s / c) * c
    for (uint32_t e = 0; e < E; ++e) {
      out.normed[e] = std::tanh(s[e] / rule.logitSoftcap) * rule.logitSoftcap;
    }
    s = out.normed.data();
  }
  softmaxRow(s, E, out.p);
  for (uint32_t e = 0; e < E; ++e) {
    switch (rule.scoring) {
      case RoutingRule::Scoring::kSoftmax:
      case RoutingRule::Scoring::kSparseMixer:  // routeLogits picks by the logits' order too
        out.weight[e] = out.p[e];
        break;
      case RoutingRule::Scoring::kSigmoid:
        out.weight[e] = 1.0f / (1.0f + std::exp(-s[e]));
        break;
      case RoutingRule::Scoring::kSoftmaxOverChosen:
        out.weight[e] = s[e];  // finishWeights takes the softmax over the chosen
        break;
    }
    out.choice[e] = rule.chooseOnLogits ? s[e] : out.weight[e] + (bias.empty() ? 0.0f : bias[e]);
  }
}

void finishWeights(const RoutingRule& rule, std::span<float> w, float total) {
  if (w.empty()) return;
  if (rule.scoring == RoutingRule::Scoring::kSoftmaxOverChosen) {
    // softmax(top-k logits): max-subtracted as torch does; the first chosen is the largest.
    float m = w[0];
    for (float v : w) m = std::max(m, v);
    float sum = 0;
    for (float& v : w) sum += (v = std::exp(v - m));
    for (float& v : w) v /= sum;
  }
  switch (rule.normalize) {
    case RoutingRule::Normalize::kNone:
      break;
    case RoutingRule::Normalize::kSum: {
      const float den = std::max(total, rule.normMin) + rule.normEps;
      for (float& v : w) v /= den;
      break;
    }
    case RoutingRule::Normalize::kPNorm: {
      // torch.norm(v, p): (Σ|v|^p)^(1/p); p = 1 and 2 as torch computes them.
      float norm = 0;
      if (rule.pNorm == 1.0f) {
        for (float v : w) norm += std::fabs(v);
      } else if (rule.pNorm == 2.0f) {
        for (float v : w) norm += v * v;
        norm = std::sqrt(norm);
      } else {
        for (float v : w) norm += std::pow(std::fabs(v), rule.pNorm);
        norm = std::pow(norm, 1.0f / rule.pNorm);
      }
      for (float& v : w) v /= norm;
      break;
    }
  }
  if (rule.scale != 1.0f) {
    for (float& v : w) v *= rule.scale;
  }
}

RoutingDecision routeLogits(std::span<const float> logits, uint32_t T, uint32_t E,
                            const RoutingRule& rule, std::span<const float> bias) {
  RoutingDecision d;
  d.tokens = T;
  d.k = rule.k;
  d.ids.resize(size_t{T} * rule.k);
  d.weights.resize(size_t{T} * rule.k);
  d.probSum.assign(E, 0.0);
  TokenScores sc(E);
  std::vector<float> group(rule.nGroup);
  for (uint32_t t = 0; t < T; ++t) {
    scoreToken(logits.subspan(size_t{t} * E, E), rule, bias, sc);
    for (uint32_t e = 0; e < E; ++e) d.probSum[e] += sc.p[e];
    if (rule.scoring == RoutingRule::Scoring::kSparseMixer) {
      sparseMixerToken(logits.subspan(size_t{t} * E, E), rule.jitterEps,
                       std::span(d.ids).subspan(size_t{t} * rule.k, rule.k),
                       std::span(d.weights).subspan(size_t{t} * rule.k, rule.k));
      continue;
    }
    if (rule.groups != RoutingRule::Groups::kNone) {
      keepBestGroups(rule, E, sc.choice, group);
    }
    const auto chosen = topIndices(sc.choice, rule.k);
    float* w = d.weights.data() + size_t{t} * rule.k;
    float total = 0;
    for (uint32_t j = 0; j < rule.k; ++j) {
      d.ids[size_t{t} * rule.k + j] = chosen[j];
      w[j] = chosen[j] == rule.zeroWeightExpert ? 0.0f : sc.weight[chosen[j]];
      total += w[j];
    }
    finishWeights(rule, std::span<float>(w, rule.k), total);
  }
  return d;
}

}  // namespace moe::router
