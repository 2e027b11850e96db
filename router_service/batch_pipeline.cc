// BatchPipeline: see batch_pipeline.h.
#include "router_service/batch_pipeline.h"

#include "common/rpc_status.h"
#include "router_service/encode.h"
#include "router_service/route_stage.h"

namespace moe::router {
namespace {

Batcher::Replies failAll(size_t n, const Status& s) {
  return Batcher::Replies(n, Result<ForwardReply>(s));
}

// How many times one call's rows may move to another replica.
constexpr uint32_t kMaxFailovers = 3;
// A call is hedged once it took this many times its shard's usual time, and at least the floor.
constexpr double kHedgeFactor = 2.0;
constexpr double kHedgeFloorSeconds = 0.050;

}  // namespace

// One shard call of the batch: from the plan, or a failover of an earlier one.
struct BatchPipeline::Attempt {
  ShardWork work;
  uint32_t failovers = 0;  // how many replicas these rows already failed on
  std::unique_ptr<ShardTransport::RunRequest> request;
  bool encoded = false;
  std::unique_ptr<ShardTransport::RunResponse> response;
  Status status;
  bool replaced = false;  // failed, and its rows went to other replicas
  bool hedgeWon = false;  // a hedge answered for its rows: its failover descendants do not count
  size_t failedOverFrom = SIZE_MAX;  // the attempt whose rows this failover carries
};

// One batch in flight: owned jointly by its stages' jobs, so each finds it alive.
struct BatchPipeline::State {
  Batch batch;
  std::shared_ptr<const Placement> placement;  // the one the batch started with, reload or not
  LayerModel layer;
  ReplicaChoice replicas;
  RoutedBatch routed;
  Clock::time_point start = Clock::now(), fanOut;
  BatchTimings timings;
  std::vector<std::unique_ptr<ShardTransport::RunRequest>> prepared;  // by shard; null: none
  // Owned one by one: a compute job holds pointers to some while the loop appends failovers.
  std::vector<std::unique_ptr<Attempt>> attempts;
};

BatchPipeline::BatchPipeline(const RouterModel& model, ShardTransport& transport,
                             ShardHealth& health, ComputeExecutor& executor, kj::Timer& timer,
                             RouterMetrics* metrics)
    : model_(model),
      transport_(transport),
      health_(health),
      executor_(executor),
      timer_(timer),
      metrics_(metrics) {}

ReplicaChoice BatchPipeline::chooseReplicas(const Placement& p, uint32_t layer) {
  ReplicaChoice c;
  c.available.assign(model_.model.numExperts, 1);  // zero-computation experts: the router
  c.shardOfExpert.resize(p.numExperts());
  c.why.resize(p.numExperts());
  for (uint32_t e = 0; e < p.numExperts(); ++e) {
    c.shardOfExpert[e] = health_.choose(p.shardsFor(layer, e));
    c.available[e] = c.shardOfExpert[e] != ShardHealth::kNone;
    if (c.available[e]) continue;
    for (uint32_t s : p.shardsFor(layer, e)) {
      c.why[e] += (c.why[e].empty() ? "" : "; ") + transport_.label(s) + " " + health_.describe(s);
    }
  }
  c.sharedShard = health_.choose(p.sharedShardsFor(layer));
  return c;
}

// Requests for the chosen replicas, taken now so the routing job can fill them.
void BatchPipeline::prepareRequests(State& st) {
  st.prepared.resize(transport_.numShards());
  auto take = [&](uint32_t s) {
    if (s == ShardHealth::kNone || st.prepared[s]) return;
    KJ_IF_MAYBE (req, transport_.readyRunRequest(s)) {
      st.prepared[s] = std::make_unique<ShardTransport::RunRequest>(kj::mv(*req));
    }
  };
  for (uint32_t s : st.replicas.shardOfExpert) take(s);
  take(st.replicas.sharedShard);
}

// The compute job of a batch: route and plan, then encode every planned call whose request is
// at hand.
Result<RoutedBatch> BatchPipeline::routeAndEncode(State& st, float scale, uint32_t H, DType wire) {
  auto routed = routeBatch(st.layer, st.batch, st.replicas);
  if (!routed) return routed;
  for (const ShardWork& w : routed.value().plan.work) {
    auto a = std::make_unique<Attempt>();
    a->work = w;
    if (st.prepared[w.shard]) {
      a->request = std::move(st.prepared[w.shard]);
      encodeShardCall(w, st.batch.layer, st.batch.x, H, scale, wire, *a->request);
      a->encoded = true;
    }
    st.attempts.push_back(std::move(a));
  }
  return routed;
}

kj::Promise<Batcher::Replies> BatchPipeline::run(Batch batch, kj::Function<void()> routed) {
  return runOnce(std::move(batch), kj::mv(routed), /*retry=*/true);
}

kj::Promise<Batcher::Replies> BatchPipeline::runOnce(Batch batch, kj::Function<void()> routed,
                                                     bool retry) {
  auto layer = model_.layerModel(batch.layer);
  if (!layer) {  // the decode stage admits MoE layers only
    return failAll(batch.members.size(),
                   Status::error(StatusCode::kInternal, "batch for a layer that is not MoE"));
  }
  auto st = std::make_shared<State>();
  st->batch = std::move(batch);
  st->placement = model_.placement;
  st->layer = *layer;
  st->layer.placement = st->placement.get();
  st->replicas = chooseReplicas(*st->placement, st->batch.layer);
  prepareRequests(*st);
  const float scale = model_.model.expertInputScale();
  const uint32_t H = model_.model.hiddenSize;
  return executor_
      .run([st, scale, H, wire = model_.cluster.router.wireDtype]() {
        return routeAndEncode(*st, scale, H, wire);
      })
      .then([this, st, onRouted = kj::mv(routed)](
                Result<RoutedBatch> r) mutable -> kj::Promise<Batcher::Replies> {
        onRouted();
        if (!r) return failAll(st->batch.members.size(), r.status());
        st->routed = std::move(r).value();
        st->timings.gateMicros = microsSince(st->start);
        recordRouting(*st);
        return fanOut(st);
      })
      .then([this, st, retry](Batcher::Replies replies) -> kj::Promise<Batcher::Replies> {
        if (!retry || model_.cluster.routing.missingExpert == MissingExpertPolicy::kError) {
          return kj::mv(replies);
        }
        return retryUnavailable(st, std::move(replies));
      });
}

kj::Promise<Batcher::Replies> BatchPipeline::retryUnavailable(std::shared_ptr<State> st,
                                                              Batcher::Replies replies) {
  const uint32_t H = model_.model.hiddenSize;
  Batch again;
  again.layer = st->batch.layer;
  std::vector<size_t> which;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i] || replies[i].code() != StatusCode::kUnavailable) continue;
    Batch::Member m = st->batch.members[i];
    const auto rows = st->batch.x.begin() + ptrdiff_t{m.offset} * H;
    again.x.insert(again.x.end(), rows, rows + ptrdiff_t{m.tokens} * H);
    m.offset = again.tokens;
    again.tokens += m.tokens;
    again.members.push_back(std::move(m));
    which.push_back(i);
  }
  if (which.empty()) return kj::mv(replies);
  return runOnce(
             std::move(again), []() {}, /*retry=*/false)
      .then([replies = std::move(replies), which](Batcher::Replies served) mutable {
        for (size_t k = 0; k < which.size(); ++k) replies[which[k]] = std::move(served[k]);
        return std::move(replies);
      });
}

