// Batcher: see batcher.h.
#include "router_service/batcher.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "common/rpc_status.h"

namespace moe::router {

Batcher::Batcher(BatchingPolicy policy, uint32_t hidden, kj::Timer& timer, RunBatch run,
                 BatchObserver observer)
    : policy_(policy),
      hidden_(hidden),
      timer_(timer),
      run_(kj::mv(run)),
      observer_(std::move(observer)),
      tasks_(*this) {}

void Batcher::taskFailed(kj::Exception&& exception) {
  logError("batcher: ", exception.getDescription().cStr());
}

kj::Promise<ForwardReply> Batcher::admit(ForwardRequest request) {
  const uint32_t layer = request.layer;
  if (queuedTokens_ + request.tokens > policy_.maxQueuedTokens) {
    return toRpcException(
        Status::error(StatusCode::kResourceExhausted,
                      "router queue full: " + std::to_string(queuedTokens_) + " tokens waiting + " +
                          std::to_string(request.tokens) + " exceeds router.max_queued_tokens = " +
                          std::to_string(policy_.maxQueuedTokens) + "; retry later"));
  }
  auto paf = kj::newPromiseAndFulfiller<ForwardReply>();
  auto p = std::make_shared<Pending>();
  p->admitted = Clock::now();
  p->fulfiller = kj::mv(paf.fulfiller);
  queuedTokens_ += request.tokens;
  p->request = std::move(request);
  auto& q = layers_[layer];
  q.tokens += p->request.tokens;
  q.waiting.push_back(p);
  ++waiting_;
  if (observer_.queueDepth) observer_.queueDepth(waiting_);
  pump(layer);
  // Dropping the promise (deadline, cancellation) withdraws the request if it has not started.
  return paf.promise.attach(kj::defer([this, layer, p]() { withdraw(layer, p); }));
}

void Batcher::withdraw(uint32_t layer, const std::shared_ptr<Pending>& p) {
  if (p->started) return;
  auto& q = layers_[layer];
  auto it = std::find(q.waiting.begin(), q.waiting.end(), p);
  if (it == q.waiting.end()) return;
  q.waiting.erase(it);
  q.tokens -= p->request.tokens;
  queuedTokens_ -= p->request.tokens;
  --waiting_;
  p->started = true;  // never runs now
  if (observer_.queueDepth) observer_.queueDepth(waiting_);
}

// Pumps `layer` again at `when`, once (`armed` marks the pending timer).
void Batcher::wakeAt(uint32_t layer, Clock::time_point when, bool LayerQueue::*armed) {
  auto& q = layers_[layer];
  if (q.*armed) return;
  q.*armed = true;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(when - Clock::now());
  tasks_.add(timer_.afterDelay(std::max<int64_t>(us.count(), 0) * kj::MICROSECONDS)
                 .then([this, layer, armed]() {
                   layers_[layer].*armed = false;
                   pump(layer);
                 }));
}

// True while the layer's current batch should be left to finish first: it is being gated, or it
// is in flight and not yet overdue (3× the layer's usual batch time, at least 20 ms).
bool Batcher::busy(uint32_t layer, LayerQueue& q) {
  if (q.gating || q.inFlight >= kMaxBatchesInFlight) return true;
  if (q.inFlight == 0) return false;
  const auto overdue =
      q.lastStart + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(std::max(0.020, 3 * q.typicalSeconds)));
  if (Clock::now() >= overdue) return false;
  wakeAt(layer, overdue, &LayerQueue::overdueArmed);
  return true;
}

// True when the waiting request(s) should wait for company first (window_us > 0).
bool Batcher::waitForCompany(uint32_t layer, LayerQueue& q) {
  if (policy_.windowUs == 0 || q.tokens >= policy_.maxTokens) return false;
  if (q.waiting.size() + q.inFlightRequests >= q.expectedCompany) return false;
  const auto deadline = std::max(q.waiting.front()->admitted, q.freeSince) +
                        std::chrono::microseconds(policy_.windowUs);
  if (Clock::now() >= deadline) return false;
  wakeAt(layer, deadline, &LayerQueue::windowArmed);
  return true;
}

