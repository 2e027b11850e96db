// Metrics helpers.
#include "common/metrics_util.h"

#include <prometheus/gauge.h>

#include <string>

#include "common/service_runtime.h"

namespace moe {

prometheus::Histogram::BucketBoundaries latencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
}

prometheus::Histogram::BucketBoundaries sizeBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double v = 1; v <= 65536; v *= 2) b.push_back(v);
  return b;
}

void registerBuildInfo(prometheus::Registry& registry, std::string_view role,
                       std::string_view backend) {
  prometheus::BuildGauge()
      .Name("moe_build_info")
      .Help("Build and runtime facts of this process; always 1")
      .Register(registry)
      .Add({{"version", kMoeVersion},
            {"role", std::string(role)},
            {"backend", std::string(backend)}})
      .Set(1);
}

}  // namespace moe
