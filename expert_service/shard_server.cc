// ShardServer implementation.
#include "expert_service/shard_server.h"

#include <chrono>
#include <cmath>

#include "common/log.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_status.h"
#include "common/service_runtime.h"
#include "common/tensor_wire.h"
#include "kernels/device_backend.h"

namespace moe::expert {
namespace {

[[noreturn]] void badRequest(const std::string& message) {
  throwStatus(StatusCode::kInvalidArgument, message);
}

// The CSR form of a request's segments, owned for the duration of the compute job.
struct SegmentTable {
  std::vector<kernels::ExpertFfnWeights> experts;
  std::vector<uint32_t> offsets{0};
  std::vector<uint32_t> rows;
  std::vector<float> weights;
  kernels::ExpertSegments view() const { return {experts, offsets, rows, weights}; }
};

}  // namespace

Result<std::unique_ptr<ShardModel>> ShardModel::load(const ClusterConfig& cluster,
                                                     const std::string& shardName) {
  const ShardConfig* shard = cluster.findShard(shardName);
  if (!shard) return makeError(cluster.sourcePath + ": no shard named '" + shardName + "'");
  auto ckpt = Checkpoint::open(cluster.modelPath);
  if (!ckpt) return makeError(ckpt.status());
  auto m = std::make_unique<ShardModel>();
  m->shard = *shard;
  m->model = ckpt.value()->config();
  m->maxRows = cluster.router.maxTokens;
  if (auto s = validatePlacement(cluster, m->model); !s) return makeError(s);
  auto backend = kernels::createBackendFor(shard->device, shard->threads);
  if (!backend)
    return makeError("shard " + shardName + " device " + shard->device.str() + ": " +
                     backend.error());
  m->backend = std::move(backend).value();
  auto store = ExpertStore::load(*m->backend, *ckpt.value(), *shard);
  if (!store) return makeError(store.status());
  m->store = std::move(store).value();
  return m;
}

ShardServer::ShardServer(std::unique_ptr<ShardModel> model, ExpertMetrics& metrics)
    : model_(std::move(model)), metrics_(metrics) {}

kj::Promise<void> ShardServer::run(RunContext context) {
  return kj::evalNow([&]() { return runChecked(context); })
      .then([this]() { metrics_.recordRequest("ok"); },
            [this](kj::Exception&& e) {
              metrics_.recordRequest(metricCodeLabel(statusFromException(e).code()));
              kj::throwFatalException(kj::mv(e));
            });
}

kj::Promise<void> ShardServer::runChecked(RunContext context) {
  const auto start = std::chrono::steady_clock::now();
  const uint32_t H = model_->model.hiddenSize;
  auto params = context.getParams();
  const uint32_t layer = params.getLayer();
  const std::string& name = model_->shard.name;
  if (!model_->store->servesLayer(layer)) {
    badRequest("layer " + std::to_string(layer) + " is not served by shard " + name);
  }
  auto view = decodeTensor(params.getRows(), "rows");
  if (!view) badRequest(view.error());
  if (auto s = expect2d(view.value(), H, "rows"); !s) badRequest(s.message());
  const uint32_t R = view.value().shape[0];
  if (R == 0) badRequest("rows: zero rows; send at least one");
  if (R > model_->maxRows) {
    badRequest("rows: " + std::to_string(R) + " rows exceeds the limit of " +
               std::to_string(model_->maxRows));
  }
  auto table = std::make_shared<SegmentTable>();
  std::vector<uint32_t> lastSeen(R, UINT32_MAX);  // segment that last named each row
  auto segments = params.getSegments();
  for (uint32_t s = 0; s < segments.size(); ++s) {
    auto seg = segments[s];
    const auto* w = seg.getShared() ? model_->store->findShared(layer)
                                    : model_->store->find(layer, seg.getExpert());
    if (!w) {
      badRequest("segment " + std::to_string(s) + ": " +
                 (seg.getShared() ? std::string("the shared expert")
                                  : "expert " + std::to_string(seg.getExpert())) +
                 " of layer " + std::to_string(layer) + " is not on shard " + name);
    }
    auto idx = seg.getRowIndex();
    auto wt = seg.getWeight();
    if (idx.size() != wt.size()) {
      badRequest("segment " + std::to_string(s) + ": " + std::to_string(idx.size()) +
                 " row indices but " + std::to_string(wt.size()) + " weights");
    }
    for (uint32_t j = 0; j < idx.size(); ++j) {
      const uint32_t r = idx[j];
      if (r >= R)
        badRequest("segment " + std::to_string(s) + ": row index " + std::to_string(r) +
                   " >= " + std::to_string(R) + " rows");
      if (lastSeen[r] == s)
        badRequest("segment " + std::to_string(s) + ": row " + std::to_string(r) + " listed twice");
      if (!std::isfinite(wt[j]))
        badRequest("segment " + std::to_string(s) + ": non-finite weight for row " +
                   std::to_string(r));
      lastSeen[r] = s;
      table->rows.push_back(r);
      table->weights.push_back(wt[j]);
    }
    table->experts.push_back(*w);
    table->offsets.push_back(static_cast<uint32_t>(table->rows.size()));
  }

  for (uint32_t s = 0; s < segments.size(); ++s) {
    if (segments[s].getShared()) continue;
    if (auto* c = metrics_.tokens(layer, segments[s].getExpert())) {
      c->Increment(segments[s].getRowIndex().size());
    }
  }
  metrics_.batchRows.Observe(R);

  auto x = std::make_shared<F32Rows>(view.value());
  const uint32_t shape[2] = {R, H};
  auto out = initF32(context.getResults().initOutput(), shape);
  kernels::Backend& backend = *model_->backend;
  // The job's outcome: an input problem (bad request), a compute failure, or the compute time.
  struct Outcome {
    std::string badInput;
    Status status;
    double seconds = 0;
  };
  auto job = executor_.run([&backend, table, x, out, R, H]() -> Outcome {
    auto xs = x->values();
    if (int64_t bad = firstNonFinite(xs); bad >= 0) {
      return {"rows: row " + std::to_string(bad / H) + " has a non-finite value at column " +
                  std::to_string(bad % H),
              Status::ok(), 0};
    }
    const auto t0 = std::chrono::steady_clock::now();
    Status s = backend.expertFfn(table->view(), xs, R, H, out);
    return {"", std::move(s),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
  });
  metrics_.queueDepth.Set(static_cast<double>(executor_.queued()));
  return job.then([this, start, R, &name](Outcome o) {
    metrics_.queueDepth.Set(static_cast<double>(executor_.queued()));
    if (!o.badInput.empty()) badRequest(o.badInput);
    if (!o.status) throwStatus(StatusCode::kInternal, "shard " + name + ": " + o.status.message());
    metrics_.computeDuration.Observe(o.seconds);
    logDebug("ran ", R, " rows in ",
             std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::steady_clock::now() - start)
                 .count(),
             " us");
  });
}

kj::Promise<void> ShardServer::info(InfoContext context) {
  auto info = context.getResults().initInfo();
  fillModelInfo(info, model_->model);
  info.setRole("expert");
  info.setName(model_->shard.name);
  info.setBackend(std::string(model_->backend->name()));
  info.setMaxTokens(model_->maxRows);
  info.setReady(true);
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
