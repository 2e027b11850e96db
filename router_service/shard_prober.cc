// ShardProber: see shard_prober.h.
#include "router_service/shard_prober.h"

#include <algorithm>
#include <set>

#include "common/log.h"
#include "common/rpc_status.h"

namespace moe::router {
namespace {

constexpr auto kTick = std::chrono::milliseconds(50);

std::string expertList(const std::vector<uint32_t>& ids) {
  std::string s;
  for (uint32_t e : ids) s += (s.empty() ? "" : ", ") + std::to_string(e);
  return s;
}

// The experts `info` says the shard holds on `layer`.
std::set<uint32_t> heldOn(proto::ServiceInfo::Reader info, uint32_t layer) {
  std::set<uint32_t> held;
  for (auto le : info.getExperts()) {
    if (le.getLayer() != layer) continue;
    for (auto e : le.getExperts()) held.insert(e);
  }
  return held;
}

}  // namespace

std::string identityProblem(proto::ServiceInfo::Reader info, const std::string& fingerprint,
                            const ShardConfig& config, const std::vector<uint32_t>& moeLayers) {
  const std::string name = info.getName().cStr();
  if (std::string(info.getRole().cStr()) != "expert") return "it is not an expert shard";
  if (name != config.name) return "it calls itself '" + name + "', expected '" + config.name + "'";
  const std::string theirs = info.getFingerprint().cStr();
  if (theirs != fingerprint) {
    return "model fingerprint " + (theirs.empty() ? std::string("(none)") : theirs) +
           " differs from the router's " + fingerprint + " (another model or other weights)";
  }
  for (uint32_t layer : moeLayers) {
    if (!config.servesLayer(layer)) continue;
    const auto held = heldOn(info, layer);
    std::vector<uint32_t> missing;
    for (uint32_t e : config.experts) {
      if (!held.count(e)) missing.push_back(e);
    }
    if (!missing.empty()) {
      return "it does not hold experts " + expertList(missing) + " of layer " +
             std::to_string(layer) + " that the placement puts there";
    }
  }
  return "";
}

ShardProber::ShardProber(ShardTransport& transport, ShardHealth& health, kj::Timer& timer,
                         const RouterModel& model, RouterMetrics* metrics)
    : transport_(transport),
      health_(health),
      timer_(timer),
      model_(model),
      metrics_(metrics),
      probing_(transport.numShards(), false),
      lastProbe_(transport.numShards()),
      tasks_(*this) {}

void ShardProber::taskFailed(kj::Exception&& exception) {
  logWarn("shard prober: ", exception.getDescription().cStr());
}

// Applies one info answer.
void ShardProber::apply(uint32_t s, proto::ServiceInfo::Reader info) {
  const ShardState before = health_.state(s);
  const ShardConfig& config = transport_.shard(s);
  if (info.getDraining()) {
    health_.markDraining(s);
  } else if (auto why = identityProblem(info, model_.fingerprint, config, model_.model.moeLayers);
             !why.empty()) {
    if (before != ShardState::kMismatch) {
      logError(transport_.label(s), " is kept out of rotation: ", why);
      if (metrics_) metrics_->shard(s).identityMismatches->Increment();
    }
    health_.markMismatch(s, "identity mismatch: " + why);
  } else {
    if (before != ShardState::kUp) {
      logInfo(transport_.label(s), " verified (model ", model_.fingerprint, "); in rotation");
    }
    health_.markUp(s);
  }
  // Out of rotation: probed again as the backoff allows, not every tick.
  if (!health_.usable(s)) health_.probeFailed(s, ShardHealth::Clock::now());
}

void ShardProber::grow() {
  probing_.resize(transport_.numShards(), false);
  lastProbe_.resize(transport_.numShards());
}

kj::Promise<void> ShardProber::probeNow(const std::vector<uint32_t>& shards) {
  grow();
  kj::Vector<kj::Promise<void>> probes;
  for (uint32_t s : shards) probes.add(probe(s));
  return kj::joinPromises(probes.releaseAsArray());
}

// One probe per shard at a time: a caller asking while one is in flight waits for that one. The
// probe itself is held here (inflight_), so it runs to its end even when every caller stops
// waiting — a cancelled probe would leave its shard "probing" for ever.
kj::Promise<void> ShardProber::probe(uint32_t s) {
  if (auto running = inflight_.find(s); probing_[s] && running != inflight_.end()) {
    return running->second.addBranch();
  }
  probing_[s] = true;
  lastProbe_[s] = ShardHealth::Clock::now();
  auto forked = transport_.info(s)
                    .then(
                        [this, s](ShardTransport::InfoResponse&& r) {
                          probing_[s] = false;
                          apply(s, r.getInfo());
                        },
                        [this, s](kj::Exception&& e) {
                          probing_[s] = false;
                          health_.markDown(s, statusFromException(e).message());
                          health_.probeFailed(s, ShardHealth::Clock::now());
                        })
                    .fork();
  auto branch = forked.addBranch();
  inflight_.insert_or_assign(s, kj::mv(forked));  // replaces a finished one, never a running one
  return branch;
}

kj::Promise<void> ShardProber::probeAll() {
  grow();
  kj::Vector<kj::Promise<void>> probes;
  for (uint32_t s = 0; s < transport_.numShards(); ++s) {
    if (!health_.removed(s)) probes.add(probe(s));  // joins a probe already in flight
  }
  return kj::joinPromises(probes.releaseAsArray());
}

kj::Promise<void> ShardProber::run(uint32_t periodMs) {
  return tick(periodMs);
}

kj::Promise<void> ShardProber::tick(uint32_t periodMs) {
  grow();
  const auto now = ShardHealth::Clock::now();
  for (uint32_t s = 0; s < transport_.numShards(); ++s) {
    if (probing_[s]) continue;
    if (health_.removed(s)) {
      // Drained: every call it had is answered, so its connection can go.
      if (health_.inflightRows(s) == 0) transport_.disconnect(s);
      continue;
    }
    const bool periodic = now - lastProbe_[s] >= std::chrono::milliseconds(periodMs);
    if (!health_.probeDue(s, now) && !periodic) continue;
    tasks_.add(probe(s));
  }
  return timer_.afterDelay(kTick.count() * kj::MILLISECONDS).then([this, periodMs]() {
    return tick(periodMs);
  });
}

}  // namespace moe::router
