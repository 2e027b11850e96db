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

void referenceDeepseekRoute(const ModelConfig& m, std::span<const float> logits, size_t T,
                            std::span<const float> bias, std::vector<uint32_t>& ids,
                            std::vector<float>& weights) {
  const uint32_t E = m.numExperts, k = m.topK, G = m.nGroup, perGroup = E / G;
  const bool v3 = m.family == ModelFamily::kDeepseekV3;
  ids.assign(T * k, 0);
  weights.assign(T * k, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    // scores = sigmoid(logits) (V3 noaux_tc) or softmax(logits, fp32) (V2)
    std::vector<float> scores(E);
    if (v3 && m.scoringFunc == "sigmoid") {
      for (uint32_t e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[t * E + e]));
    } else {
      scores = referenceSoftmax(row(logits, t, E));
    }
    // scores_for_choice = scores + e_score_correction_bias
    std::vector<float> forChoice = scores;
    if (!bias.empty()) {
      for (uint32_t e = 0; e < E; ++e) forChoice[e] += bias[e];
    }
    const bool grouped = m.topkMethod == "noaux_tc" || m.topkMethod == "group_limited_greedy";
    if (grouped) {
      // group_scores: view [G, E/G] → topk(2).sum (noaux_tc) or max (group_limited_greedy)
      std::vector<float> groupScores(G);
      for (uint32_t g = 0; g < G; ++g) {
        std::vector<float> members(forChoice.begin() + g * perGroup,
                                   forChoice.begin() + (g + 1) * perGroup);
        if (m.topkMethod == "noaux_tc") {
          float s = 0;
          for (uint32_t i : topk(members, std::min<uint32_t>(2, perGroup))) s += members[i];
          groupScores[g] = s;
        } else {
          groupScores[g] = members[topk(members, 1)[0]];
        }
      }
      // group_mask.scatter_(topk(group_scores, topk_group)); masked_fill(~score_mask, 0.0)
      std::vector<bool> mask(G, false);
      for (uint32_t g : topk(groupScores, m.topkGroup)) mask[g] = true;
      for (uint32_t e = 0; e < E; ++e) {
        if (!mask[e / perGroup]) forChoice[e] = 0.0f;
      }
    }
    // topk_indices = topk(scores_for_choice, k); topk_weights = scores.gather(topk_indices)
    const auto chosen = topk(forChoice, k);
    float denominator = 0;
    for (uint32_t j = 0; j < k; ++j) {
      ids[t * k + j] = chosen[j];
      weights[t * k + j] = scores[chosen[j]];
      denominator += scores[chosen[j]];
    }
    for (uint32_t j = 0; j < k; ++j) {
      float& w = weights[t * k + j];
      if (v3) {  // normalize if norm_topk_prob, then always scale
        if (m.normTopkProb) w = w / (denominator + 1e-20f);
        w = w * m.routedScalingFactor;
      } else if (k > 1 && m.normTopkProb) {  // V2: normalize, or else scale
        w = w / (denominator + 1e-20f);
      } else {
        w = w * m.routedScalingFactor;
      }
    }
  }
}

}  // namespace moe::client
