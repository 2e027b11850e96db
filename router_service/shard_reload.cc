// Shard-list reload planning; see shard_reload.h.
#include "router_service/shard_reload.h"

#include <algorithm>

namespace moe::router {
namespace {

bool sameHoldings(const ShardConfig& a, const ShardConfig& b) {
  return a.experts == b.experts && a.layers == b.layers && a.sharedExpert == b.sharedExpert;
}

std::string names(std::span<const ShardConfig> table, const std::vector<uint32_t>& ids) {
  std::string s;
  for (uint32_t i : ids) s += (s.empty() ? "" : ", ") + table[i].name;
  return s;
}

}  // namespace

ShardReload planShardReload(std::span<const ShardConfig> table, const std::vector<bool>& removedNow,
                            const std::vector<ShardConfig>& next) {
  ShardReload r;
  std::vector<bool> listed(table.size(), false);
  auto next_index = static_cast<uint32_t>(table.size());
  for (const ShardConfig& s : next) {
    // The latest index with this name and address (a shard may have moved away and back).
    uint32_t found = UINT32_MAX;
    for (uint32_t i = 0; i < table.size(); ++i) {
      if (table[i].name == s.name && table[i].listen == s.listen) found = i;
    }
    if (found == UINT32_MAX) {
      r.index.push_back(next_index++);
      r.added.push_back(s);
      continue;
    }
    r.index.push_back(found);
    listed[found] = true;
    if (removedNow[found]) {
      r.relisted.push_back(found);
    } else if (!sameHoldings(table[found], s)) {
      r.changed.push_back(found);
    }
  }
  for (uint32_t i = 0; i < table.size(); ++i) {
    if (!listed[i] && !removedNow[i]) r.removed.push_back(i);
  }
  return r;
}

std::string ShardReload::summary(std::span<const ShardConfig> table) const {
  std::string s;
  auto part = [&s](const char* what, const std::string& list) {
    if (!list.empty()) s += (s.empty() ? "" : "; ") + std::string(what) + " " + list;
  };
  std::string addedNames;
  for (const ShardConfig& c : added) addedNames += (addedNames.empty() ? "" : ", ") + c.name;
  part("added", addedNames);
  part("listed again", names(table, relisted));
  part("changed", names(table, changed));
  part("removed", names(table, removed));
  return s.empty() ? "no change" : s;
}

Status checkReloadable(const ClusterConfig& next, const RouterModel& running) {
  if (next.modelPath != running.cluster.modelPath) {
    return Status::error(StatusCode::kFailedPrecondition,
                         next.sourcePath + ": model.path " + next.modelPath + " is not the " +
                             running.cluster.modelPath +
                             " this router serves; a new model needs a restart");
  }
  if (auto s = validatePlacement(next, running.model); !s) return s;
  for (const auto& [layer, shared] : running.shared) {
    const bool onShard = std::any_of(
        next.shards.begin(), next.shards.end(),
        [layer = layer](const ShardConfig& s) { return s.sharedExpert && s.servesLayer(layer); });
    if (!onShard && !shared->hasFfn()) {
      return Status::error(StatusCode::kFailedPrecondition,
                           next.sourcePath + ": no shard serves the shared expert of layer " +
                               std::to_string(layer) +
                               ", and this router started without its weights; restart the router "
                               "to compute it here");
    }
  }
  return Status::ok();
}

}  // namespace moe::router
