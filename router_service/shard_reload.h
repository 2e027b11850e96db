// Reloading the shard list (SIGHUP, POST /admin/placement): what a new list changes in the
// router's shard table, as a pure function, and the checks a new list must pass before any of it
// is applied. Shards are matched by name and address; indices are never reused or taken away
// (a batch in flight may hold any of them), so a shard the new list omits is only marked removed
// and one it lists again gets its old index back.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "router_service/router_model.h"

namespace moe::router {

struct ShardReload {
  std::vector<uint32_t> index;     // next[i] -> its shard index (an existing one, or a new one)
  std::vector<ShardConfig> added;  // new shards, to be appended in this order
  std::vector<uint32_t> changed;   // in use, same name and address, other experts/layers/shared
  std::vector<uint32_t> relisted;  // removed earlier, listed again
  std::vector<uint32_t> removed;   // in use, not in the new list
  bool empty() const {
    return added.empty() && changed.empty() && relisted.empty() && removed.empty();
  }
  // "added shard-3; removed shard-1" (or "no change").
  std::string summary(std::span<const ShardConfig> table) const;
};

// `table[i]` is shard i's config and `removedNow[i]` whether it is removed now.
ShardReload planShardReload(std::span<const ShardConfig> table, const std::vector<bool>& removedNow,
                            const std::vector<ShardConfig>& next);

// Why `next` cannot replace the running cluster's shard list, or ok: it must be valid for the
// model (validatePlacement), name the same model, and keep a shard for every shared expert the
// router did not load itself.
Status checkReloadable(const ClusterConfig& next, const RouterModel& running);

}  // namespace moe::router