void BatchPipeline::recordRouting(const State& st) {
  if (metrics_ == nullptr) return;
  metrics_->gateDuration.Observe(static_cast<double>(st.timings.gateMicros) * 1e-6);
  metrics_->recordRouting(st.batch.layer, st.routed.merged);
  uint32_t dropped = 0, zero = 0, missing = 0;
  double weightLost = 0;
  for (const auto& m : st.routed.members) {
    dropped += m.dropped;
    zero += m.zeroCompute;
    missing += m.missing.assignments;
    weightLost += m.missing.weightLost;
  }
  metrics_->recordDropsAndZeroCompute(st.batch.layer, dropped, zero);
  if (missing > 0) metrics_->recordMissing(st.batch.layer, missing, weightLost);
}

kj::Promise<Batcher::Replies> BatchPipeline::fanOut(std::shared_ptr<State> st) {
  st->fanOut = Clock::now();
  kj::Vector<kj::Promise<void>> calls;
  std::vector<size_t> unencoded;
  for (size_t i = 0; i < st->attempts.size(); ++i) {
    if (st->attempts[i]->encoded) {
      calls.add(send(st, i));
    } else {
      unencoded.push_back(i);
    }
  }
  if (!unencoded.empty()) calls.add(encodeAndSend(st, std::move(unencoded)));
  return kj::joinPromises(calls.releaseAsArray()).then([this, st]() { return combine(st); });
}

