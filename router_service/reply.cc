// writeForwardResults: see reply.h.
#include "router_service/reply.h"

#include <algorithm>

#include "common/tensor_wire.h"

namespace moe::router {
namespace {

void writeRouting(const RoutingDecision& d, proto::Routing::Builder out) {
  const auto n = static_cast<unsigned>(d.ids.size());
  out.setK(d.k);
  auto ids = out.initExperts(n);
  auto weights = out.initWeights(n);
  auto dropped = out.initDropped(n);
  for (unsigned i = 0; i < n; ++i) {
    ids.set(i, d.ids[i]);
    weights.set(i, d.weights[i]);
    dropped.set(i, d.isDropped(i));
  }
  // Left empty when no token lost an expert, like RoutingDecision::affected.
  if (!d.affected.empty()) {
    auto affected = out.initAffected(d.tokens);
    for (unsigned t = 0; t < d.tokens; ++t) affected.set(t, d.affected[t] != 0);
  }
}

void writeStats(const RequestStats& s, uint32_t tokens, uint64_t totalMicros,
                proto::ForwardStats::Builder out) {
  out.setTokens(tokens);
  out.setShardCalls(s.shardCalls);
  out.setRowsSent(s.rowsSent);
  out.setGateMicros(s.gateMicros);
  out.setDispatchMicros(s.dispatchMicros);
  out.setTotalMicros(totalMicros);
  out.setDroppedAssignments(s.dropped);
  out.setRouterRows(s.routerRows);
  out.setSharedRows(s.sharedRows);
  out.setBatchRequests(s.batchRequests);
  out.setBatchTokens(s.batchTokens);
}

}  // namespace

void writeForwardResults(const ForwardReply& reply, const ModelConfig& model, bool returnRouting,
                         uint64_t totalMicros, proto::Router::ForwardResults::Builder results) {
  const uint32_t T = reply.routing.tokens;
  const uint32_t shape[2] = {T, model.hiddenSize};
  auto out = initF32(results.initOutput(), shape);
  std::copy(reply.output.begin(), reply.output.end(), out.begin());
  if (returnRouting) writeRouting(reply.routing, results.initRouting());
  if (returnRouting || model.gatingResidual) {
    const uint32_t logitShape[2] = {T, model.numExperts};
    auto logits = initF32(results.initGateLogits(), logitShape);
    std::copy(reply.logits.begin(), reply.logits.end(), logits.begin());
  }
  writeStats(reply.stats, T, totalMicros, results.initStats());
}

}  // namespace moe::router
