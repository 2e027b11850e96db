// ShardHealth: what the router knows about each shard — whether it may be sent work and, if not,
// why — plus the load statistics the replica choice uses. A shard starts unverified and is used
// only after it proved its identity (model fingerprint and placement); a call that fails
// Unavailable marks it down at once (circuit breaker) and it is probed again with capped
// exponential backoff; a shard that says it is draining gets no new work. A shard taken out of
// the placement by a reload is removed: it gets no work and no probes until a reload lists it
// again. Shards are only ever added (indices stay valid for batches in flight). Event-loop thread
// only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace moe::router {

enum class ShardState { kUnverified, kUp, kDown, kDraining, kMismatch, kRemoved };
const char* shardStateName(ShardState s);

class ShardHealth {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr uint32_t kNone = UINT32_MAX;

  explicit ShardHealth(size_t shards);

  // Called after any shard's state changes (readiness follows it).
  void onChange(std::function<void()> f) { onChange_ = std::move(f); }

  size_t size() const { return shards_.size(); }
  // A new shard, unverified; returns its index.
  uint32_t add();
  bool usable(uint32_t s) const { return shards_[s].state == ShardState::kUp; }
  ShardState state(uint32_t s) const { return shards_[s].state; }
  const std::string& why(uint32_t s) const { return shards_[s].why; }
  // "down: connection lost": the state and, when there is one, the reason.
  std::string describe(uint32_t s) const;

  void markUp(uint32_t s);
  void markDown(uint32_t s, std::string why);  // a call failed Unavailable, or a probe did
  void markDraining(uint32_t s);
  void markMismatch(uint32_t s, std::string why);  // the shard is not what the placement says
  // A reload took the shard out of the placement: nothing but reinstate() changes that.
  void markRemoved(uint32_t s);
  bool removed(uint32_t s) const { return shards_[s].state == ShardState::kRemoved; }
  // A reload listed the shard again (or changed what it holds): unverified, probed at once.
  void reinstate(uint32_t s, std::string why);

  // When a shard that is not up should be probed next; probeFailed doubles the wait (capped).
  bool probeDue(uint32_t s, Clock::time_point now) const;
  void probeFailed(uint32_t s, Clock::time_point now);

  // Load: rows in flight and an EWMA of seconds per call. A slow replica's cost grows with both;
  // the EWMA halves every second a shard gets no call, and a shard back up starts afresh, so a
  // replica that was once slow is tried again instead of starving.
  void callStarted(uint32_t s, uint32_t rows);
  void callEnded(uint32_t s, uint32_t rows, double seconds);
  uint64_t inflightRows(uint32_t s) const { return shards_[s].inflightRows; }
  double typicalSeconds(uint32_t s) const { return shards_[s].ewmaSeconds; }  // 0: no call yet
  double cost(uint32_t s) const;

  // The usable replica among `holders` that should take the next sub-batch: power of two
  // choices on cost; kNone when none is usable. `exclude` (or kNone) is never chosen.
  uint32_t choose(std::span<const uint32_t> holders, uint32_t exclude = kNone);

 private:
  struct Shard {
    ShardState state = ShardState::kUnverified;
    std::string why = "not yet verified";
    uint64_t inflightRows = 0;
    double ewmaSeconds = 0;
    Clock::time_point lastCall{};  // when the last call ended: an idle shard's EWMA fades
    Clock::time_point nextProbe{};
    std::chrono::milliseconds backoff{0};
  };
  void set(uint32_t s, ShardState state, std::string why);

  std::vector<Shard> shards_;
  std::minstd_rand rng_{12345};
  std::function<void()> onChange_;
};

}  // namespace moe::router
