// Degraded routing for experts with no replica; see missing_experts.h for the rules.
#include "router_service/missing_experts.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace moe::router {
namespace {

bool isAvailable(std::span<const uint8_t> available, uint32_t e) {
  return e >= available.size() || available[e] != 0;
}

// The caller's spans against the decision; a mismatch is a bug in the request path.
Status checkShapes(const RoutingDecision& d, std::span<const float> logits, uint32_t E,
                   const RoutingRule& rule, std::span<const float> bias,
                   std::span<const uint8_t> available) {
  const size_t n = size_t{d.tokens} * d.k;
  std::string what;
  if (d.k != rule.k || d.ids.size() != n || d.weights.size() != n) {
    what = "the routing is not [tokens, k] with the rule's k";
  } else if (!d.dropped.empty() && d.dropped.size() != n) {
    what = "dropped is not [tokens, k]";
  } else if (logits.size() != size_t{d.tokens} * E) {
    what = "logits are not [tokens, E]";
  } else if (!bias.empty() && bias.size() != E) {
    what = "bias is not [E]";
  } else if (available.size() > E) {
    what = "available has more than E entries";
  } else if (std::any_of(d.ids.begin(), d.ids.end(), [&](uint32_t e) { return e >= E; })) {
    what = "an expert id is not below E";
  }
  if (what.empty()) return Status::ok();
  return Status::error(StatusCode::kInternal, "missing experts: " + what);
}

// lost[at] = 1 for each assignment whose expert has no replica (capacity-dropped ones are not
// lost); counts them and their weight into `out`.
std::vector<uint8_t> findLost(const RoutingDecision& d, std::span<const uint8_t> available,
                              MissingExpertOutcome& out) {
  std::vector<uint8_t> lost(d.ids.size(), 0);
  for (size_t at = 0; at < d.ids.size(); ++at) {
    if (d.isDropped(at) || isAvailable(available, d.ids[at])) continue;
    lost[at] = 1;
    ++out.assignments;
    out.weightLost += d.weights[at];
  }
  return lost;
}

// "layer 3: experts 5, 7 have no available replica": the distinct experts the request needs.
Error missingError(const RoutingDecision& d, const std::vector<uint8_t>& lost, uint32_t layer) {
  std::vector<uint32_t> experts;
  for (size_t at = 0; at < lost.size(); ++at) {
    if (lost[at]) experts.push_back(d.ids[at]);
  }
  std::sort(experts.begin(), experts.end());
  experts.erase(std::unique(experts.begin(), experts.end()), experts.end());
  std::string list;
  for (uint32_t e : experts) list += (list.empty() ? "" : ", ") + std::to_string(e);
  const bool one = experts.size() == 1;
  return makeError(StatusCode::kUnavailable,
                   "layer " + std::to_string(layer) + (one ? ": expert " : ": experts ") + list +
                       (one ? " has" : " have") + " no available replica");
}

bool tokenLostAny(const std::vector<uint8_t>& lost, uint32_t t, uint32_t k) {
  const auto first = lost.begin() + static_cast<std::ptrdiff_t>(size_t{t} * k);
  return std::any_of(first, first + k, [](uint8_t v) { return v != 0; });
}

// Not computed, weight 0 (the id stays, so the reply names the missing expert).
void dropSlot(RoutingDecision& d, size_t at) {
  if (d.dropped.empty()) d.dropped.assign(d.ids.size(), 0);
  d.dropped[at] = 1;
  d.weights[at] = 0.0f;
}

// renormalize: drop the token's lost slots, scale the rest back to the token's weight sum.
void renormalizeToken(RoutingDecision& d, uint32_t t, const std::vector<uint8_t>& lost) {
  const size_t base = size_t{t} * d.k;
  float before = 0, kept = 0;
  for (uint32_t j = 0; j < d.k; ++j) before += d.weights[base + j];
  for (uint32_t j = 0; j < d.k; ++j) {
    if (lost[base + j]) dropSlot(d, base + j);
    kept += d.weights[base + j];
  }
  if (kept <= 0) return;  // nothing left to carry the weight: every weight is 0
  const float scale = before / kept;
  for (uint32_t j = 0; j < d.k; ++j) d.weights[base + j] *= scale;
}

// The highest selection score among available experts not yet taken (ties: lower id).
std::optional<uint32_t> bestReplacement(std::span<const float> choice,
                                        std::span<const uint8_t> available,
                                        const std::vector<uint8_t>& taken) {
  std::optional<uint32_t> best;
  for (uint32_t e = 0; e < choice.size(); ++e) {
    if (taken[e] || !isAvailable(available, e)) continue;
    if (!best || choice[e] > choice[*best]) best = e;
  }
  return best;
}

// The family's weights of the token's live slots (those not dropped), as routeLogits computes
// them for its chosen experts.
void reweighToken(RoutingDecision& d, uint32_t t, const RoutingRule& rule,
                  std::span<const float> weightScore) {
  const size_t base = size_t{t} * d.k;
  // The live slots' scores, compacted: softmax over the chosen logits (kSoftmaxOverChosen) must
  // see only them; dropped slots weigh 0.
  std::vector<float> live;
  std::vector<uint32_t> at;
  float total = 0;
  for (uint32_t j = 0; j < d.k; ++j) {
    d.weights[base + j] = 0.0f;
    if (d.isDropped(base + j)) continue;
    const uint32_t e = d.ids[base + j];
    live.push_back(e == rule.zeroWeightExpert ? 0.0f : weightScore[e]);
    at.push_back(j);
    total += live.back();
  }
  const bool overChosen = rule.scoring == RoutingRule::Scoring::kSoftmaxOverChosen;
  if (live.empty() || (!overChosen && total <= 0)) return;
  finishWeights(rule, live, total);
  for (size_t i = 0; i < at.size(); ++i) d.weights[base + at[i]] = live[i];
}

struct RerouteContext {
  std::span<const float> logits;  // [T, E]
  uint32_t E;
  const RoutingRule& rule;
  std::span<const float> bias;
  std::span<const uint8_t> available;
};

// reroute: each lost slot takes the best available expert the token lacks, then new weights.
void rerouteToken(RoutingDecision& d, uint32_t t, const std::vector<uint8_t>& lost,
                  const RerouteContext& c, TokenScores& sc) {
  scoreToken(c.logits.subspan(size_t{t} * c.E, c.E), c.rule, c.bias, sc);
  const size_t base = size_t{t} * d.k;
  std::vector<uint8_t> taken(c.E, 0);
  for (uint32_t j = 0; j < d.k; ++j) taken[d.ids[base + j]] = 1;
  for (uint32_t j = 0; j < d.k; ++j) {
    if (!lost[base + j]) continue;
    if (const auto e = bestReplacement(sc.choice, c.available, taken)) {
      d.ids[base + j] = *e;
      taken[*e] = 1;
    } else {
      dropSlot(d, base + j);
    }
  }
  reweighToken(d, t, c.rule, sc.weight);
}

}  // namespace

