// Small helpers shared by every service's metrics: bucket layouts and the build-info gauge.
#pragma once

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string_view>

namespace moe {

// Latency buckets in seconds, 100 µs … 60 s.
prometheus::Histogram::BucketBoundaries latencyBuckets();
// Size buckets (tokens, rows): powers of two, 1 … 65536.
prometheus::Histogram::BucketBoundaries sizeBuckets();
// moe_build_info{version, role, backend} 1
void registerBuildInfo(prometheus::Registry& registry, std::string_view role,
                       std::string_view backend);

}  // namespace moe
