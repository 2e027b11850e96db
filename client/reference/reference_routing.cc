// Reference routing: each step mirrors one tensor op of the reference code.
#include "client/reference/reference_routing.h"

#include <algorithm>
#include <cmath>

namespace moe::client {
namespace {

// torch.topk(v, n) with ties to the lower index, by n passes of argmax over what is left.
std::vector<uint32_t> topk(std::span<const float> v, uint32_t n) {
  std::vector<uint32_t> out;
  std::vector<bool> taken(v.size(), false);
  for (uint32_t j = 0; j < n; ++j) {
    int best = -1;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!taken[i] && (best < 0 || v[i] > v[static_cast<size_t>(best)]))
        best = static_cast<int>(i);
    }
    taken[static_cast<size_t>(best)] = true;
    out.push_back(static_cast<uint32_t>(best));
  }
  return out;
}

// The [E] row of token t in a [T, E] tensor.
std::span<const float> row(std::span<const float> m, size_t t, uint32_t E) {
  return m.subspan(t * E, E);
}

// One eval-mode half of transformers' sparsemixer(scores, jitter_eps, training=False), op by op:
//   mask_logits_threshold, max_ind = candidates.max(dim=-1, keepdim=True)
//   factor = scores.abs().clamp(min=mask_logits_threshold)
//   mask_logits_threshold = ((mask_logits_threshold - scores) / factor) > (2 * jitter_eps)
//   masked_gates = candidates.masked_fill(mask_logits_threshold, float("-inf"))
//   selected_experts = max_ind
//   masked_gates = torch.softmax(masked_gates, dim=-1)
//   multiplier = masked_gates.gather(dim=-1, index=selected_experts)
// `candidates` is `scores` for the first expert, masked_scores (the first at -inf) for the
// second; factor and the mask test read `scores` both times.
void sparseMixerHalf(std::span<const float> scores, std::span<const float> candidates,
                     float jitterEps, uint32_t& selected, float& multiplier) {
  const size_t E = scores.size();
  // torch.max(dim): the first maximal index (a NaN wins and stops the scan)
  size_t maxInd = 0;
  for (size_t e = 1; e < E; ++e) {
    if (std::isnan(candidates[maxInd])) break;
    if (candidates[e] > candidates[maxInd] || std::isnan(candidates[e])) maxInd = e;
  }
  const float threshold = candidates[maxInd];
  std::vector<float> maskedGates(E);
  for (size_t e = 0; e < E; ++e) {
    const float factor = std::fmax(std::fabs(scores[e]), threshold);
    const bool mask = (threshold - scores[e]) / factor > 2.0f * jitterEps;
    maskedGates[e] = mask ? -INFINITY : candidates[e];
  }
  const auto gates = referenceSoftmax(maskedGates);
  selected = static_cast<uint32_t>(maxInd);
  multiplier = gates[maxInd];
}

// transformers' sparsemixer in eval mode: the two halves, the second on torch.scatter(scores,
// -1, selected_experts, -inf); multiplier and selected_experts concatenated.
void referenceSparseMixerRoute(const ModelConfig& m, std::span<const float> logits, size_t T,
                               std::vector<uint32_t>& ids, std::vector<float>& weights) {
  const uint32_t E = m.numExperts, k = m.topK;
  ids.assign(T * k, 0);
  weights.assign(T * k, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    const auto scores = row(logits, t, E);
    uint32_t selected[2];
    float multiplier[2];
    sparseMixerHalf(scores, scores, m.routing.jitterEps, selected[0], multiplier[0]);
    std::vector<float> maskedScores(scores.begin(), scores.end());
    maskedScores[selected[0]] = -INFINITY;
    sparseMixerHalf(scores, maskedScores, m.routing.jitterEps, selected[1], multiplier[1]);
    for (uint32_t j = 0; j < std::min<uint32_t>(k, 2); ++j) {
      ids[t * k + j] = selected[j];
      weights[t * k + j] = multiplier[j];
    }
  }
}

}  // namespace

