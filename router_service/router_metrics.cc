// RouterMetrics: families registered once; the load window turns assignments into gauges.
#include "router_service/router_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/metrics_util.h"

namespace moe::router {

RouterMetrics::RouterMetrics(prometheus::Registry& registry, const ModelConfig& model,
                             const std::vector<ShardConfig>& shards, std::string_view backend,
                             const RouterMetricsOptions& options)
    : inFlight(prometheus::BuildGauge()
                   .Name("moe_router_in_flight_requests")
                   .Help("Router.forward calls being served")
                   .Register(registry)
                   .Add({})),
      queueDepth(prometheus::BuildGauge()
                     .Name("moe_router_queue_depth")
                     .Help("Router.forward requests waiting to join a batch")
                     .Register(registry)
                     .Add({})),
      gateDuration(prometheus::BuildHistogram()
                       .Name("moe_router_gate_duration_seconds")
                       .Help("Gating and dispatch planning time of one merged batch")
                       .Register(registry)
                       .Add({}, latencyBuckets())),
      batchTokens(prometheus::BuildHistogram()
                      .Name("moe_router_batch_tokens")
                      .Help("Tokens per merged batch")
                      .Register(registry)
                      .Add({}, sizeBuckets(options.sizeLimits))),
      batchRequests(prometheus::BuildHistogram()
                        .Name("moe_router_batch_requests")
                        .Help("Router.forward requests per merged batch")
                        .Register(registry)
                        .Add({}, sizeBuckets())),
      queueSeconds(prometheus::BuildHistogram()
                       .Name("moe_router_queue_seconds")
                       .Help("Time from a request's admission to the start of its batch's gating")
                       .Register(registry)
                       .Add({}, latencyBuckets())),
      tlsServerHandshakeFailures(
          registerTlsHandshakeFailures(registry).Add({{"side", "server"}, {"shard", ""}})),
      requests_(prometheus::BuildCounter()
                    .Name("moe_router_requests_total")
                    .Help("Router.forward calls by result code")
                    .Register(registry)),
      requestDurations_(prometheus::BuildHistogram()
                            .Name("moe_router_request_duration_seconds")
                            .Help("End-to-end latency of Router.forward, per MoE layer")
                            .Register(registry)),
      otherLayerDuration_(requestDurations_.Add({{"layer", "other"}}, latencyBuckets())),
      numExperts_(model.numExperts) {
  registerBuildInfo(registry, "router", backend);
  for (const char* code : {"ok", "invalid_argument", "failed_precondition", "unavailable",
                           "deadline_exceeded", "resource_exhausted", "internal"}) {
    requestsByCode_.emplace(code, &requests_.Add({{"code", code}}));
  }
  auto& tokens = prometheus::BuildCounter()
                     .Name("moe_router_tokens_total")
                     .Help("Tokens served, per MoE layer")
                     .Register(registry);
  auto& routed = prometheus::BuildCounter()
                     .Name("moe_expert_assignments_total")
                     .Help("Token-to-expert assignments made by the gate")
                     .Register(registry);
  auto& dropped = prometheus::BuildCounter()
                      .Name("moe_capacity_dropped_assignments_total")
                      .Help("Token-to-expert assignments dropped by the capacity limit")
                      .Register(registry);
  auto& zero = prometheus::BuildCounter()
                   .Name("moe_zero_compute_assignments_total")
                   .Help("Assignments served by zero-computation experts on the router")
                   .Register(registry);
  auto& imbalance = prometheus::BuildGauge()
                        .Name("moe_layer_load_imbalance")
                        .Help("Max over mean expert load in the recent window (1 = balanced)")
                        .Register(registry);
  auto& loss = prometheus::BuildGauge()
                   .Name("moe_layer_load_balancing_loss")
                   .Help("Switch-Transformer auxiliary loss E*sum(f_i*P_i) over the recent window")
                   .Register(registry);
  auto& entropy =
      prometheus::BuildGauge()
          .Name("moe_layer_routing_entropy")
          .Help("Entropy of the expert load in the recent window over log(E); 1 = uniform")
          .Register(registry);
  for (uint32_t layer : model.moeLayers) {
    const std::string l = std::to_string(layer);
    Layer& st = layers_[layer];
    st.tokens = &tokens.Add({{"layer", l}});
    st.duration = &requestDurations_.Add({{"layer", l}}, latencyBuckets());
    for (uint32_t e = 0; options.perExpert && e < model.numExperts; ++e) {
      st.routed.push_back(&routed.Add({{"layer", l}, {"expert", std::to_string(e)}}));
    }
    // Created (at 0) so dashboards and alerts see the series before any drop happens.
    st.dropped = &dropped.Add({{"layer", l}});
    st.zeroCompute = &zero.Add({{"layer", l}});
    st.imbalance = &imbalance.Add({{"layer", l}});
    st.balanceLoss = &loss.Add({{"layer", l}});
    st.entropy = &entropy.Add({{"layer", l}});
    st.window.assignments.assign(model.numExperts, 0);
    st.window.probSum.assign(model.numExperts, 0);
  }
  addMissingExpertSeries(registry);
  ShardFamilies& f = shardFamilies_;
  f.duration = &prometheus::BuildHistogram()
                    .Name("moe_shard_rpc_duration_seconds")
                    .Help("Latency of one ExpertShard.run call, per shard")
                    .Register(registry);
  f.errors = &prometheus::BuildCounter()
                  .Name("moe_shard_rpc_errors_total")
                  .Help("Failed ExpertShard.run calls, per shard and code")
                  .Register(registry);
  f.inFlight = &prometheus::BuildGauge()
                    .Name("moe_shard_rpc_in_flight")
                    .Help("ExpertShard.run calls in flight, per shard")
                    .Register(registry);
  f.up = &prometheus::BuildGauge()
              .Name("moe_shard_up")
              .Help("1 when the last call or probe to the shard succeeded")
              .Register(registry);
  f.rowsSent = &prometheus::BuildCounter()
                    .Name("moe_shard_rows_sent_total")
                    .Help("Token rows sent to the shard")
                    .Register(registry);
  f.sentBytes = &prometheus::BuildCounter()
                     .Name("moe_shard_sent_bytes_total")
                     .Help("Payload bytes of token rows sent to the shard (router.wire_dtype)")
                     .Register(registry);
  f.receivedBytes = &prometheus::BuildCounter()
                         .Name("moe_shard_received_bytes_total")
                         .Help("Payload bytes of results received from the shard")
                         .Register(registry);
  f.inflightRows = &prometheus::BuildGauge()
                        .Name("moe_shard_inflight_rows")
                        .Help("Token rows sent to the shard and not yet answered")
                        .Register(registry);
  f.identityMismatches =
      &prometheus::BuildCounter()
           .Name("moe_shard_identity_mismatch_total")
           .Help("Probes that found another model or placement at the shard's address")
           .Register(registry);
  f.tlsHandshakeFailures = &registerTlsHandshakeFailures(registry);
  for (const auto& s : shards) addShard(s);
}

void RouterMetrics::addShard(const ShardConfig& shard) {
  const ShardFamilies& f = shardFamilies_;
  const prometheus::Labels l{{"shard", shard.name}};
  auto withCode = [&](const char* code) {
    return &f.errors->Add({{"shard", shard.name}, {"code", code}});
  };
  Shard sh{};
  sh.duration = &f.duration->Add(l, latencyBuckets());
  sh.inFlight = &f.inFlight->Add(l);
  sh.up = &f.up->Add(l);
  sh.rowsSent = &f.rowsSent->Add(l);
  sh.sentBytes = &f.sentBytes->Add(l);
  sh.receivedBytes = &f.receivedBytes->Add(l);
  sh.inflightRows = &f.inflightRows->Add(l);
  sh.identityMismatches = &f.identityMismatches->Add(l);
  sh.tlsHandshakeFailures =
      &f.tlsHandshakeFailures->Add({{"side", "client"}, {"shard", shard.name}});
  sh.errUnavailable = withCode("unavailable");
  sh.errDeadline = withCode("deadline_exceeded");
  sh.errInternal = withCode("internal");
  shards_.push_back(sh);
}

void RouterMetrics::addMissingExpertSeries(prometheus::Registry& registry) {
  auto& assignments = prometheus::BuildCounter()
                          .Name("moe_missing_expert_assignments_total")
                          .Help(
                              "Token-to-expert assignments dropped or moved because the expert "
                              "had no available replica")
                          .Register(registry);
  auto& weight = prometheus::BuildCounter()
                     .Name("moe_missing_routing_weight_total")
                     .Help("Routing weight of the assignments lost to experts without a replica")
                     .Register(registry);
  auto& unavailable = prometheus::BuildGauge()
                          .Name("moe_experts_unavailable")
                          .Help("FFN experts of the layer with no available replica")
                          .Register(registry);
  for (auto& [layer, st] : layers_) {
    const prometheus::Labels l{{"layer", std::to_string(layer)}};
    st.missingAssignments = &assignments.Add(l);
    st.missingWeight = &weight.Add(l);
    st.unavailable = &unavailable.Add(l);
  }
}

void RouterMetrics::recordRequest(std::string_view code, double seconds, uint32_t layer) {
  auto it = requestsByCode_.find(code);
  (it != requestsByCode_.end() ? it : requestsByCode_.find("internal"))->second->Increment();
  auto l = layers_.find(layer);
  (l != layers_.end() ? *l->second.duration : otherLayerDuration_).Observe(seconds);
}

void RouterMetrics::Shard::recordError(std::string_view code) {
  if (code == "unavailable") {
    errUnavailable->Increment();
  } else if (code == "deadline_exceeded") {
    errDeadline->Increment();
  } else {
    errInternal->Increment();
  }
}

void RouterMetrics::recordRouting(uint32_t layer, const RoutingDecision& d) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) return;
  Layer& st = it->second;
  st.tokens->Increment(d.tokens);
  std::vector<double> counts(numExperts_, 0);
  for (uint32_t id : d.ids) counts[id] += 1;
  for (uint32_t e = 0; e < numExperts_; ++e) {
    if (counts[e] > 0 && !st.routed.empty()) st.routed[e]->Increment(counts[e]);
    st.window.assignments[e] += counts[e];
    if (e < d.probSum.size()) st.window.probSum[e] += d.probSum[e];
  }
  st.window.tokens += d.tokens;

  // Statistics over the current window, completed by the previous one while it is young.
  LayerWindow w = st.window;
  if (w.tokens < kWindowTokens && st.previous.tokens > 0) {
    w.tokens += st.previous.tokens;
    for (uint32_t e = 0; e < numExperts_; ++e) {
      w.assignments[e] += st.previous.assignments[e];
      w.probSum[e] += st.previous.probSum[e];
    }
  }
  const double total = std::accumulate(w.assignments.begin(), w.assignments.end(), 0.0);
  if (total > 0 && w.tokens > 0) {
    const double mean = total / numExperts_;
    st.imbalance->Set(*std::max_element(w.assignments.begin(), w.assignments.end()) / mean);
    double loss = 0;
    for (uint32_t e = 0; e < numExperts_; ++e) {
      loss += (w.assignments[e] / total) * (w.probSum[e] / static_cast<double>(w.tokens));
    }
    st.balanceLoss->Set(numExperts_ * loss);
    double h = 0;
    for (double a : w.assignments) {
      if (a > 0) h -= (a / total) * std::log(a / total);
    }
    st.entropy->Set(numExperts_ > 1 ? h / std::log(static_cast<double>(numExperts_)) : 1.0);
  }
  if (st.window.tokens >= kWindowTokens) {
    st.previous = st.window;
    std::fill(st.window.assignments.begin(), st.window.assignments.end(), 0);
    std::fill(st.window.probSum.begin(), st.window.probSum.end(), 0);
    st.window.tokens = 0;
  }
}

void RouterMetrics::recordDropsAndZeroCompute(uint32_t layer, uint32_t dropped,
                                              uint32_t zeroCompute) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) return;
  it->second.dropped->Increment(dropped);
  it->second.zeroCompute->Increment(zeroCompute);
}

void RouterMetrics::recordMissing(uint32_t layer, uint32_t assignments, double weight) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) return;
  it->second.missingAssignments->Increment(assignments);
  it->second.missingWeight->Increment(weight);
}

void RouterMetrics::setExpertsUnavailable(uint32_t layer, uint32_t count) {
  auto it = layers_.find(layer);
  if (it != layers_.end()) it->second.unavailable->Set(count);
}

}  // namespace moe::router
