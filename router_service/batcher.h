// Batcher: the admit/batch stage. Requests for the same layer that arrive while a batch of that
// layer is being gated wait, and are merged into the next batch (up to max_tokens), so that
// concurrent small requests share one gate GEMM, one plan and one call per shard ("gating
// sharing"). window_us > 0 lets a lone request wait at most that long for company (counted from
// when the layer was free to serve it, not while a batch ran): the window
// closes early once the layer's requests (waiting and in flight) are as many as when its previous
// batch formed (the clients of the last batch are back), so steady concurrent traffic is merged
// whole while a single client never waits. window_us = 0 never waits.
// One batch per layer is served at a time, so what arrives meanwhile is merged; a batch that runs
// far longer than the layer's usual (a stalled shard) lets the next one start, up to
// kMaxBatchesInFlight, so a slow shard does not hold up traffic that would not need it.
// Each request keeps its own deadline: one withdrawn (its promise dropped) while queued leaves
// the queue and never runs; one withdrawn while its batch runs simply gets no reply. A queue over
// max_queued_tokens refuses new requests at once (ResourceExhausted) instead of growing.
#pragma once

#include <kj/async.h>
#include <kj/function.h>
#include <kj/timer.h>

#include <functional>
#include <list>
#include <map>
#include <memory>
#include <vector>

#include "common/result.h"
#include "router_service/forward_types.h"

namespace moe::router {

struct BatchingPolicy {
  bool enabled = true;
  uint32_t windowUs = 0;
  uint32_t maxTokens = 4096;
  uint64_t maxQueuedTokens = 65536;
};

// What the batcher reports, for metrics; every member may be left empty.
struct BatchObserver {
  std::function<void(const Batch&, std::span<const double> queueSeconds)> batchStarted;
  std::function<void(size_t waitingRequests)> queueDepth;
};

class Batcher final : private kj::TaskSet::ErrorHandler {
 public:
  using Replies = std::vector<Result<ForwardReply>>;  // one per batch member, in member order
  // Serves a batch; calls `routed` once the batch no longer needs the gate stage.
  using RunBatch = kj::Function<kj::Promise<Replies>(Batch, kj::Function<void()> routed)>;
  static constexpr uint32_t kMaxBatchesInFlight = 8;

  Batcher(BatchingPolicy policy, uint32_t hidden, kj::Timer& timer, RunBatch run,
          BatchObserver observer = {});

  // Queues `request`; resolves to its reply, or fails with its own error's status.
  kj::Promise<ForwardReply> admit(ForwardRequest request);

  size_t waitingRequests() const { return waiting_; }

 private:
  struct Pending {
    ForwardRequest request;
    Clock::time_point admitted;
    kj::Own<kj::PromiseFulfiller<ForwardReply>> fulfiller;
    bool started = false;
  };
  using PendingList = std::list<std::shared_ptr<Pending>>;
  struct LayerQueue {
    PendingList waiting;
    uint64_t tokens = 0;
    bool gating = false;    // a batch of this layer is in its gate stage
    uint32_t inFlight = 0;  // batches of this layer being served
    size_t inFlightRequests = 0;
    bool windowArmed = false;    // a timer will pump this layer when the window closes
    bool overdueArmed = false;   // a timer will pump this layer when its batch is overdue
    size_t expectedCompany = 1;  // requests waiting + in flight when the last batch formed
    Clock::time_point lastStart;
    Clock::time_point freeSince;  // when the layer's last batch in flight ended
    double typicalSeconds = 0;    // recent batch durations (EWMA)
  };

  void pump(uint32_t layer);
  bool waitForCompany(uint32_t layer, LayerQueue& q);
  bool busy(uint32_t layer, LayerQueue& q);
  void wakeAt(uint32_t layer, Clock::time_point when, bool LayerQueue::*armed);
  Batch takeBatch(LayerQueue& q, std::vector<std::shared_ptr<Pending>>& members);
  void start(uint32_t layer, Batch batch, std::vector<std::shared_ptr<Pending>> members);
  void withdraw(uint32_t layer, const std::shared_ptr<Pending>& p);
  void taskFailed(kj::Exception&& exception) override;

  BatchingPolicy policy_;
  uint32_t hidden_;
  kj::Timer& timer_;
  RunBatch run_;
  BatchObserver observer_;
  std::map<uint32_t, LayerQueue> layers_;
  uint64_t queuedTokens_ = 0;
  size_t waiting_ = 0;
  kj::TaskSet tasks_;
};

}  // namespace moe::router
