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
//   moe_expert_tokens_total{layer,expert}                counter, (row, expert) products computed
//   moe_expert_queue_depth                               gauge, runs waiting for the executor
//   moe_device_memory_bytes{device}                      gauge, device memory held by the
//                                                        resident expert weights
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "expert_service/expert_store.h"

namespace moe::expert {

class ExpertMetrics {
 public:
  ExpertMetrics(prometheus::Registry& registry, const ExpertStore& store, std::string_view backend);

  // code: a metricCodeLabel (common/rpc_status.h)
  void recordRequest(std::string_view code);
  prometheus::Counter* tokens(uint32_t layer, uint32_t expert);  // nullptr if not served

  prometheus::Histogram& computeDuration;
  prometheus::Histogram& batchRows;
  prometheus::Histogram& coalescedCalls;
  prometheus::Gauge& queueDepth;
  prometheus::Gauge& deviceMemory;

 private:
  std::map<std::string, prometheus::Counter*, std::less<>> requestsByCode_;
  std::map<std::pair<uint32_t, uint32_t>, prometheus::Counter*> tokens_;
};

}  // namespace moe::expert