std::vector<float> referenceSoftmax(std::span<const float> v) {
  float mx = v[0];
  for (float e : v) mx = std::fmax(mx, e);
  std::vector<float> p(v.size());
  float sum = 0;
  for (size_t i = 0; i < v.size(); ++i) sum += (p[i] = std::exp(v[i] - mx));
  for (float& e : p) e /= sum;
  return p;
}

void referenceSoftmaxRoute(std::span<const float> logits, size_t T, uint32_t E, uint32_t k,
                           bool renormalize, std::vector<uint32_t>& ids,
                           std::vector<float>& weights) {
  ids.assign(T * k, 0);
  weights.assign(T * k, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    // routing_weights = softmax(router_logits); topk(routing_weights, k); /= sum when normalizing
    const auto p = referenceSoftmax(row(logits, t, E));
    const auto chosen = topk(p, k);
    float sum = 0;
    for (uint32_t j = 0; j < k; ++j) sum += p[chosen[j]];
    for (uint32_t j = 0; j < k; ++j) {
      ids[t * k + j] = chosen[j];
      weights[t * k + j] = renormalize ? p[chosen[j]] / sum : p[chosen[j]];
    }
  }
}

void referenceMoePlusPlusRoute(const ModelConfig& m, std::span<const float> logits, size_t T,
                               std::vector<uint32_t>& ids, std::vector<float>& weights) {
  const uint32_t E = m.numExperts, k = m.topK;
  ids.assign(T * k, 0);
  weights.assign(T * k, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    const auto r = row(logits, t, E);
    std::vector<float> s(r.begin(), r.end());
    if (m.moeLogitsNorm) {
      // logits / (logits.std(dim=1) / target_std); torch.std is unbiased (divides by E - 1).
      double mean = 0, var = 0;
      for (float v : s) mean += v;
      mean /= E;
      for (float v : s) var += (v - mean) * (v - mean);
      const float stdev = static_cast<float>(std::sqrt(var / (E - 1)));
      const float divisor = stdev / m.moeGateNormStd;
      for (float& v : s) v = v / divisor;
    }
    std::vector<uint32_t> chosen;
    std::vector<float> w(k);
    if (m.moeMixtralGating) {
      // gates, indices = topk(logits, k); gates = softmax(gates)
      chosen = topk(s, k);
      for (uint32_t j = 0; j < k; ++j) w[j] = s[chosen[j]];
      w = referenceSoftmax(w);
    } else {
      // gates = softmax(logits); topk; where(indices == E-1, 0, gates); gates /= sum(gates)
      const auto p = referenceSoftmax(s);
      chosen = topk(p, k);
      float sum = 0;
      for (uint32_t j = 0; j < k; ++j) sum += (w[j] = chosen[j] == E - 1 ? 0.0f : p[chosen[j]]);
      for (float& v : w) v /= sum;
    }
    for (uint32_t j = 0; j < k; ++j) {
      ids[t * k + j] = chosen[j];
      weights[t * k + j] = w[j];
    }
  }
}