void Batcher::pump(uint32_t layer) {
  auto& q = layers_[layer];
  if (q.waiting.empty()) return;
  if (policy_.enabled && (busy(layer, q) || waitForCompany(layer, q))) return;
  q.expectedCompany = q.waiting.size() + q.inFlightRequests;
  std::vector<std::shared_ptr<Pending>> members;
  Batch batch = takeBatch(q, members);
  if (observer_.queueDepth) observer_.queueDepth(waiting_);
  if (observer_.batchStarted) {
    const auto now = Clock::now();
    std::vector<double> queued;
    for (const auto& m : members)
      queued.push_back(std::chrono::duration<double>(now - m->admitted).count());
    observer_.batchStarted(batch, queued);
  }
  start(layer, std::move(batch), std::move(members));
  // With batching off every request runs at once, on its own.
  if (!policy_.enabled) pump(layer);
}

// Takes requests from the front of the queue, oldest first, while they fit in max_tokens (the
// first always goes, however large: the decode stage already bounded it by router.max_tokens).
// Batching off: exactly one.
Batch Batcher::takeBatch(LayerQueue& q, std::vector<std::shared_ptr<Pending>>& members) {
  Batch b;
  b.layer = q.waiting.front()->request.layer;
  while (!q.waiting.empty()) {
    const auto& p = q.waiting.front();
    const uint32_t T = p->request.tokens;
    if (!members.empty() && (!policy_.enabled || b.tokens + T > policy_.maxTokens)) break;
    Batch::Member m;
    m.offset = b.tokens;
    m.tokens = T;
    m.prevLogits = p->request.prevLogits;
    m.returnRouting = p->request.returnRouting;
    m.noiseSeed = p->request.noiseSeed;
    b.members.push_back(std::move(m));
    b.tokens += T;
    p->started = true;
    q.tokens -= T;
    queuedTokens_ -= T;
    --waiting_;
    members.push_back(p);
    q.waiting.pop_front();
  }
  // The rows are copied now, while every member's call (and its message) is alive.
  b.x.resize(size_t{b.tokens} * hidden_);
  for (size_t i = 0; i < members.size(); ++i) {
    auto rows = members[i]->request.hidden->values();
    std::memcpy(b.x.data() + size_t{b.members[i].offset} * hidden_, rows.data(),
                rows.size() * sizeof(float));
  }
  return b;
}

void Batcher::start(uint32_t layer, Batch batch, std::vector<std::shared_ptr<Pending>> members) {
  auto& q = layers_[layer];
  q.gating = true;
  ++q.inFlight;
  q.inFlightRequests += members.size();
  q.lastStart = Clock::now();
  const auto started = q.lastStart;
  const size_t count = members.size();
  auto routed = [this, layer, done = false]() mutable {
    if (done) return;
    done = true;
    layers_[layer].gating = false;
    pump(layer);
  };
  auto shared = std::make_shared<std::vector<std::shared_ptr<Pending>>>(std::move(members));
  auto replies = run_(std::move(batch), kj::mv(routed));
  tasks_.add(replies
                 .then(
                     [shared](Replies r) {
                       for (size_t i = 0; i < shared->size() && i < r.size(); ++i) {
                         auto& f = (*shared)[i]->fulfiller;
                         if (r[i]) {
                           f->fulfill(std::move(r[i]).value());
                         } else {
                           f->reject(toRpcException(r[i].status()));
                         }
                       }
                     },
                     [shared](kj::Exception&& e) {
                       for (auto& p : *shared) p->fulfiller->reject(kj::cp(e));
                     })
                 .then([this, layer, started, count]() {
                   auto& q = layers_[layer];
                   const double took =
                       std::chrono::duration<double>(Clock::now() - started).count();
                   q.typicalSeconds =
                       q.typicalSeconds == 0 ? took : 0.8 * q.typicalSeconds + 0.2 * took;
                   --q.inFlight;
                   q.inFlightRequests -= count;
                   if (q.inFlight == 0) q.freeSince = Clock::now();
                   q.gating = false;  // in case the run ended before it said so
                   pump(layer);
                 }));
}

}  // namespace moe::router
