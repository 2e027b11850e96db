// planShardReload: what a reloaded shard list changes in the router's shard table — shards are
// matched by name and address, indices are never reused or taken away, and a removed shard
// listed again gets its old index back.
#include "router_service/shard_reload.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moe::router {
namespace {

ShardConfig shard(const std::string& name, const std::string& listen,
                  std::vector<uint32_t> experts) {
  ShardConfig s;
  s.name = name;
  s.listen = listen;
  s.experts = std::move(experts);
  return s;
}

struct Case {
  const char* what;
  std::vector<ShardConfig> table;
  std::vector<bool> removedNow;
  std::vector<ShardConfig> next;
  std::vector<uint32_t> index, changed, relisted, removed;
  std::vector<std::string> added;
  const char* summary;
};

TEST(ShardReload, PlansTheTableChange) {
  const ShardConfig a = shard("a", "h:1", {0, 1}), b = shard("b", "h:2", {0, 1});
  const ShardConfig c = shard("c", "h:3", {0, 1});
  const std::vector<Case> cases = {
      {"same list", {a, b}, {false, false}, {a, b}, {0, 1}, {}, {}, {}, {}, "no change"},
      {"order does not matter",
       {a, b},
       {false, false},
       {b, a},
       {1, 0},
       {},
       {},
       {},
       {},
       "no change"},
      {"a replica added",
       {a, b},
       {false, false},
       {a, b, c},
       {0, 1, 2},
       {},
       {},
       {},
       {"c"},
       "added c"},
      {"a replica removed", {a, b}, {false, false}, {a}, {0}, {}, {}, {1}, {}, "removed b"},
      {"replaced at once",
       {a, b},
       {false, false},
       {a, c},
       {0, 2},
       {},
       {},
       {1},
       {"c"},
       "added c; removed b"},
      {"removed, then listed again",
       {a, b},
       {false, true},
       {a, b},
       {0, 1},
       {},
       {1},
       {},
       {},
       "listed again b"},
      {"still removed stays removed", {a, b}, {false, true}, {a}, {0}, {}, {}, {}, {}, "no change"},
      {"other experts: changed in place",
       {a, b},
       {false, false},
       {a, shard("b", "h:2", {0, 1, 2})},
       {0, 1},
       {1},
       {},
       {},
       {},
       "changed b"},
      {"moved to another address: a new shard",
       {a, b},
       {false, false},
       {a, shard("b", "h:9", {0, 1})},
       {0, 2},
       {},
       {},
       {1},
       {"b"},
       "added b; removed b"},
      {"moved back: the latest index with that address",
       {a, b, shard("b", "h:9", {0, 1})},
       {false, false, true},
       {a, shard("b", "h:9", {0, 1})},
       {0, 2},
       {},
       {2},
       {1},
       {},
       "listed again b; removed b"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    const ShardReload r = planShardReload(k.table, k.removedNow, k.next);
    EXPECT_EQ(r.index, k.index);
    EXPECT_EQ(r.changed, k.changed);
    EXPECT_EQ(r.relisted, k.relisted);
    EXPECT_EQ(r.removed, k.removed);
    std::vector<std::string> added;
    for (const auto& s : r.added) added.push_back(s.name);
    EXPECT_EQ(added, k.added);
    EXPECT_EQ(r.summary(k.table), k.summary);
  }
}

}  // namespace
}  // namespace moe::router
