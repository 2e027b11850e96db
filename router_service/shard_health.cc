// ShardHealth: see shard_health.h.
#include "router_service/shard_health.h"

#include <algorithm>
#include <cmath>

namespace moe::router {
namespace {

constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{1000};  // a restarted shard is back within ~1 s
constexpr double kEwmaWeight = 0.2;                     // weight of the newest call's time

}  // namespace

const char* shardStateName(ShardState s) {
  switch (s) {
    case ShardState::kUnverified:
      return "unverified";
    case ShardState::kUp:
      return "up";
    case ShardState::kDown:
      return "down";
    case ShardState::kDraining:
      return "draining";
    case ShardState::kMismatch:
      return "identity mismatch";
    case ShardState::kRemoved:
      return "removed";
  }
  return "unknown";
}

ShardHealth::ShardHealth(size_t shards) : shards_(shards) {}

uint32_t ShardHealth::add() {
  shards_.emplace_back();
  return static_cast<uint32_t>(shards_.size() - 1);
}

std::string ShardHealth::describe(uint32_t s) const {
  const std::string& why = shards_[s].why;
  return std::string(shardStateName(shards_[s].state)) + (why.empty() ? "" : ": " + why);
}

void ShardHealth::set(uint32_t s, ShardState state, std::string why) {
  // A late probe or call result must not bring a removed shard back into rotation.
  if (shards_[s].state == ShardState::kRemoved) return;
  const bool changed = shards_[s].state != state;
  shards_[s].state = state;
  shards_[s].why = std::move(why);
  if (changed && onChange_) onChange_();
}

void ShardHealth::markUp(uint32_t s) {
  shards_[s].backoff = std::chrono::milliseconds(0);
  if (shards_[s].state != ShardState::kUp) shards_[s].ewmaSeconds = 0;  // a new process
  set(s, ShardState::kUp, "");
}

void ShardHealth::markDown(uint32_t s, std::string why) {
  Shard& sh = shards_[s];
  if (sh.state == ShardState::kMismatch) return;  // stays out until it proves itself
  if (sh.state != ShardState::kDown) {
    sh.backoff = std::chrono::milliseconds(0);
    sh.nextProbe = Clock::now();
  }
  set(s, ShardState::kDown, std::move(why));
}

void ShardHealth::markDraining(uint32_t s) {
  set(s, ShardState::kDraining, "draining");
}

void ShardHealth::markMismatch(uint32_t s, std::string why) {
  set(s, ShardState::kMismatch, std::move(why));
}

void ShardHealth::markRemoved(uint32_t s) {
  set(s, ShardState::kRemoved, "removed from the placement");
}

void ShardHealth::reinstate(uint32_t s, std::string why) {
  Shard& sh = shards_[s];
  const bool changed = sh.state != ShardState::kUnverified;
  const uint64_t inflight = sh.inflightRows;  // calls still out (to its old self) end later
  sh = Shard{};
  sh.why = std::move(why);
  sh.inflightRows = inflight;
  if (changed && onChange_) onChange_();
}

bool ShardHealth::probeDue(uint32_t s, Clock::time_point now) const {
  const ShardState st = shards_[s].state;
  return st != ShardState::kUp && st != ShardState::kRemoved && now >= shards_[s].nextProbe;
}

void ShardHealth::probeFailed(uint32_t s, Clock::time_point now) {
  Shard& sh = shards_[s];
  sh.backoff = sh.backoff.count() == 0 ? kFirstBackoff : std::min(kMaxBackoff, sh.backoff * 2);
  sh.nextProbe = now + sh.backoff;
}

void ShardHealth::callStarted(uint32_t s, uint32_t rows) {
  shards_[s].inflightRows += rows;
}

void ShardHealth::callEnded(uint32_t s, uint32_t rows, double seconds) {
  Shard& sh = shards_[s];
  sh.inflightRows -= std::min<uint64_t>(rows, sh.inflightRows);
  sh.ewmaSeconds =
      sh.ewmaSeconds == 0 ? seconds : (1 - kEwmaWeight) * sh.ewmaSeconds + kEwmaWeight * seconds;
  sh.lastCall = Clock::now();
}

double ShardHealth::cost(uint32_t s) const {
  const Shard& sh = shards_[s];
  // A replica never measured costs as if it answered at once: it gets tried. An idle one's
  // measurement fades (halving per second without a call), so it gets tried again too.
  const double idle = std::chrono::duration<double>(Clock::now() - sh.lastCall).count();
  const double seconds = sh.ewmaSeconds * std::exp2(-std::max(0.0, idle));
  return static_cast<double>(sh.inflightRows + 1) * std::max(seconds, 1e-6);
}

uint32_t ShardHealth::choose(std::span<const uint32_t> holders, uint32_t exclude) {
  uint32_t candidates[2] = {kNone, kNone};
  uint32_t seen = 0;
  // Reservoir-sample two usable holders, so every pair is equally likely.
  for (uint32_t s : holders) {
    if (s == exclude || !usable(s)) continue;
    ++seen;
    if (seen <= 2) {
      candidates[seen - 1] = s;
    } else {
      const uint32_t j = std::uniform_int_distribution<uint32_t>(0, seen - 1)(rng_);
      if (j < 2) candidates[j] = s;
    }
  }
  if (seen == 0) return kNone;
  if (seen == 1) return candidates[0];
  const double a = cost(candidates[0]), b = cost(candidates[1]);
  if (a != b) return b < a ? candidates[1] : candidates[0];
  return candidates[std::uniform_int_distribution<int>(0, 1)(rng_)];  // a tie: either
}

}  // namespace moe::router
