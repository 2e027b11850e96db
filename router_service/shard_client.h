// ShardClient: the router's handle on one expert shard. Connects lazily, reconnects after a
// disconnect, bounds every call by a deadline, and names the shard in every error it raises.
#pragma once

#include <kj/async-io.h>
#include <kj/function.h>

#include <string>

#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"

namespace moe::router {

class ShardClient final : private kj::TaskSet::ErrorHandler {
 public:
  ShardClient(kj::AsyncIoProvider& io, kj::Timer& timer, const ShardConfig& shard,
              const TimeoutConfig& timeouts);

  const ShardConfig& config() const { return shard_; }

  using RunParams = proto::ExpertShard::RunParams;
  using RunResponse = capnp::Response<proto::ExpertShard::RunResults>;
  using InfoResponse = capnp::Response<proto::ExpertShard::InfoResults>;

  // One ExpertShard.run call; `fill` writes the request. Errors: DISCONNECTED when the shard
  // cannot be reached, OVERLOADED past the shard-call deadline, else the shard's own error.
  kj::Promise<RunResponse> run(kj::Function<void(RunParams::Builder)> fill);
  kj::Promise<InfoResponse> info();

 private:
  kj::Promise<proto::ExpertShard::Client> capability();
  template <typename T>
  kj::Promise<T> guarded(kj::Promise<T> call, uint32_t deadlineMs);
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoProvider& io_;
  kj::Timer& timer_;
  ShardConfig shard_;
  TimeoutConfig timeouts_;
  std::string label_;  // "shard shard-0 (127.0.0.1:7201)"
  kj::Maybe<kj::Own<RpcConnection>> connection_;
  kj::Maybe<proto::ExpertShard::Client> cap_;
  uint64_t generation_ = 0;  // bumps on every (dis)connect so a stale watcher does nothing
  kj::TaskSet watchers_;
};

}  // namespace moe::router
