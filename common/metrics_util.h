// Small helpers shared by every service's metrics: bucket layouts, the build-info gauge and the
// process_* families read from /proc. Every histogram's buckets come from here, so the layouts
// that decide how truthful histogram_quantile() is are chosen (and tested) in one place.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace moe {

// Latency buckets in seconds, 20 µs … 60 s, ten per decade (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8
// × 10^k): adjacent bounds differ by at most 4/3, so histogram_quantile's linear interpolation
// inside one bucket is off by a few percent on a smooth distribution, not by 2× as with 1-2.5-5.
prometheus::Histogram::BucketBoundaries latencyBuckets();

// Buckets for integer sizes (tokens, rows, requests per batch). Each exact size n — the powers of
// two 1 … 8192 and every `configured` limit (max_tokens, max_rows) — gets a bucket of its own,
// (n − min(1, n/128), n], so a batch of exactly n lands alone in it and its quantiles read within
// 1 % of n (with plain power-of-two bounds every batch of 128 reads as p50 96). The engine sizes
// 3·2^k (3, 6, … 6144) split each octave so sizes in between read within ±25 %.
prometheus::Histogram::BucketBoundaries sizeBuckets(std::span<const uint32_t> configured = {});

// moe_build_info{version, role, backend} 1
void registerBuildInfo(prometheus::Registry& registry, std::string_view role,
                       std::string_view backend);

// moe_tls_handshake_failures_total{side, shard}: TLS handshakes (config `tls:`) that failed, by the
// side that saw them: "server" (a connection this process accepted; shard "") or "client" (the
// router's connection to shard `shard`). Registered by each service's metrics, which create its
// series up front so they read 0 (without `tls:` too).
prometheus::Family<prometheus::Counter>& registerTlsHandshakeFailures(
    prometheus::Registry& registry);

// The standard process_* families of this process, read from /proc/self at call time (as the
// Go and Python clients' process collectors do): process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
// process_max_fds, process_start_time_seconds, process_threads. Empty where /proc is missing.
std::vector<prometheus::MetricFamily> collectProcessMetrics();

// The admin plane's hook for failed HTTPS handshakes: counts them in the same
// moe_tls_handshake_failures_total{side="server"} series as the RPC port's (the registry merges the
// family), so one alert covers both planes.
std::function<void()> adminTlsFailureCounter(prometheus::Registry& registry);

}  // namespace moe
