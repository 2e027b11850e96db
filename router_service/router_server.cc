// RouterServer implementation: the RPC glue around the request stages.
#include "router_service/router_server.h"

#include <algorithm>

#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_status.h"
#include "common/service_runtime.h"
#include "common/tensor_wire.h"
#include "router_service/decode.h"
#include "router_service/readiness.h"
#include "router_service/reply.h"

namespace moe::router {
RouterServer::RouterServer(std::unique_ptr<RouterModel> model, kj::AsyncIoProvider& io,
                           kj::Timer& timer, RouterMetrics& metrics,
                           std::shared_ptr<const RpcTls> tls)
    : RouterServer(std::move(model), nullptr, timer, &metrics) {
  transport_ = std::make_unique<CapnpShardTransport>(
      io, timer, model_->cluster.shards, model_->cluster.timeouts, std::move(tls),
      [&metrics](uint32_t shard) { metrics.shard(shard).tlsHandshakeFailures->Increment(); });
  connectStages();
}

void RouterServer::connectStages() {
  transport_->onConnectionLost(
      [this](uint32_t s) { health_.markDown(s, "connection lost; must be verified again"); });
  prober_ = std::make_unique<ShardProber>(*transport_, health_, timer_, *model_, metrics_);
  pipeline_ =
      std::make_unique<BatchPipeline>(*model_, *transport_, health_, executor_, timer_, metrics_);
}

RouterServer::RouterServer(std::unique_ptr<RouterModel> model,
                           std::unique_ptr<ShardTransport> transport, kj::Timer& timer,
                           RouterMetrics* metrics)
    : model_(std::move(model)),
      timer_(timer),
      metrics_(metrics),
      transport_(std::move(transport)),
      health_(model_->cluster.shards.size()),
      batcher_(
          policyFor(model_->cluster.router), model_->model.hiddenSize, timer,
          [this](Batch b, kj::Function<void()> routed) {
            return pipeline_->run(std::move(b), kj::mv(routed));
          },
          observer()) {
  if (transport_) connectStages();
}

BatchingPolicy RouterServer::policyFor(const RouterConfig& router) {
  BatchingPolicy p;
  p.enabled = router.batching.enabled;
  p.windowUs = router.batching.windowUs;
  p.maxTokens = router.batching.maxTokens;
  p.maxQueuedTokens = router.maxQueuedTokens;
  return p;
}

BatchObserver RouterServer::observer() {
  BatchObserver o;
  if (metrics_ == nullptr) return o;
  RouterMetrics* m = metrics_;
  o.queueDepth = [m](size_t waiting) { m->queueDepth.Set(static_cast<double>(waiting)); };
  o.batchStarted = [m](const Batch& b, std::span<const double> queued) {
    m->batchRequests.Observe(static_cast<double>(b.members.size()));
    m->batchTokens.Observe(b.tokens);
    for (double s : queued) m->queueSeconds.Observe(s);
  };
  return o;
}

void RouterServer::startDraining() {
  draining_ = true;
  logInfo("draining: refusing new requests, ", inFlight_, " in flight");
}

kj::Promise<void> RouterServer::whenIdle() {
  if (inFlight_ == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  idleWaiters_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void RouterServer::callEnded() {
  if (--inFlight_ > 0) return;
  for (auto& w : idleWaiters_) w->fulfill();
  idleWaiters_.clear();
}

kj::Promise<void> RouterServer::forward(ForwardContext context) {
  const auto start = Clock::now();
  const uint32_t ms = model_->cluster.timeouts.requestMs;
  if (draining_) {
    if (metrics_) {
      metrics_->recordRequest(metricCodeLabel(StatusCode::kUnavailable), 0,
                              context.getParams().getLayer());
    }
    return toRpcException(Status::error(StatusCode::kUnavailable,
                                        "router is draining; send the request to another router"));
  }
  if (const uint32_t max = model_->cluster.limits.maxInflightRequests; inFlight_ >= max) {
    if (metrics_) {
      metrics_->recordRequest(metricCodeLabel(StatusCode::kResourceExhausted), 0,
                              context.getParams().getLayer());
    }
    return toRpcException(Status::error(StatusCode::kResourceExhausted,
                                        std::to_string(inFlight_) +
                                            " requests in flight, limits.max_inflight_requests = " +
                                            std::to_string(max) + "; retry later"));
  }
  ++inFlight_;
  if (metrics_) metrics_->inFlight.Increment();
  auto done = [this, start, layer = context.getParams().getLayer()](StatusCode code) {
    callEnded();
    if (!metrics_) return;
    metrics_->inFlight.Decrement();
    metrics_->recordRequest(metricCodeLabel(code), static_cast<double>(microsSince(start)) * 1e-6,
                            layer);
  };
  auto decoded = decodeForward(context.getParams(), *model_);
  if (!decoded) {
    done(decoded.code());
    return toRpcException(decoded.status());
  }
  const bool returnRouting = decoded.value().returnRouting;
  const uint32_t layer = decoded.value().layer;
  auto reply = withDeadline(
      timer_, ms, batcher_.admit(std::move(decoded).value()),
      "forward did not complete within timeouts.request_ms = " + std::to_string(ms) + " ms");
  return reply.then(
      [this, context, returnRouting, start, done, layer](ForwardReply r) mutable {
        // Finite inputs that overflow float32 in the experts: an error naming the layer and the
        // cause, never an OK reply with Inf/NaN rows (and never the shard's fault).
        if (int64_t bad = firstNonFinite(r.output); bad >= 0) {
          const uint32_t H = model_->model.hiddenSize;
          Status s = Status::error(
              "layer " + std::to_string(layer) + ": the output of token " +
              std::to_string(bad / H) + " is not finite (" + std::to_string(r.output[bad]) +
              " at column " + std::to_string(bad % H) +
              "): its hidden values overflow float32 in the expert FFNs; scale them down");
          done(s.code());
          throwStatus(s);
        }
        writeForwardResults(r, model_->model, returnRouting, microsSince(start),
                            context.getResults());
        done(StatusCode::kOk);
      },
      [done](kj::Exception&& e) {
        done(statusFromException(e).code());
        kj::throwFatalException(kj::mv(e));
      });
}

void RouterServer::updateReadiness(AdminServer* admin) {
  const Readiness r = assessReadiness(*model_, health_, *transport_, degradedRoutingAllowed());
  if (metrics_) {
    for (const auto& [layer, count] : r.unavailable) metrics_->setExpertsUnavailable(layer, count);
  }
  if (admin == nullptr || admin->state() == ServiceState::kDraining) return;
  if (r.ready) {
    admin->setState(ServiceState::kReady, r.why);
  } else {
    admin->setState(ServiceState::kNotReady, r.why);
  }
}

kj::Promise<void> RouterServer::watchShards(AdminServer* admin, uint32_t periodMs) {
  admin_ = admin;
  health_.onChange([this, admin]() { updateReadiness(admin); });
  updateReadiness(admin);
  return prober_->run(periodMs);
}

kj::Promise<Result<std::string>> RouterServer::reloadShards(ClusterConfig next) {
  if (reloading_) {
    return Result<std::string>(Status::error(StatusCode::kUnavailable,
                                             "a placement reload is already running; try again"));
  }
  if (auto s = checkReloadable(next, *model_); !s) return Result<std::string>(s);
  std::vector<ShardConfig> table;
  std::vector<bool> removed;
  for (uint32_t i = 0; i < transport_->numShards(); ++i) {
    table.push_back(transport_->shard(i));
    removed.push_back(health_.removed(i));
  }
  auto plan = std::make_shared<ShardReload>(planShardReload(table, removed, next.shards));
  // New shards join the table now, but no placement lists them until they have been probed.
  std::vector<uint32_t> verify;
  for (const ShardConfig& c : plan->added) {
    verify.push_back(transport_->addShard(c));
    health_.add();
    if (metrics_) metrics_->addShard(c);
  }
  for (size_t i = 0; i < next.shards.size(); ++i) {
    const uint32_t s = plan->index[i];
    const bool relisted =
        std::find(plan->relisted.begin(), plan->relisted.end(), s) != plan->relisted.end();
    const bool changed =
        std::find(plan->changed.begin(), plan->changed.end(), s) != plan->changed.end();
    if (!relisted && !changed) continue;
    transport_->setConfig(s, next.shards[i]);  // what its identity is checked against now
    if (relisted) health_.reinstate(s, "listed again by a reload; not yet verified");
    verify.push_back(s);
  }
  reloading_ = true;
  // A shard that does not answer within the connect timeout joins later, when its probe passes.
  const uint32_t waitMs = model_->cluster.timeouts.connectMs + 1000;
  return prober_->probeNow(verify)
      .exclusiveJoin(timer_.afterDelay(waitMs * kj::MILLISECONDS))
      .then([this, next = std::move(next), plan]() -> Result<std::string> {
        reloading_ = false;
        return applyPlacement(next, *plan);
      });
}

std::string RouterServer::applyPlacement(const ClusterConfig& next, const ShardReload& plan) {
  std::vector<ShardConfig> table;
  for (uint32_t i = 0; i < transport_->numShards(); ++i) table.push_back(transport_->shard(i));
  model_->placement = std::make_shared<const Placement>(Placement::fromShards(
      next.shards, plan.index, static_cast<uint32_t>(transport_->numShards()), model_->model));
  model_->cluster.shards = next.shards;
  for (uint32_t s : plan.removed) health_.markRemoved(s);
  updateReadiness(admin_);
  std::string summary = plan.summary(table);
  for (const ShardConfig& c : plan.added) {
    for (uint32_t i = 0; i < transport_->numShards(); ++i) {
      if (transport_->shard(i).name == c.name && !health_.usable(i) && !health_.removed(i)) {
        summary += "; " + c.name + " " + health_.describe(i);
      }
    }
  }
  logInfo("placement reloaded from ", next.sourcePath, ": ", summary);
  return summary;
}

kj::Promise<void> RouterServer::info(InfoContext context) {
  return prober_->probeAll().then([this, context]() mutable {
    const ModelConfig& m = model_->model;
    auto info = context.getResults().initInfo();
    fillModelInfo(info, m);
    info.setRole("router");
    info.setName("router");
    info.setBackend(std::string(model_->backend->name()));
    info.setMaxTokens(model_->cluster.router.maxTokens);
    info.setFingerprint(model_->fingerprint);
    info.setDtype(std::string(dtypeName(model_->dtype)));  // the cluster's (model.dtype)
    std::vector<uint32_t> listed;  // every shard of the placement: removed ones are gone
    for (uint32_t i = 0; i < transport_->numShards(); ++i) {
      if (!health_.removed(i)) listed.push_back(i);
    }
    auto shards = info.initShards(static_cast<unsigned>(listed.size()));
    for (unsigned k = 0; k < listed.size(); ++k) {
      const uint32_t i = listed[k];
      auto s = shards[k];
      s.setName(transport_->shard(i).name);
      s.setAddress(transport_->shard(i).listen);
      s.setReachable(health_.usable(i));
      s.setError(health_.usable(i) ? std::string() : health_.describe(i));
    }
    info.setReady(assessReadiness(*model_, health_, *transport_, degradedRoutingAllowed()).ready);
  });
}

}  // namespace moe::router
