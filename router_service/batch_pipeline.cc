// BatchPipeline: see batch_pipeline.h.
#include "router_service/batch_pipeline.h"

#include "common/rpc_status.h"
#include "router_service/encode.h"
#include "router_service/route_stage.h"

namespace moe::router {
namespace {

uint64_t microsSince(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

Batcher::Replies failAll(size_t n, const Status& s) {
  return Batcher::Replies(n, Result<ForwardReply>(s));
}

}  // namespace

// One batch in flight: owned jointly by its stages' jobs, so each finds it alive.
struct BatchPipeline::State {
  Batch batch;
  LayerModel layer;
  RoutedBatch routed;
  Clock::time_point start = Clock::now(), fanOut;
  BatchTimings timings;
  std::vector<std::unique_ptr<ShardTransport::RunRequest>> prepared;    // by shard; null: none
  std::vector<bool> encoded;                                            // one per plan work
  std::vector<std::unique_ptr<ShardTransport::RunResponse>> responses;  // one per plan work
  std::vector<Status> status;                                           // one per plan work
};

BatchPipeline::BatchPipeline(const RouterModel& model, ShardTransport& transport,
                             ComputeExecutor& executor, RouterMetrics* metrics)
    : model_(model), transport_(transport), executor_(executor), metrics_(metrics) {
  const Placement& p = *model.placement;
  for (uint32_t layer : model.model.moeLayers) {
    std::vector<bool> used(transport.numShards(), false);
    for (uint32_t e = 0; e < p.numExperts(); ++e) {
      for (uint32_t s : p.shardsFor(layer, e)) used[s] = true;
    }
    for (uint32_t s : p.sharedShardsFor(layer)) used[s] = true;
    auto& list = layerShards_[layer];
    for (uint32_t s = 0; s < used.size(); ++s) {
      if (used[s]) list.push_back(s);
    }
  }
}

// Requests for the layer's connected shards, taken now so the routing job can fill them.
void BatchPipeline::prepareRequests(State& st) {
  st.prepared.resize(transport_.numShards());
  for (uint32_t s : layerShards_[st.batch.layer]) {
    KJ_IF_MAYBE (req, transport_.readyRunRequest(s)) {
      st.prepared[s] = std::make_unique<ShardTransport::RunRequest>(kj::mv(*req));
    }
  }
}

// The compute job of a batch: route and plan, then encode every planned call whose request is
// at hand.
Result<RoutedBatch> BatchPipeline::routeAndEncode(State& st, float scale, uint32_t H) {
  auto routed = routeBatch(st.layer, st.batch);
  if (!routed) return routed;
  const auto& work = routed.value().plan.work;
  st.encoded.assign(work.size(), false);
  for (size_t i = 0; i < work.size(); ++i) {
    if (auto* req = st.prepared[work[i].shard].get()) {
      encodeShardCall(work[i], st.batch.layer, st.batch.x, H, scale, *req);
      st.encoded[i] = true;
    }
  }
  return routed;
}

kj::Promise<Batcher::Replies> BatchPipeline::run(Batch batch, kj::Function<void()> routed) {
  auto layer = model_.layerModel(batch.layer);
  if (!layer) {  // the decode stage admits MoE layers only
    return failAll(batch.members.size(),
                   Status::error(StatusCode::kInternal, "batch for a layer that is not MoE"));
  }
  auto st = std::make_shared<State>();
  st->batch = std::move(batch);
  st->layer = *layer;
  prepareRequests(*st);
  const float scale = model_.model.expertInputScale();
  const uint32_t H = model_.model.hiddenSize;
  return executor_.run([st, scale, H]() { return routeAndEncode(*st, scale, H); })
      .then([this, st, onRouted = kj::mv(routed)](
                Result<RoutedBatch> r) mutable -> kj::Promise<Batcher::Replies> {
        onRouted();
        if (!r) return failAll(st->batch.members.size(), r.status());
        st->routed = std::move(r).value();
        st->timings.gateMicros = microsSince(st->start);
        recordRouting(*st);
        return fanOut(st);
      });
}

void BatchPipeline::recordRouting(const State& st) {
  if (metrics_ == nullptr) return;
  metrics_->gateDuration.Observe(static_cast<double>(st.timings.gateMicros) * 1e-6);
  metrics_->recordRouting(st.batch.layer, st.routed.merged);
  uint32_t dropped = 0, zero = 0;
  for (const auto& m : st.routed.members) {
    dropped += m.dropped;
    zero += m.zeroCompute;
  }
  metrics_->recordDropsAndZeroCompute(st.batch.layer, dropped, zero);
}

kj::Promise<Batcher::Replies> BatchPipeline::fanOut(std::shared_ptr<State> st) {
  const size_t n = st->routed.plan.work.size();
  st->responses.resize(n);
  st->status.resize(n);
  st->fanOut = Clock::now();
  kj::Vector<kj::Promise<void>> calls;
  for (size_t i = 0; i < n; ++i) calls.add(callShard(st, i));
  return kj::joinPromises(calls.releaseAsArray()).then([this, st]() {
    st->timings.dispatchMicros = microsSince(st->fanOut);
    return executor_.run([this, st]() {
      const uint32_t H = model_.model.hiddenSize;
      std::vector<ShardPartial> partials(st->routed.plan.work.size());
      for (size_t i = 0; i < partials.size(); ++i) {
        const ShardWork& w = st->routed.plan.work[i];
        if (st->responses[i]) {
          partials[i] = decodeShardReply(*st->responses[i], w, H, transport_.label(w.shard));
        } else {
          partials[i].status = st->status[i];
        }
      }
      return combineBatch(st->batch, st->routed, partials, H, st->timings);
    });
  });
}

// One shard's call, sent: encoded by the routing job, or now on the compute thread once the
// shard is connected.
kj::Promise<ShardTransport::RunResponse> BatchPipeline::encodeAndSend(std::shared_ptr<State> st,
                                                                      size_t i) {
  const uint32_t shard = st->routed.plan.work[i].shard;
  if (st->encoded[i]) return transport_.send(shard, kj::mv(*st->prepared[shard]));
  return transport_.newRunRequest(shard).then([this, st, i, shard](ShardTransport::RunRequest req) {
    proto::ExpertShard::RunParams::Builder params = req;
    auto encoded = executor_.run([this, st, i, params]() mutable {
      encodeShardCall(st->routed.plan.work[i], st->batch.layer, st->batch.x,
                      model_.model.hiddenSize, model_.model.expertInputScale(), params);
    });
    return encoded.then(
        [this, shard, req = kj::mv(req)]() mutable { return transport_.send(shard, kj::mv(req)); });
  });
}

// One shard's call; the reply or the failure is kept in `st` (a failed call fails only the
// requests it carried).
kj::Promise<void> BatchPipeline::callShard(std::shared_ptr<State> st, size_t i) {
  const ShardWork& w = st->routed.plan.work[i];
  const uint32_t shard = w.shard;
  RouterMetrics::Shard* m = metrics_ ? &metrics_->shard(shard) : nullptr;
  if (m) {
    m->inFlight->Increment();
    m->rowsSent->Increment(static_cast<double>(w.tokens.size()));
  }
  const auto start = Clock::now();
  auto sent = encodeAndSend(st, i);
  return sent.then(
      [st, i, m, start](ShardTransport::RunResponse&& r) {
        st->responses[i] = std::make_unique<ShardTransport::RunResponse>(kj::mv(r));
        if (m) {
          m->inFlight->Decrement();
          m->up->Set(1);
          m->duration->Observe(static_cast<double>(microsSince(start)) * 1e-6);
        }
      },
      [st, i, m, start](kj::Exception&& e) {
        st->status[i] = statusFromException(e);
        if (m) {
          m->inFlight->Decrement();
          m->duration->Observe(static_cast<double>(microsSince(start)) * 1e-6);
          m->recordError(metricCodeLabel(st->status[i].code()));
          if (st->status[i].code() == StatusCode::kUnavailable) m->up->Set(0);
        }
      });
}

}  // namespace moe::router
