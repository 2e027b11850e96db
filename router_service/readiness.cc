// assessReadiness: see readiness.h.
#include "router_service/readiness.h"

#include <vector>

namespace moe::router {
namespace {

bool anyUsable(std::span<const uint32_t> holders, const ShardHealth& health) {
  for (uint32_t s : holders) {
    if (health.usable(s)) return true;
  }
  return false;
}

// "layer 0: experts 4, 5; layer 1: the shared expert"
std::string missingText(const std::map<uint32_t, std::vector<std::string>>& missing) {
  std::string out;
  for (const auto& [layer, what] : missing) {
    out += (out.empty() ? "" : "; ") + std::string("layer ") + std::to_string(layer) + ": ";
    for (size_t i = 0; i < what.size(); ++i) out += (i ? ", " : "") + what[i];
  }
  return out;
}

std::string outOfRotation(const ShardHealth& health, const ShardTransport& transport) {
  std::string out;
  for (uint32_t s = 0; s < health.size(); ++s) {
    if (health.usable(s) || health.removed(s)) continue;
    out += (out.empty() ? "" : "; ") + transport.label(s) + " " + health.describe(s);
  }
  return out;
}

}  // namespace

Readiness assessReadiness(const RouterModel& model, const ShardHealth& health,
                          const ShardTransport& transport, bool degradedRoutingAllowed) {
  const Placement& p = *model.placement;
  Readiness r;
  std::map<uint32_t, std::vector<std::string>> missing;
  bool someLayerEmpty = false, sharedMissing = false;
  for (uint32_t layer : model.model.moeLayers) {
    uint32_t gone = 0;
    for (uint32_t e = 0; e < p.numExperts(); ++e) {
      if (anyUsable(p.shardsFor(layer, e), health)) continue;
      ++gone;
      missing[layer].push_back("expert " + std::to_string(e));
    }
    r.unavailable[layer] = gone;
    someLayerEmpty |= gone == p.numExperts();
    auto shared = p.sharedShardsFor(layer);
    if (!shared.empty() && !anyUsable(shared, health)) {
      sharedMissing = true;
      missing[layer].push_back("the shared expert");
    }
  }
  if (missing.empty()) return r;
  r.ready = degradedRoutingAllowed && !someLayerEmpty && !sharedMissing;
  r.why = (r.ready ? "degraded: no available replica for " : "no available replica for ") +
          missingText(missing) + "; out of rotation: " + outOfRotation(health, transport);
  return r;
}

}  // namespace moe::router