// Attempts whose requests were not prepared (their shard was not connected, or they are
// failovers): requests taken now, encoded in one compute job, then sent.
kj::Promise<void> BatchPipeline::encodeAndSend(std::shared_ptr<State> st,
                                               std::vector<size_t> attempts) {
  std::vector<Attempt*> jobs;
  for (size_t i : attempts) {
    Attempt* a = st->attempts[i].get();
    KJ_IF_MAYBE (req, transport_.readyRunRequest(a->work.shard)) {
      a->request = std::make_unique<ShardTransport::RunRequest>(kj::mv(*req));
      jobs.push_back(a);
    }
  }
  const float scale = model_.model.expertInputScale();
  const uint32_t H = model_.model.hiddenSize;
  auto encoded = executor_.run(
      [st, jobs = std::move(jobs), scale, H, wire = model_.cluster.router.wireDtype]() {
        for (Attempt* a : jobs) {
          encodeShardCall(a->work, st->batch.layer, st->batch.x, H, scale, wire, *a->request);
          a->encoded = true;
        }
      });
  return encoded.then([this, st, attempts = std::move(attempts)]() {
    kj::Vector<kj::Promise<void>> calls;
    for (size_t i : attempts) calls.add(send(st, i));
    return kj::joinPromises(calls.releaseAsArray());
  });
}

// Counts one call in health and metrics from its start until it ends or is cancelled (a hedge
// won).
struct CallAccount {
  ShardHealth& health;
  RouterMetrics::Shard* metrics;
  uint32_t shard, rows;
  Clock::time_point start = Clock::now();
  bool open = true;
  CallAccount(ShardHealth& h, RouterMetrics::Shard* m, uint32_t s, uint32_t r)
      : health(h), metrics(m), shard(s), rows(r) {
    health.callStarted(shard, rows);
    if (metrics) {
      metrics->inFlight->Increment();
      metrics->rowsSent->Increment(rows);
      metrics->inflightRows->Increment(rows);
    }
  }
  void end(const Status& s) {
    if (!open) return;
    open = false;
    const double seconds = static_cast<double>(microsSince(start)) * 1e-6;
    health.callEnded(shard, rows, seconds);
    if (!metrics) return;
    metrics->inFlight->Decrement();
    metrics->inflightRows->Decrement(rows);
    metrics->duration->Observe(seconds);
    if (s) {
      metrics->up->Set(1);
    } else {
      metrics->recordError(metricCodeLabel(s.code()));
      if (s.code() == StatusCode::kUnavailable) metrics->up->Set(0);
    }
  }
};

// One call of `a` to its shard; the reply or the failure lands in `a`.
kj::Promise<void> BatchPipeline::callOnce(std::shared_ptr<State> st, Attempt* a) {
  const uint32_t shard = a->work.shard;
  auto account =
      std::make_shared<CallAccount>(health_, metrics_ ? &metrics_->shard(shard) : nullptr, shard,
                                    static_cast<uint32_t>(a->work.tokens.size()));
  RouterMetrics::Shard* m = metrics_ ? &metrics_->shard(shard) : nullptr;
  if (m) m->sentBytes->Increment(static_cast<double>(a->request->getRows().getData().size()));
  return transport_.send(shard, kj::mv(*a->request))
      .then(
          [a, account, m](ShardTransport::RunResponse&& r) {
            if (m) m->receivedBytes->Increment(static_cast<double>(r.getOutput().getData().size()));
            a->response = std::make_unique<ShardTransport::RunResponse>(kj::mv(r));
            account->end(Status::ok());
          },
          [a, account](kj::Exception&& e) {
            a->status = statusFromException(e);
            account->end(a->status);
          })
      .attach(kj::defer([account]() {
                account->end(Status::error(StatusCode::kUnavailable, "cancelled: a hedge won"));
              }),
              kj::mv(st));
}

// One call of the batch: failover when it fails Unavailable, a hedge when it is slow.
kj::Promise<void> BatchPipeline::send(std::shared_ptr<State> st, size_t i) {
  Attempt* a = st->attempts[i].get();
  const uint32_t shard = a->work.shard;
  if (!a->encoded) {
    a->status = Status::error(StatusCode::kUnavailable,
                              transport_.label(shard) + ": not connected (not verified yet)");
    health_.markDown(shard, a->status.message());
    return failover(st, i);
  }
  auto call = callOnce(st, a).then([this, st, i, a, shard]() -> kj::Promise<void> {
    if (a->response || a->status.code() != StatusCode::kUnavailable) return kj::READY_NOW;
    health_.markDown(shard, a->status.message());
    return failover(st, i);
  });
  const double delay = std::max(kHedgeFloorSeconds, kHedgeFactor * health_.typicalSeconds(shard));
  auto hedged =
      timer_.afterDelay(static_cast<int64_t>(delay * 1e6) * kj::MICROSECONDS).then([this, st, i]() {
        return hedge(st, i);
      });
  return call.exclusiveJoin(kj::mv(hedged));
}

