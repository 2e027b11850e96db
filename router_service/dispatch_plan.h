// The dispatch plan: from a routing decision and the expert placement, what each shard is sent.
// Pure functions over plain data, so every rule here is unit-tested without a network.
//
// Rules: a token row goes to a shard at most once, however many of its experts live there
// (the shard sums them); an expert with several replicas is served by the replica the caller
// chose for this batch (DispatchExtras::shardOfExpert); shards with nothing to do get no call.
// Assignments dropped by capacity and MoE++ zero-computation experts are not dispatched; a shared
// expert placed on a shard gets every token, as one more segment.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "router_service/gating.h"

namespace moe {
struct ClusterConfig;
struct ModelConfig;
struct ShardConfig;
}  // namespace moe

namespace moe::router {

// For each MoE layer and expert, the shards (indices into ClusterConfig::shards) that hold it.
class Placement {
 public:
  Placement(uint32_t numLayers, uint32_t numExperts, uint32_t numShards);
  static Placement fromConfig(const ClusterConfig& config, const ModelConfig& model);
  // `shards[i]` is shard index[i] of `numShards` (a reloaded list keeps the indices shards had).
  static Placement fromShards(const std::vector<ShardConfig>& shards,
                              std::span<const uint32_t> index, uint32_t numShards,
                              const ModelConfig& model);
  void add(uint32_t layer, uint32_t expert, uint32_t shard);
  void addShared(uint32_t layer, uint32_t shard);
  std::span<const uint32_t> shardsFor(uint32_t layer, uint32_t expert) const;
  // Shards holding the layer's shared expert (empty: the router computes it).
  std::span<const uint32_t> sharedShardsFor(uint32_t layer) const;
  uint32_t numExperts() const { return numExperts_; }
  uint32_t numShards() const { return numShards_; }

 private:
  uint32_t numLayers_, numExperts_, numShards_;
  std::vector<std::vector<uint32_t>> holders_;        // [layer * E + expert] -> shard ids
  std::vector<std::vector<uint32_t>> sharedHolders_;  // [layer] -> shard ids
};

struct ShardSegment {
  uint32_t expert = 0;
  bool shared = false;             // the layer's shared expert (`expert` unused)
  std::vector<uint32_t> rowIndex;  // into ShardWork::tokens
  std::vector<float> weight;
};

struct ShardWork {
  uint32_t shard;
  std::vector<uint32_t> tokens;  // unique token ids in ascending order; row r carries tokens[r]
  std::vector<ShardSegment> segments;  // ascending expert id, then the shared expert; none empty
};

struct DispatchPlan {
  std::vector<ShardWork> work;  // ascending shard id, only shards with rows
  uint32_t rowsSent() const;
};

// What the plan carries beyond the routed FFN experts.
struct DispatchExtras {
  // Ids in [placement.numExperts(), routedExperts) are zero-computation experts evaluated on the
  // router (MoE++); 0 means there are none.
  uint32_t routedExperts = 0;
  // The shared expert on a shard: every token goes to `sharedShard` with weight
  // sharedWeights[t] (1 for DeepSeek, sigmoid(x·w_gate) for Qwen2-MoE).
  std::optional<uint32_t> sharedShard;
  std::span<const float> sharedWeights;  // [T]
  // The replica chosen for each FFN expert of this batch ([placement.numExperts()], UINT32_MAX:
  // none is available). Empty: the first shard listed for the expert.
  std::span<const uint32_t> shardOfExpert;
};

// Fails (naming layer and expert) when an expert has no holder, or (Unavailable) no available one.
Result<DispatchPlan> planDispatch(const RoutingDecision& decision, const Placement& placement,
                                  uint32_t layer, const DispatchExtras& extras = {});

// Failover: the calls that carry a failed call's segments to other replicas. `shardFor` names
// the replica for each segment (UINT32_MAX: none left, an Unavailable error naming the expert).
// Tokens keep their batch ids; rows are renumbered per new call, tokens ascending.
Result<std::vector<ShardWork>> replanOnto(
    const ShardWork& failed, const std::function<uint32_t(const ShardSegment&)>& shardFor,
    uint32_t layer);

// out[tokens[r]] += partial[r] for every row r of one shard's reply. out: [T, H], partial: [R, H].
void addShardPartial(const ShardWork& work, std::span<const float> partial, size_t H,
                     std::span<float> out);

}  // namespace moe::router
