// RouterServer implementation. The event loop only decodes, fans out and combines; gating runs on
// the compute executor.
#include "router_service/router_server.h"

#include <chrono>
#include <cstring>

#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "common/service_runtime.h"
#include "common/tensor_wire.h"
#include "kernels/device_backend.h"
#include "router_service/capacity.h"
#include "router_service/gating.h"

namespace moe::router {
namespace {

using Clock = std::chrono::steady_clock;
uint64_t microsSince(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

std::string listIds(const std::vector<uint32_t>& ids) {
  std::string s;
  for (auto v : ids) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}

[[noreturn]] void badRequest(const std::string& message) {
  throwRpcError(kj::Exception::Type::FAILED, message);
}

// The result code a failed call is counted under. Our own request checks throw FAILED with a
// message about the request; shard failures are prefixed with the shard's label.
std::string_view errorCode(const kj::Exception& e) {
  switch (e.getType()) {
    case kj::Exception::Type::DISCONNECTED:
      return "unavailable";
    case kj::Exception::Type::OVERLOADED:
      return "deadline_exceeded";
    case kj::Exception::Type::FAILED:
      return e.getDescription().startsWith("shard ") ? "internal" : "invalid_argument";
    default:
      return "internal";
  }
}

void fillRouting(proto::Routing::Builder out, const RoutingDecision& d) {
  const auto n = static_cast<unsigned>(d.ids.size());
  out.setK(d.k);
  auto ids = out.initExperts(n);
  auto weights = out.initWeights(n);
  auto dropped = out.initDropped(n);
  for (unsigned i = 0; i < n; ++i) {
    ids.set(i, d.ids[i]);
    weights.set(i, d.weights[i]);
    dropped.set(i, d.isDropped(i));
  }
}

}  // namespace

Result<std::unique_ptr<RouterModel>> RouterModel::load(const ClusterConfig& cluster) {
  auto ckpt = Checkpoint::open(cluster.modelPath);
  if (!ckpt) return makeError(ckpt.error());
  auto m = std::make_unique<RouterModel>();
  m->cluster = cluster;
  m->model = ckpt.value()->config();
  if (auto s = validatePlacement(cluster, m->model); !s) return makeError(s.message());
  const uint64_t batchBytes =
      uint64_t{cluster.router.maxTokens} * m->model.hiddenSize * sizeof(float);
  if (batchBytes > (uint64_t{1} << 29)) {
    return makeError(cluster.sourcePath + ": router.max_tokens " +
                     std::to_string(cluster.router.maxTokens) + " × hidden " +
                     std::to_string(m->model.hiddenSize) +
                     " × 4 bytes exceeds the 512 MiB per-message limit; lower router.max_tokens");
  }
  auto backend = kernels::createBackendFor(cluster.router.device, cluster.router.threads);
  if (!backend)
    return makeError("router.device " + cluster.router.device.str() + ": " + backend.error());
  m->backend = std::move(backend).value();
  for (uint32_t layer : m->model.moeLayers) {
    const bool sharedOnShard = std::any_of(
        cluster.shards.begin(), cluster.shards.end(),
        [layer](const ShardConfig& s) { return s.sharedExpert && s.servesLayer(layer); });
    auto gate = GateNetwork::load(*m->backend, *ckpt.value(), layer, cluster.routing);
    if (!gate) return makeError(gate.error());
    m->gates.emplace(layer, std::move(gate).value());
    if (m->model.hasScoreCorrectionBias) {
      auto b = ckpt.value()->scoreCorrectionBias(layer);
      if (!b) return makeError(b.error());
      m->bias.emplace(layer, std::move(b).value());
    }
    if (m->model.sharedIntermediateSize > 0) {
      auto shared = SharedExpert::load(*m->backend, *ckpt.value(), layer, !sharedOnShard);
      if (!shared) return makeError(shared.error());
      m->shared.emplace(layer, std::move(shared).value());
    }
    if (m->model.numFfnExperts < m->model.numExperts) {
      auto zero = ZeroComputeExperts::load(*ckpt.value(), layer);
      if (!zero) return makeError(zero.error());
      m->zeroCompute.emplace(layer, std::move(zero).value());
    }
  }
  return m;
}

RouterServer::RouterServer(std::unique_ptr<RouterModel> model, kj::AsyncIoProvider& io,
                           kj::Timer& timer, RouterMetrics& metrics)
    : model_(std::move(model)),
      timer_(timer),
      metrics_(metrics),
      placement_(Placement::fromConfig(model_->cluster, model_->model)) {
  for (const auto& s : model_->cluster.shards) {
    shards_.push_back(std::make_unique<ShardClient>(io, timer, s, model_->cluster.timeouts));
  }
}

kj::Promise<void> RouterServer::forward(ForwardContext context) {
  const auto start = Clock::now();
  const uint32_t ms = model_->cluster.timeouts.requestMs;
  metrics_.inFlight.Increment();
  auto done = [this, start](std::string_view code) {
    metrics_.inFlight.Decrement();
    metrics_.recordRequest(code, static_cast<double>(microsSince(start)) * 1e-6);
  };
  return kj::evalNow([&]() {
           return withDeadline(timer_, ms, forwardUnbounded(context),
                               "forward did not complete within timeouts.request_ms = " +
                                   std::to_string(ms) + " ms");
         })
      .then([done]() { done("ok"); },
            [done](kj::Exception&& e) {
              done(errorCode(e));
              kj::throwFatalException(kj::mv(e));
            });
}

kj::Promise<ShardClient::RunResponse> RouterServer::runOnShard(
    uint32_t shard, uint32_t rows, kj::Function<void(ShardClient::RunParams::Builder)> fill) {
  auto& m = metrics_.shard(shard);
  m.inFlight->Increment();
  m.rowsSent->Increment(rows);
  const auto start = Clock::now();
  return shards_[shard]
      ->run(kj::mv(fill))
      .then(
          [&m, start](ShardClient::RunResponse&& r) {
            m.inFlight->Decrement();
            m.up->Set(1);
            m.duration->Observe(static_cast<double>(microsSince(start)) * 1e-6);
            return kj::mv(r);
          },
          [&m, start](kj::Exception&& e) -> ShardClient::RunResponse {
            m.inFlight->Decrement();
            m.duration->Observe(static_cast<double>(microsSince(start)) * 1e-6);
            const auto code = errorCode(e);
            m.recordError(code == "invalid_argument" ? "internal" : code);
            if (e.getType() == kj::Exception::Type::DISCONNECTED) m.up->Set(0);
            kj::throwFatalException(kj::mv(e));
          });
}

kj::Promise<void> RouterServer::forwardUnbounded(ForwardContext context) {
  const auto start = Clock::now();
  const ModelConfig& m = model_->model;
  const uint32_t H = m.hiddenSize, E = m.numExperts;
  auto params = context.getParams();
  const uint32_t layer = params.getLayer();
  auto gate = model_->gates.find(layer);
  if (gate == model_->gates.end()) {
    badRequest("layer " + std::to_string(layer) +
               " is not an MoE layer of this model (MoE layers: " + listIds(m.moeLayers) + ")");
  }
  if (!params.hasHidden()) badRequest("hidden: missing");
  auto view = decodeTensor(params.getHidden(), "hidden");
  if (!view) badRequest(view.error());
  if (auto s = expect2d(view.value(), H, "hidden"); !s) badRequest(s.message());
  const uint32_t T = view.value().shape[0];
  if (T == 0)
    badRequest("hidden: zero tokens (shape [0, " + std::to_string(H) + "]); send at least one");
  if (T > model_->cluster.router.maxTokens) {
    badRequest("hidden: " + std::to_string(T) + " tokens exceeds router.max_tokens = " +
               std::to_string(model_->cluster.router.maxTokens) + "; split the batch");
  }
  // x points into the request message (f32) or owns a widened copy; the context keeps the
  // request alive until this call completes.
  auto x = std::make_shared<F32Rows>(view.value());
  std::shared_ptr<F32Rows> prev;
  if (params.hasPrevLogits()) {
    if (!gate->second->hasResidual()) {
      badRequest("prevLogits: model_type '" + m.modelType +
                 "' has no gating residual; send prevLogits only to MoE++ models");
    }
    auto pv = decodeTensor(params.getPrevLogits(), "prevLogits");
    if (!pv) badRequest(pv.error());
    if (auto s = expect2d(pv.value(), E, "prevLogits"); !s) badRequest(s.message());
    if (pv.value().shape[0] != T) {
      badRequest("prevLogits: " + std::to_string(pv.value().shape[0]) + " rows for a batch of " +
                 std::to_string(T) + " tokens");
    }
    prev = std::make_shared<F32Rows>(pv.value());
  }
  const auto options = params.getOptions();
  const bool returnRouting = options.getReturnRouting();
  std::optional<uint64_t> noiseSeed;
  if (model_->cluster.routing.noisyTopk) {
    noiseSeed =
        options.getNoiseSeed() != 0 ? options.getNoiseSeed() : model_->cluster.routing.noiseSeed;
  } else if (options.getNoiseSeed() != 0) {
    badRequest("options.noiseSeed: noisy top-k is off in this cluster (routing.noisy_topk)");
  }

  // Everything computed before the fan-out: the routing, the plan, and what the router adds
  // itself (shared expert when it is not on a shard, MoE++ zero-computation experts).
  struct Gated {
    GateResult gate;
    DispatchPlan plan;
    std::vector<float> local;  // [T, H] the router's own contribution, or empty
    uint32_t dropped = 0, zeroCompute = 0, sharedRows = 0;
  };
  auto sharedIt = model_->shared.find(layer);
  const SharedExpert* shared = sharedIt == model_->shared.end() ? nullptr : sharedIt->second.get();
  auto zeroIt = model_->zeroCompute.find(layer);
  const ZeroComputeExperts* zero =
      zeroIt == model_->zeroCompute.end() ? nullptr : zeroIt->second.get();
  auto gating = executor_.run([this, x, prev, T, H, layer, shared, zero, noiseSeed,
                               gateNetwork = gate->second.get()]() -> Result<Gated> {
    const ModelConfig& m = model_->model;
    auto xs = x->values();
    if (int64_t bad = firstNonFinite(xs); bad >= 0) {
      return makeError("hidden: token " + std::to_string(bad / H) + " has a non-finite value (" +
                       std::to_string(xs[bad]) + ") at column " + std::to_string(bad % H));
    }
    GateInputs inputs;
    inputs.layer = layer;
    inputs.noiseSeed = noiseSeed;
    if (prev) {
      inputs.prevLogits = prev->values();
      if (int64_t bad = firstNonFinite(inputs.prevLogits); bad >= 0) {
        return makeError("prevLogits: token " + std::to_string(bad / m.numExperts) +
                         " has a non-finite value at column " + std::to_string(bad % m.numExperts));
      }
    }
    auto biasIt = model_->bias.find(layer);
    std::span<const float> bias;
    if (biasIt != model_->bias.end()) bias = biasIt->second;
    auto routed = routeTokens(*model_->backend, *gateNetwork, xs, T, m, bias, inputs);
    if (!routed) return makeError(routed.error());
    Gated g;
    g.gate = std::move(routed).value();
    RoutingDecision& d = g.gate.decision;
    g.dropped = applyCapacity(d, model_->cluster.routing, m.numExperts, m.numFfnExperts);

    DispatchExtras extras;
    extras.routedExperts = m.numExperts;
    std::vector<float> sharedWeights;
    auto sharedShards = placement_.sharedShardsFor(layer);
    if (shared != nullptr) {
      g.sharedRows = T;
      if (!sharedShards.empty()) {
        auto w = shared->weights(*model_->backend, xs, T);
        if (!w) return makeError(w.error());
        sharedWeights = std::move(w).value();
        extras.sharedShard = sharedShards.front();
        extras.sharedWeights = sharedWeights;
      } else {
        g.local.resize(size_t{T} * H);
        if (auto s = shared->compute(*model_->backend, xs, T, g.local); !s)
          return makeError(s.message());
      }
    }
    auto plan = planDispatch(d, placement_, layer, extras);
    if (!plan) return makeError(plan.error());
    g.plan = std::move(plan).value();
    if (zero != nullptr) {
      if (g.local.empty()) g.local.assign(size_t{T} * H, 0.0f);
      g.zeroCompute = zero->accumulate(d, xs, m.expertInputScale(), g.local);
    }
    return g;
  });
  metrics_.queueDepth.Set(static_cast<double>(executor_.queued()));

  const float scale = m.expertInputScale();
  return gating.then(
      [this, context, x, scale, T, H, layer, start, returnRouting](Result<Gated> gated) mutable {
        metrics_.queueDepth.Set(static_cast<double>(executor_.queued()));
        if (!gated) badRequest(gated.error());
        const uint64_t gateMicros = microsSince(start);
        metrics_.gateDuration.Observe(static_cast<double>(gateMicros) * 1e-6);
        metrics_.recordRouting(layer, gated.value().gate.decision);
        metrics_.recordDropsAndZeroCompute(layer, gated.value().dropped, gated.value().zeroCompute);
        auto g = std::make_shared<const Gated>(std::move(gated).value());
        kj::Vector<kj::Promise<ShardClient::RunResponse>> calls;
        for (size_t i = 0; i < g->plan.work.size(); ++i) {
          const auto rows = static_cast<uint32_t>(g->plan.work[i].tokens.size());
          calls.add(runOnShard(
              g->plan.work[i].shard, rows,
              [g, x, scale, i, H, layer](ShardClient::RunParams::Builder req) {
                const ShardWork& w = g->plan.work[i];
                req.setLayer(layer);
                const uint32_t shape[2] = {static_cast<uint32_t>(w.tokens.size()), H};
                auto rows = initF32(req.initRows(), shape);
                auto xs = x->values();
                for (size_t r = 0; r < w.tokens.size(); ++r) {
                  const float* src = xs.data() + size_t{w.tokens[r]} * H;
                  float* dst = rows.data() + r * H;
                  if (scale == 1.0f) {
                    std::memcpy(dst, src, H * sizeof(float));
                  } else {  // MoE++: experts see k·x (it has no shared expert to keep unscaled)
                    for (size_t h = 0; h < H; ++h) dst[h] = scale * src[h];
                  }
                }
                auto segs = req.initSegments(static_cast<unsigned>(w.segments.size()));
                for (size_t s = 0; s < w.segments.size(); ++s) {
                  const auto& seg = w.segments[s];
                  auto out = segs[static_cast<unsigned>(s)];
                  out.setExpert(seg.expert);
                  out.setShared(seg.shared);
                  auto idx = out.initRowIndex(static_cast<unsigned>(seg.rowIndex.size()));
                  auto wt = out.initWeight(static_cast<unsigned>(seg.weight.size()));
                  for (size_t j = 0; j < seg.rowIndex.size(); ++j) {
                    idx.set(static_cast<unsigned>(j), seg.rowIndex[j]);
                    wt.set(static_cast<unsigned>(j), seg.weight[j]);
                  }
                }
              }));
        }
        const auto fanOut = Clock::now();
        return kj::joinPromises(calls.releaseAsArray())
            .then([this, context, g, T, H, start, fanOut, gateMicros,
                   returnRouting](kj::Array<ShardClient::RunResponse> replies) mutable {
              auto results = context.getResults();
              const uint32_t shape[2] = {T, H};
              auto out = initF32(results.initOutput(), shape);
              if (g->local.empty()) {
                std::fill(out.begin(), out.end(), 0.0f);
              } else {
                std::copy(g->local.begin(), g->local.end(), out.begin());
              }
              for (size_t i = 0; i < replies.size(); ++i) {
                const ShardWork& w = g->plan.work[i];
                const auto& label = shards_[w.shard]->config().name;
                auto partial = decodeTensor(replies[i].getOutput(), "shard " + label + " output");
                if (!partial) throwRpcError(kj::Exception::Type::FAILED, partial.error());
                if (auto s = expect2d(partial.value(), H, "shard " + label + " output");
                    !s || partial.value().shape[0] != w.tokens.size()) {
                  throwRpcError(kj::Exception::Type::FAILED,
                                "shard " + label + " returned shape " +
                                    shapeString(partial.value().shape) + " for " +
                                    std::to_string(w.tokens.size()) + " rows");
                }
                F32Rows rows(partial.value());
                addShardPartial(w, rows.values(), H, out);
              }
              const RoutingDecision& d = g->gate.decision;
              if (returnRouting) fillRouting(results.initRouting(), d);
              if (returnRouting || model_->model.gatingResidual) {
                const uint32_t logitShape[2] = {T, model_->model.numExperts};
                auto logits = initF32(results.initGateLogits(), logitShape);
                std::copy(g->gate.logits.begin(), g->gate.logits.end(), logits.begin());
              }
              auto stats = results.initStats();
              stats.setTokens(T);
              stats.setShardCalls(static_cast<uint32_t>(g->plan.work.size()));
              stats.setRowsSent(g->plan.rowsSent());
              stats.setGateMicros(gateMicros);
              stats.setDispatchMicros(microsSince(fanOut));
              stats.setTotalMicros(microsSince(start));
              stats.setDroppedAssignments(g->dropped);
              stats.setRouterRows(g->zeroCompute);
              stats.setSharedRows(g->sharedRows);
            });
      });
}

kj::Promise<kj::Array<std::string>> RouterServer::probeShards() {
  kj::Vector<kj::Promise<std::string>> probes;
  for (size_t i = 0; i < shards_.size(); ++i) {
    auto* up = metrics_.shard(i).up;
    probes.add(shards_[i]->info().then(
        [up](ShardClient::InfoResponse&&) {
          up->Set(1);
          return std::string();
        },
        [up](kj::Exception&& e) {
          up->Set(0);
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
          noneReachable(placement_.shardsFor(layer, e),
                        "expert " + std::to_string(e) + " of layer " + std::to_string(layer));
      if (!why.empty()) return why;
    }
    auto shared = placement_.sharedShardsFor(layer);
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
    auto shards = info.initShards(static_cast<unsigned>(shards_.size()));
    for (size_t i = 0; i < shards_.size(); ++i) {
      auto s = shards[static_cast<unsigned>(i)];
      s.setName(shards_[i]->config().name);
      s.setAddress(shards_[i]->config().listen);
      s.setReachable(errors[i].empty());
      s.setError(errors[i]);
    }
    info.setReady(unreachableExperts(errors).empty());
  });
}

}  // namespace moe::router
