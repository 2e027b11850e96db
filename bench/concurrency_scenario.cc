// moe-bench concurrency scenarios; see concurrency_scenario.h.
#include "bench/concurrency_scenario.h"

#include "common/rpc_status.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <sstream>

#include "common/rpc_status.h"
#include "common/tensor_wire.h"

namespace moe::bench {
namespace {

using Clock = std::chrono::steady_clock;

double percentileOf(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t idx = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, idx == 0 ? 0 : idx - 1)];
}

// The scenario's shared state: how many requests are left to send, and what came back.
struct Traffic {
  proto::Router::Client router;
  uint32_t layer, H, batch;
  uint64_t requestsLeft;
  std::vector<float> rows;  // one request's rows, reused
  std::vector<double> latencyMs;
  uint64_t errors = 0, refused = 0, sent = 0;
  bool stopOnUnavailable = false;
};

kj::Promise<void> client(Traffic& t) {
  if (t.requestsLeft == 0) return kj::READY_NOW;
  --t.requestsLeft;
  ++t.sent;
  auto req = t.router.forwardRequest();
  req.setLayer(t.layer);
  const uint32_t shape[2] = {t.batch, t.H};
  auto dst = initF32(req.initHidden(), shape);
  std::copy(t.rows.begin(), t.rows.end(), dst.begin());
  const auto sent = Clock::now();
  return req.send().then(
      [&t, sent](auto&&) {
        t.latencyMs.push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
        return client(t);
      },
      [&t](kj::Exception&& e) -> kj::Promise<void> {
        if (t.stopOnUnavailable && statusFromException(e).code() == StatusCode::kUnavailable) {
          ++t.refused;
          return kj::READY_NOW;
        }
        ++t.errors;
        return client(t);
      });
}

}  // namespace

std::vector<ConcurrencyScenario> parseScenarios(const std::string& text) {
  std::vector<ConcurrencyScenario> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    const auto x = item.find('x');
    try {
      if (x == std::string::npos) return {};
      ConcurrencyScenario s;
      s.clients = static_cast<uint32_t>(std::stoul(item.substr(0, x)));
      s.batch = static_cast<uint32_t>(std::stoul(item.substr(x + 1)));
      if (s.clients == 0 || s.batch == 0) return {};
      out.push_back(s);
    } catch (const std::exception&) {
      return {};
    }
  }
  return out;
}

ConcurrencyResult runScenario(kj::WaitScope& waitScope, proto::Router::Client router,
                              uint32_t layer, uint32_t H, const ConcurrencyScenario& s,
                              uint64_t requests) {
  Traffic t{router, layer, H, s.batch, requests, {}, {}, 0, 0, 0, s.stopOnUnavailable};
  t.rows.resize(size_t{s.batch} * H);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  for (float& v : t.rows) v = normal(rng);
  ConcurrencyResult r;
  r.scenario = s;
  r.requests = t.requestsLeft;
  const auto start = Clock::now();
  kj::Vector<kj::Promise<void>> clients;
  for (uint32_t i = 0; i < s.clients; ++i) clients.add(client(t));
  kj::joinPromises(clients.releaseAsArray()).wait(waitScope);
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.requests = t.sent;  // fewer than asked when clients stopped on a refusal
  r.errors = t.errors;
  r.refused = t.refused;
  r.tokens = (r.requests - r.errors - r.refused) * s.batch;
  r.tokensPerSecond = static_cast<double>(r.tokens) / r.seconds;
  r.p50Ms = percentileOf(t.latencyMs, 50);
  r.p99Ms = percentileOf(t.latencyMs, 99);
  r.latencyMs = std::move(t.latencyMs);
  return r;
}

std::vector<ConcurrencyResult> runScenarios(kj::WaitScope& waitScope, proto::Router::Client router,
                                            uint32_t layer, uint32_t H,
                                            const std::vector<ConcurrencyScenario>& scenarios,
                                            uint64_t tokens, int repeats) {
  std::vector<std::vector<ConcurrencyResult>> runs(scenarios.size());
  for (int rep = 0; rep < repeats + 1; ++rep) {  // the first round warms up, not counted
    for (size_t i = 0; i < scenarios.size(); ++i) {
      const auto& s = scenarios[i];
      // Enough requests for every client to send several, at most a few hundred.
      const uint64_t requests =
          std::max<uint64_t>(4ull * s.clients, std::min<uint64_t>(tokens / s.batch, 256));
      auto r = runScenario(waitScope, router, layer, H, s, rep == 0 ? s.clients : requests);
      if (rep > 0) runs[i].push_back(std::move(r));
    }
  }
  std::vector<ConcurrencyResult> out;
  for (auto& rs : runs) {
    ConcurrencyResult m = rs.front();
    std::vector<double> tps, latency;
    m.tokens = m.requests = m.errors = 0;
    m.seconds = 0;
    for (const auto& r : rs) {
      tps.push_back(r.tokensPerSecond);
      latency.insert(latency.end(), r.latencyMs.begin(), r.latencyMs.end());
      m.tokens += r.tokens;
      m.requests += r.requests;
      m.errors += r.errors;
      m.seconds += r.seconds;
    }
    m.tokensPerSecond = percentileOf(tps, 50);
    m.p50Ms = percentileOf(latency, 50);
    m.p99Ms = percentileOf(latency, 99);
    m.latencyMs.clear();
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace moe::bench
