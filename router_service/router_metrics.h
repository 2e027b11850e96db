// Every metric the router exports, in one place (Prometheus naming: `moe_` prefix, base units,
// `_total` counters, histograms for latencies and sizes, low-cardinality labels). The dashboards
// (dashboards/*.json) and alert rules (deploy/prometheus/alerts.yml) use exactly these names; a
// test checks that every name they use is exported.
//
// clang-format off
//   moe_build_info{version,role,backend}          gauge, always 1
//   moe_router_requests_total{code}               counter; code = ok | invalid_argument |
//                                                 failed_precondition | unavailable |
//                                                 deadline_exceeded | resource_exhausted |
//                                                 internal (common/rpc_status.h)
//   moe_router_request_duration_seconds{layer}    histogram, whole Router.forward, per MoE
//                                                 layer ("other": a layer id that is not one)
//   moe_router_gate_duration_seconds              histogram, gating + planning of a batch
//   moe_router_batch_tokens                       histogram, tokens per merged batch
//   moe_router_batch_requests                     histogram, requests per merged batch
//   moe_router_queue_seconds                      histogram, admission to start of gating
//   moe_router_tokens_total{layer}                counter, tokens served
//   moe_router_in_flight_requests                 gauge
//   moe_router_queue_depth                        gauge, requests waiting to join a batch
//   moe_expert_assignments_total{layer,expert}    counter, token→expert assignments; only
//                                                 with metrics.per_expert = all
//   moe_capacity_dropped_assignments_total{layer} counter, assignments dropped by capacity
//   moe_zero_compute_assignments_total{layer}     counter, assignments served by
//                                                 zero-computation experts on the router
//   moe_missing_expert_assignments_total{layer}   counter, assignments dropped or moved
//                                                 because their expert had no available
//                                                 replica (routing.missing_expert)
//   moe_missing_routing_weight_total{layer}       counter, routing weight of those
//                                                 assignments before they were dropped/moved
//   moe_experts_unavailable{layer}                gauge, FFN experts with no available replica
//   moe_layer_load_imbalance{layer}               gauge, max/mean expert load, recent window
//   moe_layer_routing_entropy{layer}              gauge, entropy of the expert load over the
//                                                 recent window / log(E): 1 = uniform
//   moe_layer_load_balancing_loss{layer}          gauge, Switch-Transformer auxiliary loss
//                                                 E·Σ f_i·P_i over the recent window
//   moe_shard_rpc_duration_seconds{shard}         histogram, one ExpertShard.run
//   moe_shard_rpc_errors_total{shard,code}        counter; code = unavailable |
//                                                 deadline_exceeded | internal
//   moe_shard_rpc_in_flight{shard}                gauge
//   moe_shard_up{shard}                           gauge, 1 when the last call/probe succeeded
//   moe_shard_rows_sent_total{shard}              counter, token rows sent to the shard
//   moe_shard_sent_bytes_total{shard}             counter, payload bytes of those rows
//                                                 (router.wire_dtype: f32 or bf16)
//   moe_shard_received_bytes_total{shard}         counter, payload bytes of results received
//   moe_shard_inflight_rows{shard}                gauge, token rows sent and not yet answered
//   moe_shard_identity_mismatch_total{shard}      counter, probes that found another model or
//                                                 placement at the shard's address
//   moe_tls_handshake_failures_total{side,shard}  counter, failed TLS handshakes (config tls:);
//                                                 side = server | client; server: connections
//                                                 to the router's port (shard empty); client:
//                                                 the router's connections to shard `shard`
// clang-format on
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "router_service/gating.h"

namespace moe::router {

// What the config decides about the router's series.
struct RouterMetricsOptions {
  bool perExpert = true;  // the per-(layer, expert) series (resolvePerExpertMetrics)
  // Configured size limits (router.max_tokens, router.batching.max_tokens): exact buckets of
  // the batch-size histograms (sizeBuckets, common/metrics_util.h).
  std::vector<uint32_t> sizeLimits;
};

// The router's metric families with their labelled children created once, at start-up.
class RouterMetrics {
 public:
  RouterMetrics(prometheus::Registry& registry, const ModelConfig& model,
                const std::vector<ShardConfig>& shards, std::string_view backend,
                const RouterMetricsOptions& options = {});