void referenceRoute(const ModelConfig& m, std::span<const float> logits, size_t T,
                    std::span<const float> bias, std::vector<uint32_t>& ids,
                    std::vector<float>& weights) {
  using R = RoutingRecipe;
  const R& r = m.routing;
  // MoE++'s gating(); LongCat-Flash's identity experts are routed as FFN experts are, below.
  if (r.zeroWeightExpert || r.logitsNormStd > 0 ||
      (m.numFfnExperts < m.numExperts && !m.identityZeroExperts)) {
    referenceMoePlusPlusRoute(m, logits, T, ids, weights);
    return;
  }
  if (r.scoring == R::Scoring::kSparseMixer) {
    referenceSparseMixerRoute(m, logits, T, ids, weights);
    return;
  }
  const uint32_t E = m.numExperts, k = m.topK, G = r.nGroup, perGroup = E / G;
  ids.assign(T * k, 0);
  weights.assign(T * k, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    const auto raw = row(logits, t, E);
    // Laguna: router_logits = tanh(router_logits / softcapping) * softcapping when > 0.0
    std::vector<float> capped(raw.begin(), raw.end());
    if (r.logitSoftcap > 0) {
      for (float& v : capped) v = std::tanh(v / r.logitSoftcap) * r.logitSoftcap;
    }
    const std::span<const float> s(capped);
    // routing_weights = softmax(router_logits) | sigmoid(router_logits); (top-k-of-logits
    // families take the logits themselves and score only the chosen ones below)
    std::vector<float> scores(s.begin(), s.end());
    if (r.scoring == R::Scoring::kSoftmax) scores = referenceSoftmax(s);
    if (r.scoring == R::Scoring::kSigmoid) {
      for (uint32_t e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-s[e]));
    }
    // scores_for_choice = scores + e_score_correction_bias, or the logits (gpt-oss, Granite,
    // Llama 4: topk(router_logits))
    std::vector<float> forChoice =
        r.chooseOnLogits ? std::vector<float>(s.begin(), s.end()) : scores;
    if (!r.chooseOnLogits && !bias.empty()) {
      for (uint32_t e = 0; e < E; ++e) forChoice[e] += bias[e];
    }
    if (r.groups != R::Groups::kNone) {
      // group_scores: view [G, E/G] → topk(2).sum (noaux_tc) or max (group_limited_greedy)
      std::vector<float> groupScores(G);
      for (uint32_t g = 0; g < G; ++g) {
        std::vector<float> members(forChoice.begin() + g * perGroup,
                                   forChoice.begin() + (g + 1) * perGroup);
        if (r.groups == R::Groups::kTop2Sum) {
          float sum = 0;
          for (uint32_t i : topk(members, std::min<uint32_t>(2, perGroup))) sum += members[i];
          groupScores[g] = sum;
        } else {
          groupScores[g] = members[topk(members, 1)[0]];
        }
      }
      // group_mask.scatter_(topk(group_scores, topk_group)); masked_fill(~score_mask, 0.0|-inf)
      std::vector<bool> mask(G, false);
      for (uint32_t g : topk(groupScores, r.topkGroup)) mask[g] = true;
      for (uint32_t e = 0; e < E; ++e) {
        if (!mask[e / perGroup]) forChoice[e] = r.groupMask;
      }
    }
    // topk_indices = topk(scores_for_choice, k); topk_weights = scores.gather(topk_indices)
    const auto chosen = topk(forChoice, k);
    std::vector<float> w(k);
    for (uint32_t j = 0; j < k; ++j) w[j] = scores[chosen[j]];
    // softmax(top_k_logits) (gpt-oss, Granite)
    if (r.scoring == R::Scoring::kSoftmaxOverChosen) w = referenceSoftmax(w);
    if (r.normalize == R::Normalize::kSum) {
      // topk_weights / (sum + 1e-20) (DeepSeek), / clamp(sum, min=norm_min) (ERNIE), / sum
      float sum = 0;
      for (float v : w) sum += v;
      float denominator = sum;
      if (r.normMin > 0) denominator = std::fmax(denominator, r.normMin);
      if (r.normEps > 0) denominator = denominator + r.normEps;
      for (float& v : w) v = v / denominator;
    } else if (r.normalize == R::Normalize::kPNorm) {
      // top_value / torch.norm(top_value, p=moe_normalize_expert_weights)
      double acc = 0;
      for (float v : w) acc += std::pow(std::fabs(static_cast<double>(v)), r.pNorm);
      const auto norm = static_cast<float>(std::pow(acc, 1.0 / r.pNorm));
      for (float& v : w) v = v / norm;
    }
    for (uint32_t j = 0; j < k; ++j) {
      ids[t * k + j] = chosen[j];
      weights[t * k + j] = r.scale != 1.0f ? w[j] * r.scale : w[j];
    }
  }
}

}  // namespace moe::client
