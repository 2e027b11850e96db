// moe-bench's concurrency scenarios: C clients each keeping one request of B tokens in flight on
// the router (the traffic of an inference engine in decode: many small concurrent requests),
// until a token budget is sent. Reports tokens/s and p50/p99 latency per scenario.
#pragma once

#include <kj/async-io.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/proto/moe.capnp.h"

namespace moe::bench {

struct ConcurrencyScenario {
  uint32_t clients = 1;
  uint32_t batch = 1;
  // A client whose request is refused Unavailable stops (an engine with another router would go
  // there): for the router's own drain, where refusals after drain_ms are the contract.
  bool stopOnUnavailable = false;
  std::string name() const { return std::to_string(clients) + "x" + std::to_string(batch); }
};

struct ConcurrencyResult {
  ConcurrencyScenario scenario;
  uint64_t tokens = 0, requests = 0, errors = 0;
  uint64_t refused = 0;  // with stopOnUnavailable: requests refused Unavailable (not in errors)
  double seconds = 0, tokensPerSecond = 0, p50Ms = 0, p99Ms = 0;
  std::vector<double> latencyMs;  // every request's, for pooling over repeats
};

// "1x128,16x8" → scenarios; empty on a malformed list.
std::vector<ConcurrencyScenario> parseScenarios(const std::string& text);

// Sends `requests` requests of random rows [batch, H] to `layer`.
ConcurrencyResult runScenario(kj::WaitScope& waitScope, proto::Router::Client router,
                              uint32_t layer, uint32_t H, const ConcurrencyScenario& scenario,
                              uint64_t requests);

// The scenarios run round-robin `repeats` times (so the machine's noise spreads over all of
// them); per scenario the median tokens/s and the latency percentiles over every request.
std::vector<ConcurrencyResult> runScenarios(kj::WaitScope& waitScope, proto::Router::Client router,
                                            uint32_t layer, uint32_t H,
                                            const std::vector<ConcurrencyScenario>& scenarios,
                                            uint64_t tokens, int repeats);

}  // namespace moe::bench
