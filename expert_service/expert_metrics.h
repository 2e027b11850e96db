// Every metric an expert shard exports, in one place (naming as in router_metrics.h).
//
//   moe_build_info{version,role,backend}                 gauge, always 1
//   moe_expert_requests_total{code}                      counter; code = ok | invalid_argument |
//                                                        failed_precondition | unavailable |
//                                                        deadline_exceeded | resource_exhausted |
//                                                        internal (common/rpc_status.h)
//   moe_expert_compute_duration_seconds                  histogram, compute time of one compute
//                                                        job (one run, or several coalesced)
//   moe_expert_coalesced_calls                           histogram, run calls per compute job
//                                                        (each expert runs one GEMM per job)
//   moe_expert_batch_rows                                histogram, token rows per run
//   moe_expert_computed_assignments_total{layer,expert}  counter, (row, expert) products computed;
//                                                        only with metrics.per_expert = all
//   moe_expert_queue_depth                               gauge, runs waiting for the executor
//   moe_device_memory_bytes{device}                      gauge, device memory held by the
//                                                        resident expert weights
//   moe_tls_handshake_failures_total{side,shard}         counter, failed TLS handshakes of
//                                                        connections to this shard's port
//                                                        (config tls:); side = server, shard
//                                                        empty
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "expert_service/expert_store.h"

namespace moe::expert {

// What the config decides about a shard's series.
struct ExpertMetricsOptions {
  bool perExpert = true;  // the per-(layer, expert) series (resolvePerExpertMetrics)
  // Configured size limits (the shard's expert.batching.max_rows): exact buckets of the
  // rows histogram (sizeBuckets, common/metrics_util.h).
  std::vector<uint32_t> sizeLimits;
};

class ExpertMetrics {
 public:
  ExpertMetrics(prometheus::Registry& registry, const ExpertStore& store, std::string_view backend,
                const ExpertMetricsOptions& options = {});

  // code: a metricCodeLabel (common/rpc_status.h)
  void recordRequest(std::string_view code);
  // nullptr if not served, or per-expert series are off
  prometheus::Counter* tokens(uint32_t layer, uint32_t expert);

  prometheus::Histogram& computeDuration;
  prometheus::Histogram& batchRows;
  prometheus::Histogram& coalescedCalls;
  prometheus::Gauge& queueDepth;
  prometheus::Gauge& deviceMemory;
  prometheus::Counter& tlsHandshakeFailures;  // side="server"

 private:
  std::map<std::string, prometheus::Counter*, std::less<>> requestsByCode_;
  std::map<std::pair<uint32_t, uint32_t>, prometheus::Counter*> tokens_;
};

}  // namespace moe::expert
