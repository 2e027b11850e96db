// routeBatch: see route_stage.h.
#include "router_service/route_stage.h"

#include "router_service/capacity.h"
#include "router_service/routing.h"

#include <algorithm>
#include <string>

namespace moe::router {
namespace {

// Why the request's first missing expert has no replica (its shards' states), for its error.
std::string whyMissing(const RoutingDecision& d, const ReplicaChoice& replicas) {
  for (size_t at = 0; at < d.ids.size(); ++at) {
    const uint32_t e = d.ids[at];
    if (!d.isDropped(at) && e < replicas.why.size() && !replicas.why[e].empty())
      return replicas.why[e];
  }
  return "";
}

// routing.missing_expert on one request's routing: fail it, or renormalize / reroute.
void applyMissing(const LayerModel& L, const ReplicaChoice& replicas, std::span<const float> scores,
                  MemberRouting& r) {
  const ModelConfig& model = *L.model;
  const std::span<const uint8_t> ffn =
      std::span<const uint8_t>(replicas.available).first(model.numFfnExperts);
  if (std::find(ffn.begin(), ffn.end(), 0) == ffn.end()) return;  // every expert is available
  auto outcome = applyMissingExperts(r.decision, scores, model.numExperts, routingRuleFor(model),
                                     L.bias, ffn, L.routing->missingExpert, L.layer);
  if (outcome) {
    r.missing = outcome.value();
    return;
  }
  const std::string why = whyMissing(r.decision, replicas);
  r.status = Status::error(outcome.code(), outcome.error() + (why.empty() ? "" : " (" + why + ")"));
}

// One request's routing from its slice of the batch's logits, as if it were served alone.
Result<MemberRouting> routeMember(const LayerModel& L, const Batch& b, const Batch::Member& m,
                                  const ReplicaChoice& replicas,
                                  std::span<const float> batchLogits) {
  const ModelConfig& model = *L.model;
  const size_t E = model.numExperts, H = model.hiddenSize;
  MemberRouting r;
  auto slice = batchLogits.subspan(m.offset * E, m.tokens * E);
  r.logits.assign(slice.begin(), slice.end());
  if (m.prevLogits) {
    if (auto s = L.gate->addResidual(m.prevLogits->values(), m.tokens, r.logits); !s)
      return makeError(s);
  }
  GateInputs inputs;
  inputs.layer = L.layer;
  inputs.noiseSeed = m.noiseSeed;
  auto x = std::span<const float>(b.x).subspan(m.offset * H, m.tokens * H);
  auto d = routeRequest(*L.backend, *L.gate, x, r.logits, m.tokens, model, L.bias, inputs);
  if (!d) return makeError(d.status());
  r.decision = std::move(d).value();
  r.dropped = applyCapacity(r.decision, *L.routing, model.numExperts, model.numFfnExperts);
  std::vector<float> noisy;  // the scores it was routed on, when noise was on (deterministic)
  if (m.noiseSeed) {
    noisy = r.logits;
    if (auto s = L.gate->addNoise(x, m.tokens, *m.noiseSeed, L.layer, noisy); !s)
      return makeError(s);
  }
  applyMissing(L, replicas, m.noiseSeed ? std::span<const float>(noisy) : r.logits, r);
  return r;
}

// The members' decisions back to back: the batch's routing, for the plan and the load metrics.
// A failed member's assignments are marked dropped here, so none of its rows is sent.
RoutingDecision mergeDecisions(const std::vector<MemberRouting>& members, uint32_t k, size_t E) {
  RoutingDecision d;
  d.k = k;
  d.probSum.assign(E, 0.0);
  bool anyDropped = false;
  for (const auto& m : members) anyDropped |= !m.decision.dropped.empty() || !m.status;
  for (const auto& m : members) {
    const RoutingDecision& md = m.decision;
    d.tokens += md.tokens;
    d.ids.insert(d.ids.end(), md.ids.begin(), md.ids.end());
    d.weights.insert(d.weights.end(), md.weights.begin(), md.weights.end());
    for (size_t e = 0; e < E && e < md.probSum.size(); ++e) d.probSum[e] += md.probSum[e];
    if (!m.status) {
      d.dropped.resize(d.ids.size() - md.ids.size(), 0);
      d.dropped.insert(d.dropped.end(), md.ids.size(), 1);
    } else if (anyDropped) {
      if (md.dropped.empty()) {
        d.dropped.insert(d.dropped.end(), md.ids.size(), 0);
      } else {
        d.dropped.insert(d.dropped.end(), md.dropped.begin(), md.dropped.end());
      }
    }
  }
  return d;
}

// The shared expert: computed here when no shard holds it, else its gate weights go into the
// plan. Then MoE++'s zero-computation experts, per request.
Status planLocalAndShared(const LayerModel& L, const Batch& b, const ReplicaChoice& replicas,
                          RoutedBatch& r) {
  const ModelConfig& model = *L.model;
  const size_t H = model.hiddenSize;
  DispatchExtras extras;
  extras.routedExperts = model.numExperts;
  extras.shardOfExpert = replicas.shardOfExpert;
  std::vector<float> sharedWeights;
  if (L.shared != nullptr) {
    r.hasShared = true;
    auto onShards = L.placement->sharedShardsFor(L.layer);
    if (!onShards.empty()) {
      if (replicas.sharedShard == UINT32_MAX) {
        return Status::error(
            StatusCode::kUnavailable,
            "layer " + std::to_string(L.layer) + ": the shared expert has no available replica");
      }
      auto w = L.shared->weights(*L.backend, b.x, b.tokens);
      if (!w) return w.status();
      sharedWeights = std::move(w).value();
      extras.sharedShard = replicas.sharedShard;
      extras.sharedWeights = sharedWeights;
    } else {
      r.local.resize(size_t{b.tokens} * H);
      if (auto s = L.shared->compute(*L.backend, b.x, b.tokens, r.local); !s) return s;
    }
  }
  auto plan = planDispatch(r.merged, *L.placement, L.layer, extras);
  if (!plan) return plan.status();
  r.plan = std::move(plan).value();
  if (L.zero == nullptr) return Status::ok();
  if (r.local.empty()) r.local.assign(size_t{b.tokens} * H, 0.0f);
  for (size_t i = 0; i < b.members.size(); ++i) {
    const auto& m = b.members[i];
    auto x = std::span<const float>(b.x).subspan(m.offset * H, m.tokens * H);
    auto out = std::span<float>(r.local).subspan(m.offset * H, m.tokens * H);
    r.members[i].zeroCompute =
        L.zero->accumulate(r.members[i].decision, x, model.expertInputScale(), out);
  }
  return Status::ok();
}

}  // namespace

Result<RoutedBatch> routeBatch(const LayerModel& L, const Batch& b, const ReplicaChoice& replicas) {
  const ModelConfig& model = *L.model;
  std::vector<float> logits(size_t{b.tokens} * model.numExperts);
  if (auto s = L.gate->logits(b.x, b.tokens, logits); !s) return makeError(s);
  RoutedBatch r;
  for (const auto& m : b.members) {
    auto routed = routeMember(L, b, m, replicas, logits);
    if (!routed) return makeError(routed.status());
    r.members.push_back(std::move(routed).value());
  }
  r.merged = mergeDecisions(r.members, r.members.front().decision.k, model.numExperts);
  r.outputScale = model.blockOutputScale();
  if (auto s = planLocalAndShared(L, b, replicas, r); !s) return makeError(s);
  return r;
}

}  // namespace moe::router
