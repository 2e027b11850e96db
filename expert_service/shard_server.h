// ShardServer: the ExpertShard RPC. Validates a run request (layer, rows, segments), computes the
// weighted grouped FFN on the compute executor straight into the reply, and answers.
#pragma once

#include <memory>

#include "common/compute_executor.h"
#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/expert_store.h"
#include "kernels/backend.h"

namespace moe::expert {

struct ShardModel {
  ShardConfig shard;
  ModelConfig model;
  uint32_t maxRows;  // the router's max_tokens: a shard never needs more rows than a batch has
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<ExpertStore> store;

  static Result<std::unique_ptr<ShardModel>> load(const ClusterConfig& cluster,
                                                  const std::string& shardName);
};

class ShardServer final : public proto::ExpertShard::Server {
 public:
  ShardServer(std::unique_ptr<ShardModel> model, ExpertMetrics& metrics);
  kj::Promise<void> run(RunContext context) override;
  kj::Promise<void> info(InfoContext context) override;

 private:
  kj::Promise<void> runChecked(RunContext context);

  std::unique_ptr<ShardModel> model_;
  ExpertMetrics& metrics_;
  ComputeExecutor executor_{"expert-compute"};
};

}  // namespace moe::expert