// The segments of `work` placed on other usable replicas of their experts (not `work`'s shard).
Result<std::vector<ShardWork>> BatchPipeline::otherReplicas(const State& st,
                                                            const ShardWork& work) {
  const Placement& p = *st.placement;
  const uint32_t layer = st.batch.layer;
  return replanOnto(
      work,
      [&](const ShardSegment& seg) {
        return health_.choose(
            seg.shared ? p.sharedShardsFor(layer) : p.shardsFor(layer, seg.expert), work.shard);
      },
      layer);
}

// A slow call's rows sent to other replicas as well; wins (resolves) only when every hedge call
// answered, then those answers replace the slow call's. Otherwise never resolves: the slow call
// goes on until it answers, fails or meets its deadline.
kj::Promise<void> BatchPipeline::hedge(std::shared_ptr<State> st, size_t i) {
  auto moved = otherReplicas(*st, st->attempts[i]->work);
  if (!moved) return kj::NEVER_DONE;
  auto hedges = std::make_shared<std::vector<std::unique_ptr<Attempt>>>();
  std::vector<Attempt*> jobs;
  for (ShardWork& w : moved.value()) {
    auto a = std::make_unique<Attempt>();
    a->work = std::move(w);
    KJ_IF_MAYBE (req, transport_.readyRunRequest(a->work.shard)) {
      a->request = std::make_unique<ShardTransport::RunRequest>(kj::mv(*req));
    } else {
      return kj::NEVER_DONE;
    }
    jobs.push_back(a.get());
    hedges->push_back(std::move(a));
  }
  const float scale = model_.model.expertInputScale();
  const uint32_t H = model_.model.hiddenSize;
  auto encoded = executor_.run([st, jobs, scale, H, wire = model_.cluster.router.wireDtype]() {
    for (Attempt* a : jobs)
      encodeShardCall(a->work, st->batch.layer, st->batch.x, H, scale, wire, *a->request);
  });
  return encoded
      .then([this, st, jobs]() {
        kj::Vector<kj::Promise<void>> calls;
        for (Attempt* a : jobs) calls.add(callOnce(st, a));
        return kj::joinPromises(calls.releaseAsArray());
      })
      .then([st, i, hedges]() -> kj::Promise<void> {
        for (const auto& h : *hedges) {
          if (!h->response) return kj::NEVER_DONE;
        }
        st->attempts[i]->replaced = true;
        st->attempts[i]->hedgeWon = true;
        for (auto& h : *hedges) st->attempts.push_back(std::move(h));
        return kj::READY_NOW;
      });
}

// The failed call's segments go to other available replicas of their experts.
kj::Promise<void> BatchPipeline::failover(std::shared_ptr<State> st, size_t i) {
  Attempt& a = *st->attempts[i];
  if (a.failovers >= kMaxFailovers) return kj::READY_NOW;
  auto moved = otherReplicas(*st, a.work);
  if (!moved) return kj::READY_NOW;  // no replica left: the attempt's own error stands
  a.replaced = true;
  std::vector<size_t> added;
  for (ShardWork& w : moved.value()) {
    auto next = std::make_unique<Attempt>();
    next->work = std::move(w);
    next->failovers = a.failovers + 1;
    next->failedOverFrom = i;
    added.push_back(st->attempts.size());
    st->attempts.push_back(std::move(next));
  }
  return encodeAndSend(st, std::move(added));
}

// True when a hedge answered for `a`'s rows: one of the attempts it failed over from won a hedge.
bool BatchPipeline::coveredByHedge(const State& st, const Attempt& a) {
  for (size_t from = a.failedOverFrom; from != SIZE_MAX; from = st.attempts[from]->failedOverFrom) {
    if (st.attempts[from]->hedgeWon) return true;
  }
  return false;
}

kj::Promise<Batcher::Replies> BatchPipeline::combine(std::shared_ptr<State> st) {
  st->timings.dispatchMicros = microsSince(st->fanOut);
  return executor_.run([this, st]() {
    const uint32_t H = model_.model.hiddenSize;
    std::vector<ShardWork> works;
    std::vector<ShardPartial> partials;
    for (const auto& a : st->attempts) {
      // Replaced by failover or a hedge; cancelled because a hedge covered it; or a failover of
      // rows a hedge answered for (its own failure, if any, does not count).
      if (a->replaced || (!a->response && a->status) || coveredByHedge(*st, *a)) continue;
      ShardPartial p;
      if (a->response) {
        p = decodeShardReply(*a->response, a->work, H, transport_.label(a->work.shard));
      } else {
        p.status = a->status;
      }
      works.push_back(a->work);
      partials.push_back(std::move(p));
    }
    return combineBatch(st->batch, st->routed, works, partials, H, st->timings);
  });
}

}  // namespace moe::router
