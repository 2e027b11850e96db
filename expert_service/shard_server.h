// ShardServer: the ExpertShard RPC. Validates a run request (layer, rows, segments, finite values),
// queues it, and computes the weighted grouped FFN on the compute executor. Calls for the same
// layer that wait while the executor is busy are coalesced into one compute job
// (ShardConfig::batching; the merge rules are in run_coalescer.h); a call that runs alone is
// computed straight into its reply. Draining (SIGTERM) refuses new calls while the accepted ones
// finish, so the router fails over to a replica and no accepted call is lost.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>
#include <kj/vector.h>

#include <map>
#include <memory>
#include <string>

#include "common/compute_executor.h"
#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/expert_store.h"
#include "expert_service/run_coalescer.h"
#include "expert_service/run_request.h"
#include "kernels/backend.h"

namespace moe::expert {

struct ShardModel {
  ShardConfig shard;
  ModelConfig model;
  RunLimits limits;          // limits.max_rows_per_shard_call, limits.max_segments_per_shard_call
  uint32_t maxInflight = 0;  // limits.max_inflight_requests
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<ExpertStore> store;
  std::string fingerprint;    // modelFingerprint(model path), computed once at load
  std::string dtype = "f32";  // the experts' resident/compute dtype (model.dtype resolved)

  static Result<std::unique_ptr<ShardModel>> load(const ClusterConfig& cluster,
                                                  const std::string& shardName);
};

class ShardServer final : public proto::ExpertShard::Server, private kj::TaskSet::ErrorHandler {
 public:
  // `timer` runs the coalescing window (ShardConfig::batching.windowUs).
  ShardServer(std::unique_ptr<ShardModel> model, ExpertMetrics& metrics, kj::Timer& timer);
  ~ShardServer();
  kj::Promise<void> run(RunContext context) override;
  kj::Promise<void> info(InfoContext context) override;

  // From now on every new run fails at once with Unavailable ("shard <name> is draining") and info
  // reports draining, not ready; calls already accepted (queued or computing) finish normally.
  void startDraining();
  // Resolves when no accepted call remains (at once when none does).
  kj::Promise<void> whenIdle();
  // Logs what the drain did so far: calls finished since it started, and those still in flight,
  // which are cut when the process stops now (the drain deadline).
  void logDrainOutcome() const;

 private:
  struct Call;
  struct MergedJob;
  // What a compute job reports to each of its calls.
  struct JobOutcome {
    Status status;
    double seconds = 0;
  };

  kj::Promise<void> runChecked(RunContext context);
  void callEnded();
  kj::Own<Call> validate(RunContext& context);
  kj::Promise<JobOutcome> enqueue(kj::Own<Call> call);
  void cancelWaiting(uint64_t id);
  void pump();
  void startAlone(kj::Own<Call> call);
  void startMerged(kj::Vector<kj::Own<Call>> calls);
  void finishMerged(MergedJob& job, const JobOutcome& outcome);
  void jobFinished();
  uint64_t nowUs() const;
  void taskFailed(kj::Exception&& exception) override;

  std::unique_ptr<ShardModel> model_;
  ExpertMetrics& metrics_;
  kj::Timer& timer_;
  RunQueue queue_;
  std::map<uint64_t, kj::Own<Call>> waiting_;  // the queue's calls, by id
  uint64_t nextId_ = 0;
  bool timerArmed_ = false;
  bool stopping_ = false;
  // Draining: accepted calls whose promise is still alive (queued, computing, or replying), the
  // calls that completed since the drain began, and who waits for the count to reach zero.
  bool draining_ = false;
  uint64_t inFlight_ = 0;
  uint64_t finishedWhileDraining_ = 0;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> idleWaiters_;
  ComputeExecutor executor_{"expert-compute"};
  kj::TaskSet tasks_{*this};  // merged jobs and window timers; destroyed before the executor
};

}  // namespace moe::expert
