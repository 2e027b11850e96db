// Reference missing-expert handling: each step as the specification in reference_missing.h
// states it, on the family formulas of reference_routing.cc.
#include "client/reference/reference_missing.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "client/reference/reference_routing.h"

namespace moe::client {
namespace {

bool expertAvailable(const ModelConfig& m, std::span<const uint8_t> available, uint32_t e) {
  if (e >= m.numFfnExperts) return true;  // an MoE++ zero-computation expert, on the router
  return available[e] != 0;
}

// One token's scores as the family's reference code computes them.
struct TokenScores {
  std::vector<float> s;          // the logits, after MoE++'s logits norm
  std::vector<float> forWeight;  // softmax(s), sigmoid(s), or s (softmax over the chosen later)
  std::vector<float> forChoice;  // forWeight + e_score_correction_bias, or s (top-k of logits)
};

TokenScores scoresOf(const ModelConfig& m, std::span<const float> row,
                     std::span<const float> bias) {
  using R = RoutingRecipe;
  TokenScores sc;
  sc.s.assign(row.begin(), row.end());
  const size_t E = sc.s.size();
  if (m.routing.logitsNormStd > 0) {
    // logits / (logits.std() / moe_gate_norm_std), torch's unbiased std
    double mean = 0, var = 0;
    for (float v : sc.s) mean += v;
    mean /= static_cast<double>(E);
    for (float v : sc.s) var += (v - mean) * (v - mean);
    const float divisor =
        static_cast<float>(std::sqrt(var / static_cast<double>(E - 1))) / m.routing.logitsNormStd;
    for (float& v : sc.s) v = v / divisor;
  }
  if (m.routing.logitSoftcap > 0) {  // Laguna: tanh(s / c) * c
    for (float& v : sc.s) v = std::tanh(v / m.routing.logitSoftcap) * m.routing.logitSoftcap;
  }
  if (m.routing.scoring == R::Scoring::kSigmoid) {
    sc.forWeight.resize(E);
    for (size_t e = 0; e < E; ++e) sc.forWeight[e] = 1.0f / (1.0f + std::exp(-sc.s[e]));
  } else if (m.routing.scoring == R::Scoring::kSoftmaxOverChosen) {
    sc.forWeight = sc.s;
  } else {  // the softmax families, and PhiMoE's sparsemixer (reference_missing.h)
    sc.forWeight = referenceSoftmax(sc.s);
  }
  if (m.routing.chooseOnLogits) {
    sc.forChoice = sc.s;
    return sc;
  }
  sc.forChoice = sc.forWeight;
  for (size_t e = 0; e < bias.size(); ++e) sc.forChoice[e] += bias[e];
  return sc;
}

// The family's weights of a token's experts ids [k], over the slots with live[j] (others 0).
std::vector<float> familyWeights(const ModelConfig& m, const TokenScores& sc,
                                 std::span<const uint32_t> ids, const std::vector<bool>& live) {
  using R = RoutingRecipe;
  const R& r = m.routing;
  const size_t k = ids.size();
  std::vector<float> w(k, 0.0f);
  if (r.scoring == R::Scoring::kSoftmaxOverChosen) {
    // gates = softmax(logits of the chosen experts)
    std::vector<float> chosen;
    for (size_t j = 0; j < k; ++j) {
      if (live[j]) chosen.push_back(sc.s[ids[j]]);
    }
    if (chosen.empty()) return w;
    const auto g = referenceSoftmax(chosen);
    for (size_t j = 0, i = 0; j < k; ++j) {
      if (live[j]) w[j] = g[i++];
    }
    for (float& v : w) v = r.scale != 1.0f ? v * r.scale : v;
    return w;
  }
  float sum = 0;
  for (size_t j = 0; j < k; ++j) {
    if (!live[j]) continue;
    // MoE++ default gating: where(indices == E - 1, 0, gates)
    w[j] = r.zeroWeightExpert && ids[j] == *r.zeroWeightExpert ? 0.0f : sc.forWeight[ids[j]];
    sum += w[j];
  }
  if (r.normalize == R::Normalize::kSum && sum > 0) {
    float denominator = sum;
    if (r.normMin > 0) denominator = std::fmax(denominator, r.normMin);
    if (r.normEps > 0) denominator = denominator + r.normEps;
    for (float& v : w) v = v / denominator;
  } else if (r.normalize == R::Normalize::kPNorm && sum > 0) {
    double acc = 0;
    for (float v : w) acc += std::pow(std::fabs(static_cast<double>(v)), r.pNorm);
    const auto norm = static_cast<float>(std::pow(acc, 1.0 / r.pNorm));
    for (float& v : w) v = v / norm;
  }
  for (float& v : w) v = r.scale != 1.0f ? v * r.scale : v;
  return w;
}

Error missingExpertsError(std::vector<uint32_t> experts, uint32_t layer) {
  std::sort(experts.begin(), experts.end());
  experts.erase(std::unique(experts.begin(), experts.end()), experts.end());
  std::string msg = "layer " + std::to_string(layer) + ": expert";
  if (experts.size() > 1) msg += "s";
  for (size_t i = 0; i < experts.size(); ++i) {
    msg += (i == 0 ? " " : ", ") + std::to_string(experts[i]);
  }
  msg += experts.size() > 1 ? " have" : " has";
  return makeError(StatusCode::kUnavailable, msg + " no available replica");
}

// renormalize, one token: drop the lost slots, scale the others by before / after.
void renormalizeToken(ReferenceRouting& r, size_t t, const std::vector<bool>& lost) {
  const size_t k = r.k;
  float before = 0;
  for (size_t j = 0; j < k; ++j) before += r.weights[t * k + j];
  for (size_t j = 0; j < k; ++j) {
    if (!lost[t * k + j]) continue;
    r.dropped[t * k + j] = 1;
    r.weights[t * k + j] = 0.0f;
  }
  float after = 0;
  for (size_t j = 0; j < k; ++j) after += r.weights[t * k + j];
  if (after <= 0) return;
  const float scale = before / after;
  for (size_t j = 0; j < k; ++j) r.weights[t * k + j] *= scale;
}

// reroute, one token: each lost slot takes the best available expert not yet the token's, then
// the family's weights over the slots not dropped.
void rerouteToken(const ModelConfig& m, const TokenScores& sc, std::span<const uint8_t> available,
                  ReferenceRouting& r, size_t t, const std::vector<bool>& lost) {
  const size_t k = r.k;
  std::span<uint32_t> ids(r.ids.data() + t * k, k);
  for (size_t j = 0; j < k; ++j) {
    if (!lost[t * k + j]) continue;
    int best = -1;
    for (uint32_t e = 0; e < m.numExperts; ++e) {
      if (!expertAvailable(m, available, e)) continue;
      if (std::find(ids.begin(), ids.end(), e) != ids.end()) continue;  // the token has it
      if (best < 0 || sc.forChoice[e] > sc.forChoice[static_cast<size_t>(best)])
        best = static_cast<int>(e);
    }
    if (best >= 0) {
      ids[j] = static_cast<uint32_t>(best);
    } else {
      r.dropped[t * k + j] = 1;
    }
  }
  std::vector<bool> live(k);
  for (size_t j = 0; j < k; ++j) live[j] = r.dropped[t * k + j] == 0;
  const auto w = familyWeights(m, sc, ids, live);
  std::copy(w.begin(), w.end(), r.weights.begin() + static_cast<std::ptrdiff_t>(t * k));
}

}  // namespace

Result<ReferenceMissingCounts> applyReferenceMissingExperts(
    const ModelConfig& m, MissingExpertPolicy policy, uint32_t layer, std::span<const float> logits,
    std::span<const float> bias, std::span<const uint8_t> available, ReferenceRouting& r) {
  const uint32_t E = m.numExperts;
  const size_t k = r.k, T = r.ids.size() / k;
  if (available.size() != m.numFfnExperts || logits.size() != T * E) {
    return makeError(StatusCode::kInternal, "reference missing experts: shapes do not fit");
  }
  // 1. The lost assignments: not dropped by capacity, expert unavailable.
  ReferenceMissingCounts counts;
  std::vector<bool> lost(T * k, false);
  std::vector<uint32_t> missing;
  for (size_t i = 0; i < T * k; ++i) {
    const bool capped = !r.dropped.empty() && r.dropped[i] != 0;
    if (capped || expertAvailable(m, available, r.ids[i])) continue;
    lost[i] = true;
    counts.assignments += 1;
    counts.weightLost += r.weights[i];
    missing.push_back(r.ids[i]);
  }
  if (counts.assignments == 0) return counts;
  if (policy == MissingExpertPolicy::kError) return missingExpertsError(missing, layer);
  // 2. Per token that lost one: renormalize or reroute, and mark it.
  if (r.dropped.empty()) r.dropped.assign(T * k, 0);
  r.affected.assign(T, 0);
  for (size_t t = 0; t < T; ++t) {
    bool any = false;
    for (size_t j = 0; j < k; ++j) any = any || lost[t * k + j];
    if (!any) continue;
    r.affected[t] = 1;
    if (policy == MissingExpertPolicy::kRenormalize) {
      renormalizeToken(r, t, lost);
    } else {
      rerouteToken(m, scoresOf(m, logits.subspan(t * E, E), bias), available, r, t, lost);
    }
  }
  return counts;
}

}  // namespace moe::client
