// ExpertMetrics: families registered once, children per served (layer, expert).
#include "expert_service/expert_metrics.h"

#include "common/metrics_util.h"

namespace moe::expert {

ExpertMetrics::ExpertMetrics(prometheus::Registry& registry, const ExpertStore& store,
                             std::string_view backend, const ExpertMetricsOptions& options)
    : computeDuration(prometheus::BuildHistogram()
                          .Name("moe_expert_compute_duration_seconds")
                          .Help("Compute time of one compute job (one ExpertShard.run, or several "
                                "coalesced) on the device")
                          .Register(registry)
                          .Add({}, latencyBuckets())),
      batchRows(prometheus::BuildHistogram()
                    .Name("moe_expert_batch_rows")
                    .Help("Token rows per ExpertShard.run")
                    .Register(registry)
                    .Add({}, sizeBuckets(options.sizeLimits))),
      coalescedCalls(
          prometheus::BuildHistogram()
              .Name("moe_expert_coalesced_calls")
              .Help("ExpertShard.run calls merged into one compute job")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128})),
      queueDepth(prometheus::BuildGauge()
                     .Name("moe_expert_queue_depth")
                     .Help("Runs waiting for the compute thread")
                     .Register(registry)
                     .Add({})),
      deviceMemory(prometheus::BuildGauge()
                       .Name("moe_device_memory_bytes")
                       .Help("Memory in use on the compute device by resident expert weights")
                       .Register(registry)
                       .Add({{"device", std::string(backend)}})),
      tlsHandshakeFailures(
          registerTlsHandshakeFailures(registry).Add({{"side", "server"}, {"shard", ""}})) {
  registerBuildInfo(registry, "expert", backend);
  auto& requests = prometheus::BuildCounter()
                       .Name("moe_expert_requests_total")
                       .Help("ExpertShard.run calls by result code")
                       .Register(registry);
  for (const char* code : {"ok", "invalid_argument", "failed_precondition", "unavailable",
                           "deadline_exceeded", "resource_exhausted", "internal"}) {
    requestsByCode_.emplace(code, &requests.Add({{"code", code}}));
  }
  auto& tokens = prometheus::BuildCounter()
                     .Name("moe_expert_computed_assignments_total")
                     .Help("(token row, expert) products computed by this shard")
                     .Register(registry);
  for (const auto& [layer, experts] : store.experts()) {
    if (!options.perExpert) break;
    for (uint32_t e : experts) {
      tokens_[{layer, e}] =
          &tokens.Add({{"layer", std::to_string(layer)}, {"expert", std::to_string(e)}});
    }
  }
  deviceMemory.Set(static_cast<double>(store.residentBytes()));
}

void ExpertMetrics::recordRequest(std::string_view code) {
  auto it = requestsByCode_.find(code);
  (it != requestsByCode_.end() ? it : requestsByCode_.find("internal"))->second->Increment();
}

prometheus::Counter* ExpertMetrics::tokens(uint32_t layer, uint32_t expert) {
  auto it = tokens_.find({layer, expert});
  return it == tokens_.end() ? nullptr : it->second;
}

}  // namespace moe::expert