Result<MissingExpertOutcome> applyMissingExperts(RoutingDecision& d, std::span<const float> logits,
                                                 uint32_t E, const RoutingRule& rule,
                                                 std::span<const float> bias,
                                                 std::span<const uint8_t> available,
                                                 MissingExpertPolicy policy, uint32_t layer) {
  if (auto s = checkShapes(d, logits, E, rule, bias, available); !s) return makeError(s);
  MissingExpertOutcome out;
  const auto lost = findLost(d, available, out);
  if (out.assignments == 0) return out;
  if (policy == MissingExpertPolicy::kError) return missingError(d, lost, layer);
  d.affected.assign(d.tokens, 0);
  const RerouteContext context{logits, E, rule, bias, available};
  TokenScores scores(E);
  for (uint32_t t = 0; t < d.tokens; ++t) {
    if (!tokenLostAny(lost, t, d.k)) continue;
    d.affected[t] = 1;
    if (policy == MissingExpertPolicy::kRenormalize) {
      renormalizeToken(d, t, lost);
    } else {
      rerouteToken(d, t, lost, context, scores);
    }
  }
  return out;
}

uint32_t countUnavailable(std::span<const uint8_t> available) {
  return static_cast<uint32_t>(std::count(available.begin(), available.end(), uint8_t{0}));
}

}  // namespace moe::router
