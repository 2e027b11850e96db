// Dispatch planning and combining.
#include "router_service/dispatch_plan.h"

#include <kj/debug.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "common/checkpoint.h"
#include "common/config.h"

namespace moe::router {

Placement::Placement(uint32_t numLayers, uint32_t numExperts, uint32_t numShards)
    : numLayers_(numLayers),
      numExperts_(numExperts),
      numShards_(numShards),
      holders_(size_t{numLayers} * numExperts),
      sharedHolders_(numLayers) {}

Placement Placement::fromConfig(const ClusterConfig& config, const ModelConfig& model) {
  std::vector<uint32_t> index(config.shards.size());
  std::iota(index.begin(), index.end(), 0u);
  return fromShards(config.shards, index, static_cast<uint32_t>(index.size()), model);
}

Placement Placement::fromShards(const std::vector<ShardConfig>& shards,
                                std::span<const uint32_t> index, uint32_t numShards,
                                const ModelConfig& model) {
  Placement p(model.numLayers, model.numFfnExperts, numShards);
  for (size_t i = 0; i < shards.size(); ++i) {
    const ShardConfig& shard = shards[i];
    for (uint32_t layer : model.moeLayers) {
      if (!shard.servesLayer(layer)) continue;
      for (uint32_t e : shard.experts) p.add(layer, e, index[i]);
      if (shard.sharedExpert) p.addShared(layer, index[i]);
    }
  }
  return p;
}

void Placement::addShared(uint32_t layer, uint32_t shard) {
  KJ_ASSERT(layer < numLayers_ && shard < numShards_, layer, shard);
  sharedHolders_[layer].push_back(shard);
}

std::span<const uint32_t> Placement::sharedShardsFor(uint32_t layer) const {
  if (layer >= numLayers_) return {};
  return sharedHolders_[layer];
}

void Placement::add(uint32_t layer, uint32_t expert, uint32_t shard) {
  // validatePlacement() runs first at start-up, so an id out of range here is our bug.
  KJ_ASSERT(layer < numLayers_ && expert < numExperts_ && shard < numShards_, layer, expert, shard);
  holders_[size_t{layer} * numExperts_ + expert].push_back(shard);
}

std::span<const uint32_t> Placement::shardsFor(uint32_t layer, uint32_t expert) const {
  if (layer >= numLayers_ || expert >= numExperts_) return {};
  return holders_[size_t{layer} * numExperts_ + expert];
}

uint32_t DispatchPlan::rowsSent() const {
  uint32_t n = 0;
  for (const auto& w : work) n += static_cast<uint32_t>(w.tokens.size());
  return n;
}

Result<DispatchPlan> planDispatch(const RoutingDecision& d, const Placement& placement,
                                  uint32_t layer, const DispatchExtras& extras) {
  const uint32_t S = placement.numShards();
  const uint32_t E = placement.numExperts();
  // Per shard: row of each token (or -1), and per expert its (row, weight) list.
  constexpr uint32_t kNone = UINT32_MAX;
  std::vector<std::vector<uint32_t>> rowOf(S);
  std::vector<ShardWork> work(S);
  std::vector<std::vector<ShardSegment>> byExpert(S);
  // The row token t occupies in shard s's call, added on first use.
  auto rowFor = [&](uint32_t s, uint32_t t) {
    auto& rows = rowOf[s];
    if (rows.empty()) {
      rows.assign(d.tokens, kNone);
      byExpert[s].resize(E + 1);  // the last slot is the shared expert
    }
    if (rows[t] == kNone) {
      rows[t] = static_cast<uint32_t>(work[s].tokens.size());
      work[s].tokens.push_back(t);
    }
    return rows[t];
  };
  for (uint32_t t = 0; t < d.tokens; ++t) {
    for (uint32_t j = 0; j < d.k; ++j) {
      const size_t at = size_t{t} * d.k + j;
      const uint32_t e = d.ids[at];
      if (d.isDropped(at) || (e >= E && e < extras.routedExperts)) continue;
      auto holders = placement.shardsFor(layer, e);
      if (holders.empty()) {
        return makeError("no shard serves expert " + std::to_string(e) + " of layer " +
                         std::to_string(layer));
      }
      const uint32_t s = extras.shardOfExpert.empty() ? holders.front() : extras.shardOfExpert[e];
      if (s == UINT32_MAX) {
        return makeError(StatusCode::kUnavailable, "layer " + std::to_string(layer) + ": expert " +
                                                       std::to_string(e) +
                                                       " has no available replica");
      }
      const uint32_t row = rowFor(s, t);
      auto& seg = byExpert[s][e];
      seg.expert = e;
      seg.rowIndex.push_back(row);
      seg.weight.push_back(d.weights[at]);
    }
  }
  if (extras.sharedShard) {
    const uint32_t s = *extras.sharedShard;
    for (uint32_t t = 0; t < d.tokens; ++t) {
      const uint32_t row = rowFor(s, t);
      auto& seg = byExpert[s][E];
      seg.shared = true;
      seg.rowIndex.push_back(row);
      seg.weight.push_back(extras.sharedWeights[t]);
    }
  }
  DispatchPlan plan;
  for (uint32_t s = 0; s < S; ++s) {
    if (work[s].tokens.empty()) continue;
    work[s].shard = s;
    for (auto& seg : byExpert[s]) {
      if (!seg.rowIndex.empty()) work[s].segments.push_back(std::move(seg));
    }
    plan.work.push_back(std::move(work[s]));
  }
  return plan;
}

Result<std::vector<ShardWork>> replanOnto(
    const ShardWork& failed, const std::function<uint32_t(const ShardSegment&)>& shardFor,
    uint32_t layer) {
  std::map<uint32_t, std::vector<const ShardSegment*>> byShard;
  for (const auto& seg : failed.segments) {
    const uint32_t s = shardFor(seg);
    if (s == UINT32_MAX) {
      return makeError(StatusCode::kUnavailable,
                       "layer " + std::to_string(layer) + ": " +
                           (seg.shared ? std::string("the shared expert")
                                       : "expert " + std::to_string(seg.expert)) +
                           " has no other available replica");
    }
    byShard[s].push_back(&seg);
  }
  std::vector<ShardWork> out;
  for (const auto& [shard, segs] : byShard) {
    ShardWork w;
    w.shard = shard;
    std::map<uint32_t, uint32_t> rowOfToken;  // batch token -> row in the new call
    for (const ShardSegment* seg : segs) {
      for (uint32_t r : seg->rowIndex) rowOfToken.emplace(failed.tokens[r], 0);
    }
    for (auto& [token, row] : rowOfToken) {
      row = static_cast<uint32_t>(w.tokens.size());
      w.tokens.push_back(token);
    }
    for (const ShardSegment* seg : segs) {
      ShardSegment moved{seg->expert, seg->shared, {}, seg->weight};
      for (uint32_t r : seg->rowIndex) moved.rowIndex.push_back(rowOfToken[failed.tokens[r]]);
      w.segments.push_back(std::move(moved));
    }
    out.push_back(std::move(w));
  }
  return out;
}

void addShardPartial(const ShardWork& work, std::span<const float> partial, size_t H,
                     std::span<float> out) {
  for (size_t r = 0; r < work.tokens.size(); ++r) {
    const float* src = partial.data() + r * H;
    float* dst = out.data() + size_t{work.tokens[r]} * H;
    for (size_t h = 0; h < H; ++h) dst[h] += src[h];
  }
}

}  // namespace moe::router
