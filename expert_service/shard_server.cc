// ShardServer implementation: validation on the RPC loop, a queue, and compute jobs on the
// executor one at a time, so that calls arriving while a job runs can join the next one.
#include "expert_service/shard_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/model_fingerprint.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_status.h"
#include "common/service_runtime.h"
#include "common/tensor_wire.h"
#include "expert_service/run_request.h"
#include "kernels/device_backend.h"

namespace moe::expert {
namespace {

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// A validated run, waiting for or inside a compute job. `x` may view the request's bytes and `out`
// is the reply's payload: both live only as long as the call's promise (the RPC system owns them).
struct ShardServer::Call {
  uint64_t id = 0;
  uint32_t layer = 0;
  uint32_t rows = 0;
  std::unique_ptr<ActivationRows> x;  // [rows, H]
  DType wire = DType::kF32;           // the rows' dtype: the reply is bf16 when they are, else f32
  SegmentTable segments;
  std::span<float> out;  // [rows, H]
  kj::Own<kj::PromiseFulfiller<kj::Promise<JobOutcome>>> done;
};

// A job of several calls: their merged input and the job's own output, which each call's rows are
// copied out of. The job owns all of it, so a call cancelled meanwhile leaves nothing dangling.
struct ShardServer::MergedJob {
  kj::Vector<kj::Own<Call>> calls;
  MergedRuns merged;
  std::vector<float> out;
};

Result<std::unique_ptr<ShardModel>> ShardModel::load(const ClusterConfig& cluster,
                                                     const std::string& shardName) {
  const ShardConfig* shard = cluster.findShard(shardName);
  if (!shard) return makeError(cluster.sourcePath + ": no shard named '" + shardName + "'");
  auto ckpt = Checkpoint::open(cluster.modelPath);
  if (!ckpt) return makeError(ckpt.status());
  auto m = std::make_unique<ShardModel>();
  // Once, before the weights: the router compares it with its own before sending any work here.
  auto fingerprint = modelFingerprint(cluster.modelPath);
  if (!fingerprint) {
    return makeError(fingerprint.code(), "cannot fingerprint the model in " + cluster.modelPath +
                                             ": " + fingerprint.error());
  }
  m->fingerprint = std::move(fingerprint).value();
  m->shard = *shard;
  m->model = ckpt.value()->config();
  m->limits.maxRows = cluster.limits.maxRowsPerShardCall;
  m->limits.maxSegments = cluster.limits.maxSegmentsPerShardCall;
  m->maxInflight = cluster.limits.maxInflightRequests;
  if (auto s = validatePlacement(cluster, m->model); !s) return makeError(s);
  if (auto s = validateLimits(cluster, m->model); !s) return makeError(s);
  auto backend = kernels::createBackendFor(shard->device, shard->threads);
  if (!backend)
    return makeError("shard " + shardName + " device " + shard->device.str() + ": " +
                     backend.error());
  m->backend = std::move(backend).value();
  const DType dtype = resolveModelDType(cluster.modelDtype, ckpt.value()->expertsDType());
  auto store = ExpertStore::load(*m->backend, *ckpt.value(), *shard, dtype);
  if (!store) return makeError(store.status());
  m->store = std::move(store).value();
  m->dtype = std::string(dtypeName(dtype));
  logInfo("shard ", shardName, ": experts resident in ", m->dtype, " on ", m->backend->name(), " (",
          m->backend->kernelPath(dtype), "), ", m->store->residentBytes(), " bytes");
  return m;
}

ShardServer::ShardServer(std::unique_ptr<ShardModel> model, ExpertMetrics& metrics,
                         kj::Timer& timer)
    : model_(std::move(model)), metrics_(metrics), timer_(timer), queue_(model_->shard.batching) {}

ShardServer::~ShardServer() {
  stopping_ = true;  // tearing down tasks_ finishes jobs: no new ones then
}

kj::Promise<void> ShardServer::run(RunContext context) {
  if (draining_) {
    metrics_.recordRequest(metricCodeLabel(StatusCode::kUnavailable));
    return toRpcException(
        Status::error(StatusCode::kUnavailable, "shard " + model_->shard.name + " is draining"));
  }
  if (inFlight_ >= model_->maxInflight) {
    metrics_.recordRequest(metricCodeLabel(StatusCode::kResourceExhausted));
    return toRpcException(Status::error(StatusCode::kResourceExhausted,
                                        "shard " + model_->shard.name + ": " +
                                            std::to_string(inFlight_) +
                                            " calls in flight, limits.max_inflight_requests = " +
                                            std::to_string(model_->maxInflight) + "; retry later"));
  }
  ++inFlight_;
  return kj::evalNow([&]() { return runChecked(context); })
      .then(
          [this]() {
            metrics_.recordRequest("ok");
            if (draining_) ++finishedWhileDraining_;
          },
          [this](kj::Exception&& e) {
            metrics_.recordRequest(metricCodeLabel(statusFromException(e).code()));
            if (draining_) ++finishedWhileDraining_;
            kj::throwFatalException(kj::mv(e));
          })
      // However the call ends (reply, error, or the caller cancelling it), it is no longer ours.
      .attach(kj::defer([this]() { callEnded(); }));
}

void ShardServer::callEnded() {
  if (--inFlight_ > 0) return;
  for (auto& waiter : idleWaiters_) waiter->fulfill();
  idleWaiters_.clear();
}

void ShardServer::startDraining() {
  if (draining_) return;
  draining_ = true;
  logInfo("shard ", model_->shard.name, " draining: new calls are refused; ", inFlight_,
          " accepted calls to finish");
}

kj::Promise<void> ShardServer::whenIdle() {
  if (inFlight_ == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  idleWaiters_.add(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void ShardServer::logDrainOutcome() const {
  if (inFlight_ == 0) {
    logInfo("shard ", model_->shard.name, " drained: ", finishedWhileDraining_,
            " accepted calls finished");
  } else {
    logWarn("shard ", model_->shard.name, " drain cut short: ", finishedWhileDraining_,
            " accepted calls finished, ", inFlight_, " cut by the drain deadline");
  }
}

kj::Promise<void> ShardServer::runChecked(RunContext context) {
  const auto start = std::chrono::steady_clock::now();
  // A caller that gives up (deadline, failover) takes its call out of the queue: nobody waits for
  // that work any more (enqueue).
  context.allowCancellation();
  kj::Own<Call> call = validate(context);
  const uint32_t R = call->rows;
  const uint32_t shape[2] = {R, model_->model.hiddenSize};
  // A bf16 caller (router.wire_dtype: bf16) gets bf16 results: computed into fp32 here, rounded
  // into the reply once the job is done. Otherwise straight into the f32 reply.
  std::shared_ptr<std::vector<float>> staged;
  if (call->wire == DType::kBF16) {
    staged = std::make_shared<std::vector<float>>(size_t{R} * shape[1]);
    call->out = *staged;
  } else {
    call->out = initF32(context.getResults().initOutput(), shape);
  }
  return enqueue(kj::mv(call)).then([this, start, R, staged, context](JobOutcome o) mutable {
    if (!o.status)
      throwStatus(StatusCode::kInternal, "shard " + model_->shard.name + ": " + o.status.message());
    if (staged) {
      const uint32_t shape[2] = {R, model_->model.hiddenSize};
      encodeBf16(context.getResults().initOutput(), shape, *staged);
    }
    logDebug("ran ", R, " rows in ",
             std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::steady_clock::now() - start)
                 .count(),
             " us");
  });
}

// Every check of a call happens here, before it is queued, so a bad call fails alone and never
// joins (or fails) a merged job (run_request.h has the checks).
kj::Own<ShardServer::Call> ShardServer::validate(RunContext& context) {
  const ExpertStore& store = *model_->store;
  HeldExperts held;
  held.shardName = model_->shard.name;
  held.hiddenSize = model_->model.hiddenSize;
  held.servesLayer = [&store](uint32_t layer) { return store.servesLayer(layer); };
  held.find = [&store](uint32_t layer, bool shared, uint32_t expert) {
    return shared ? store.findShared(layer) : store.find(layer, expert);
  };
  auto run = validateRun(context.getParams(), held, model_->limits);
  if (!run) throwStatus(run.status());
  auto call = kj::heap<Call>();
  call->layer = run.value().layer;
  call->rows = run.value().rows;
  call->x = std::move(run.value().x);
  call->segments = std::move(run.value().segments);
  call->wire = run.value().wire;
  const SegmentTable& t = call->segments;
  for (size_t s = 0; s < t.keys.size(); ++s) {
    if (t.keys[s] == kSharedExpertKey) continue;
    if (auto* c = metrics_.tokens(call->layer, t.keys[s]))
      c->Increment(t.offsets[s + 1] - t.offsets[s]);
  }
  metrics_.batchRows.Observe(call->rows);
  return call;
}

kj::Promise<ShardServer::JobOutcome> ShardServer::enqueue(kj::Own<Call> call) {
  auto paf = kj::newPromiseAndFulfiller<kj::Promise<JobOutcome>>();
  call->done = kj::mv(paf.fulfiller);
  const uint64_t id = call->id = nextId_++;
  queue_.push(id, call->layer, call->rows, nowUs());
  waiting_.emplace(id, kj::mv(call));
  metrics_.queueDepth.Set(static_cast<double>(queue_.size()));
  pump();
  // Runs when the caller's promise goes away: after the reply (a no-op then), or when the caller
  // cancels, so that a call still waiting leaves the queue and is never computed.
  return kj::mv(paf.promise).attach(kj::defer([this, id]() { cancelWaiting(id); }));
}

void ShardServer::cancelWaiting(uint64_t id) {
  if (!queue_.remove(id)) return;  // not waiting: replied to, or inside a running job
  waiting_.erase(id);
  metrics_.queueDepth.Set(static_cast<double>(queue_.size()));
}

// Starts the next compute job when none runs, or arms the coalescing window's timer.
void ShardServer::pump() {
  if (stopping_) return;
  RunQueue::Next next = queue_.take(nowUs());
  if (next.ids.empty()) {
    if (next.waitUntilUs && !timerArmed_) {
      timerArmed_ = true;
      const kj::TimePoint at = kj::origin<kj::TimePoint>() + *next.waitUntilUs * kj::MICROSECONDS;
      tasks_.add(timer_.atTime(at).then([this]() {
        timerArmed_ = false;
        pump();
      }));
    }
    return;
  }
  kj::Vector<kj::Own<Call>> calls(next.ids.size());
  for (uint64_t id : next.ids) {
    auto it = waiting_.find(id);
    calls.add(kj::mv(it->second));
    waiting_.erase(it);
  }
  metrics_.queueDepth.Set(static_cast<double>(queue_.size()));
  metrics_.coalescedCalls.Observe(static_cast<double>(calls.size()));
  if (calls.size() == 1) {
    startAlone(kj::mv(calls[0]));
  } else {
    startMerged(kj::mv(calls));
  }
}

// One call: computed straight into its reply. The job's promise becomes the call's, so a caller
// that cancels while it runs waits for it (kj::Executor) before the request and reply are freed.
void ShardServer::startAlone(kj::Own<Call> call) {
  kernels::Backend& backend = *model_->backend;
  const uint32_t H = model_->model.hiddenSize;
  const bool onInput = model_->model.weightOnInput;
  auto done = kj::mv(call->done);
  auto job = executor_.run([&backend, H, onInput, c = kj::mv(call)]() -> JobOutcome {
    const auto t0 = std::chrono::steady_clock::now();
    Status s = backend.expertFfn(c->segments.view(onInput), c->x->view(), c->rows, H, c->out);
    return {std::move(s), secondsSince(t0)};
  });
  done->fulfill(job.then([this](JobOutcome o) {
                     if (o.status) metrics_.computeDuration.Observe(o.seconds);
                     return o;
                   })
                    .attach(kj::defer([this]() { jobFinished(); })));
}

// Several calls: one expertFfn over their merged rows, so each expert runs one GEMM. The rows are
// copied now, on the loop, while every request is still alive.
void ShardServer::startMerged(kj::Vector<kj::Own<Call>> calls) {
  kernels::Backend& backend = *model_->backend;
  const uint32_t H = model_->model.hiddenSize;
  const bool onInput = model_->model.weightOnInput;
  std::vector<MergePart> parts;
  parts.reserve(calls.size());
  for (auto& c : calls) parts.push_back({c->x->view(), &c->segments});
  auto job = kj::heap<MergedJob>();
  job->merged = mergeRuns(parts, H);
  job->out.resize(size_t{job->merged.totalRows()} * H);
  job->calls = kj::mv(calls);
  MergedJob* j = job.get();  // the continuation below owns it and outlives the compute
  auto compute = executor_.run([&backend, H, onInput, j]() -> JobOutcome {
    const auto t0 = std::chrono::steady_clock::now();
    Status s = backend.expertFfn(j->merged.segments.view(onInput), j->merged.rows(),
                                 j->merged.totalRows(), H, j->out);
    return {std::move(s), secondsSince(t0)};
  });
  tasks_.add(
      compute.then([this, job = kj::mv(job)](JobOutcome o) mutable { finishMerged(*job, o); })
          .attach(kj::defer([this]() { jobFinished(); })));
}

void ShardServer::finishMerged(MergedJob& job, const JobOutcome& outcome) {
  if (outcome.status) metrics_.computeDuration.Observe(outcome.seconds);
  const uint32_t H = model_->model.hiddenSize;
  for (size_t i = 0; i < job.calls.size(); ++i) {
    Call& c = *job.calls[i];
    if (!c.done->isWaiting()) continue;  // cancelled during the compute: its reply is gone
    if (outcome.status) {
      auto rows = mergedRows(job.merged, i, job.out, H);
      std::copy(rows.begin(), rows.end(), c.out.begin());
    }
    c.done->fulfill(kj::Promise<JobOutcome>(JobOutcome(outcome)));
  }
}

void ShardServer::jobFinished() {
  queue_.finished();
  if (stopping_) return;
  // On a later turn: this runs while the job's promise is being torn down.
  tasks_.add(kj::evalLater([this]() { pump(); }));
}

uint64_t ShardServer::nowUs() const {
  return static_cast<uint64_t>((timer_.now() - kj::origin<kj::TimePoint>()) / kj::MICROSECONDS);
}

void ShardServer::taskFailed(kj::Exception&& exception) {
  logError("shard ", model_->shard.name,
           ": compute task failed: ", exception.getDescription().cStr());
}

kj::Promise<void> ShardServer::info(InfoContext context) {
  auto info = context.getResults().initInfo();
  fillModelInfo(info, model_->model);
  info.setRole("expert");
  info.setName(model_->shard.name);
  info.setBackend(std::string(model_->backend->name()));
  info.setMaxTokens(model_->limits.maxRows);
  info.setReady(!draining_);
  info.setDraining(draining_);
  info.setFingerprint(model_->fingerprint);
  info.setDtype(model_->dtype);
  const auto& byLayer = model_->store->experts();
  auto list = info.initExperts(static_cast<unsigned>(byLayer.size()));
  unsigned i = 0;
  for (const auto& [layer, experts] : byLayer) {
    list[i].setLayer(layer);
    auto ids = list[i].initExperts(static_cast<unsigned>(experts.size()));
    for (unsigned j = 0; j < experts.size(); ++j) ids.set(j, experts[j]);
    ++i;
  }
  return kj::READY_NOW;
}

}  // namespace moe::expert