  // code: a metricCodeLabel (common/rpc_status.h); layer: as the request named it.
  void recordRequest(std::string_view code, double seconds, uint32_t layer);
  // Token→expert assignments of one gated batch, and the recent-window load statistics.
  void recordRouting(uint32_t layer, const RoutingDecision& decision);
  // Assignments the capacity cap dropped, and those served by zero-computation experts.
  void recordDropsAndZeroCompute(uint32_t layer, uint32_t dropped, uint32_t zeroCompute);
  // Assignments dropped or moved because their expert had no replica, and the routing weight
  // they carried (MissingExpertOutcome, missing_experts.h).
  void recordMissing(uint32_t layer, uint32_t assignments, double weight);
  // FFN experts of the layer with no available replica now.
  void setExpertsUnavailable(uint32_t layer, uint32_t count);

  struct Shard {
    prometheus::Histogram* duration;
    prometheus::Gauge* inFlight;
    prometheus::Gauge* up;
    prometheus::Counter* rowsSent;
    prometheus::Counter* sentBytes;      // payload bytes of rows sent (router.wire_dtype)
    prometheus::Counter* receivedBytes;  // payload bytes of results received
    prometheus::Gauge* inflightRows;
    prometheus::Counter* identityMismatches;
    prometheus::Counter* tlsHandshakeFailures;  // side="client": the router's connections to it
    prometheus::Counter* errUnavailable;
    prometheus::Counter* errDeadline;
    prometheus::Counter* errInternal;
    void recordError(std::string_view code);
  };
  Shard& shard(size_t index) { return shards_[index]; }
  // The series of a shard that joined at run time (a reload); its index is the next one. A shard
  // listed again under the same name shares its series with its earlier index.
  void addShard(const ShardConfig& shard);

  prometheus::Gauge& inFlight;
  prometheus::Gauge& queueDepth;
  prometheus::Histogram& gateDuration;
  prometheus::Histogram& batchTokens;
  prometheus::Histogram& batchRequests;
  prometheus::Histogram& queueSeconds;
  // Failed TLS handshakes of connections to the router's own port (side="server").
  prometheus::Counter& tlsServerHandshakeFailures;

 private:
  // Tumbling window per layer: statistics over at least the last kWindowTokens tokens.
  static constexpr uint64_t kWindowTokens = 8192;
  struct LayerWindow {
    uint64_t tokens = 0;
    std::vector<double> assignments;  // [E] tokens routed to each expert
    std::vector<double> probSum;      // [E] Σ over tokens of the expert's router probability
  };
  struct Layer {
    prometheus::Counter* tokens;
    std::vector<prometheus::Counter*> routed;  // [E], empty with per_expert off
    prometheus::Histogram* duration;
    prometheus::Gauge* imbalance;
    prometheus::Gauge* entropy;
    prometheus::Gauge* balanceLoss;
    prometheus::Counter* dropped;
    prometheus::Counter* zeroCompute;
    prometheus::Counter* missingAssignments;
    prometheus::Counter* missingWeight;
    prometheus::Gauge* unavailable;
    LayerWindow window, previous;
  };
  // The missing-expert series of every layer, created at 0.
  void addMissingExpertSeries(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& requestDurations_;
  prometheus::Histogram& otherLayerDuration_;  // requests naming a layer that is not an MoE layer
  std::map<std::string, prometheus::Counter*, std::less<>> requestsByCode_;
  std::map<uint32_t, Layer> layers_;
  struct ShardFamilies {
    prometheus::Family<prometheus::Histogram>* duration;
    prometheus::Family<prometheus::Counter>* errors;
    prometheus::Family<prometheus::Gauge>* inFlight;
    prometheus::Family<prometheus::Gauge>* up;
    prometheus::Family<prometheus::Counter>* rowsSent;
    prometheus::Family<prometheus::Counter>* sentBytes;
    prometheus::Family<prometheus::Counter>* receivedBytes;
    prometheus::Family<prometheus::Gauge>* inflightRows;
    prometheus::Family<prometheus::Counter>* identityMismatches;
    prometheus::Family<prometheus::Counter>* tlsHandshakeFailures;
  };
  ShardFamilies shardFamilies_{};
  std::deque<Shard> shards_;  // a deque: references stay valid as shards join
  uint32_t numExperts_;
};

}  // namespace moe::router
