// RouterServer implementation: the RPC glue around the request stages.
#include "router_service/router_server.h"

#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_status.h"
#include "common/service_runtime.h"
#include "router_service/decode.h"
#include "router_service/reply.h"

namespace moe::router {
namespace {

uint64_t microsSince(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

}  // namespace

RouterServer::RouterServer(std::unique_ptr<RouterModel> model, kj::AsyncIoProvider& io,
                           kj::Timer& timer, RouterMetrics& metrics)
    : RouterServer(std::move(model), nullptr, timer, &metrics) {
  transport_ = std::make_unique<CapnpShardTransport>(io, timer, model_->cluster.shards,
                                                     model_->cluster.timeouts);
  pipeline_ = std::make_unique<BatchPipeline>(*model_, *transport_, executor_, metrics_);
}

RouterServer::RouterServer(std::unique_ptr<RouterModel> model,
                           std::unique_ptr<ShardTransport> transport, kj::Timer& timer,
                           RouterMetrics* metrics)
    : model_(std::move(model)),
      timer_(timer),
      metrics_(metrics),
      transport_(std::move(transport)),
      batcher_(
          policyFor(model_->cluster.router), model_->model.hiddenSize, timer,
          [this](Batch b, kj::Function<void()> routed) {
            return pipeline_->run(std::move(b), kj::mv(routed));
          },
          observer()) {
  if (transport_) {
    pipeline_ = std::make_unique<BatchPipeline>(*model_, *transport_, executor_, metrics_);
  }
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

kj::Promise<void> RouterServer::forward(ForwardContext context) {
  const auto start = Clock::now();
  const uint32_t ms = model_->cluster.timeouts.requestMs;
  if (metrics_) metrics_->inFlight.Increment();
  auto done = [this, start](StatusCode code) {
    if (!metrics_) return;
    metrics_->inFlight.Decrement();
    metrics_->recordRequest(metricCodeLabel(code), static_cast<double>(microsSince(start)) * 1e-6);
  };
  auto decoded = decodeForward(context.getParams(), *model_);
  if (!decoded) {
    done(decoded.code());
    return toRpcException(decoded.status());
  }
  const bool returnRouting = decoded.value().returnRouting;
  auto reply = withDeadline(
      timer_, ms, batcher_.admit(std::move(decoded).value()),
      "forward did not complete within timeouts.request_ms = " + std::to_string(ms) + " ms");
  return reply.then(
      [this, context, returnRouting, start, done](ForwardReply r) mutable {
        writeForwardResults(r, model_->model, returnRouting, microsSince(start),
                            context.getResults());
        done(StatusCode::kOk);
      },
      [done](kj::Exception&& e) {
        done(statusFromException(e).code());
        kj::throwFatalException(kj::mv(e));
      });
}

kj::Promise<kj::Array<std::string>> RouterServer::probeShards() {
  kj::Vector<kj::Promise<std::string>> probes;
  for (size_t i = 0; i < transport_->numShards(); ++i) {
    auto* up = metrics_ ? metrics_->shard(i).up : nullptr;
    probes.add(transport_->info(static_cast<uint32_t>(i))
                   .then(
                       [up](ShardTransport::InfoResponse&&) {
                         if (up) up->Set(1);
                         return std::string();
                       },
                       [up](kj::Exception&& e) {
                         if (up) up->Set(0);
                         return std::string(e.getDescription().cStr());
                       }));
  }
  return kj::joinPromises(probes.releaseAsArray());
}

std::string RouterServer::unreachableExperts(const kj::Array<std::string>& errors) const {
  const ModelConfig& m = model_->model;
  // Empty when one of `holders` answers, else why none does.
  auto noneReachable = [&](std::span<const uint32_t> holders,
                           const std::string& what) -> std::string {
    for (uint32_t s : holders) {
      if (errors[s].empty()) return "";
    }
    std::string why = what + " has no reachable shard";
    for (uint32_t s : holders) why += "; " + errors[s];
    return why;
  };
  for (uint32_t layer : m.moeLayers) {
    for (uint32_t e = 0; e < m.numFfnExperts; ++e) {
      auto why =
          noneReachable(model_->placement->shardsFor(layer, e),
                        "expert " + std::to_string(e) + " of layer " + std::to_string(layer));
      if (!why.empty()) return why;
    }
    auto shared = model_->placement->sharedShardsFor(layer);
    if (!shared.empty()) {
      auto why = noneReachable(shared, "the shared expert of layer " + std::to_string(layer));
      if (!why.empty()) return why;
    }
  }
  return "";
}

kj::Promise<void> RouterServer::watchShards(AdminServer* admin, uint32_t periodMs) {
  return probeShards().then([this, admin, periodMs](kj::Array<std::string> errors) {
    if (admin != nullptr && admin->state() != ServiceState::kDraining) {
      auto why = unreachableExperts(errors);
      if (why.empty()) {
        admin->setState(ServiceState::kReady);
      } else {
        admin->setState(ServiceState::kNotReady, why);
      }
    }
    return timer_.afterDelay(periodMs * kj::MILLISECONDS).then([this, admin, periodMs]() {
      return watchShards(admin, periodMs);
    });
  });
}

kj::Promise<void> RouterServer::info(InfoContext context) {
  return probeShards().then([this, context](kj::Array<std::string> errors) mutable {
    const ModelConfig& m = model_->model;
    auto info = context.getResults().initInfo();
    fillModelInfo(info, m);
    info.setRole("router");
    info.setName("router");
    info.setBackend(std::string(model_->backend->name()));
    info.setMaxTokens(model_->cluster.router.maxTokens);
    auto shards = info.initShards(static_cast<unsigned>(transport_->numShards()));
    for (size_t i = 0; i < transport_->numShards(); ++i) {
      auto s = shards[static_cast<unsigned>(i)];
      s.setName(transport_->shard(static_cast<uint32_t>(i)).name);
      s.setAddress(transport_->shard(static_cast<uint32_t>(i)).listen);
      s.setReachable(errors[i].empty());
      s.setError(errors[i]);
    }
    info.setReady(unreachableExperts(errors).empty());
  });
}

}  // namespace moe::router
