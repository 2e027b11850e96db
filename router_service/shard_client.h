// ShardClient: the router's connection to one expert shard over Cap'n Proto. Connects lazily and
// reconnects on the next call after the connection is dropped; calls, deadlines and error
// labels are the transport's (shard_transport.h).
#pragma once

#include <kj/async-io.h>

#include <functional>
#include <string>

#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"

namespace moe::router {

class ShardClient final : private kj::TaskSet::ErrorHandler {
 public:
  // `onDisconnect` runs when a live connection drops (the next one must be verified again);
  // `tls` (config `tls:`) secures every connection, and counts the handshakes that fail.
  ShardClient(kj::AsyncIoProvider& io, kj::Timer& timer, const ShardConfig& shard,
              const TimeoutConfig& timeouts, std::function<void()> onDisconnect,
              RpcClientTls tls = {});

  const ShardConfig& config() const { return shard_; }

  // The shard's capability, connecting first when there is no live connection (Unavailable when
  // it cannot within timeouts.connect_ms).
  kj::Promise<proto::ExpertShard::Client> capability();
  // The capability when a connection is up, else nothing (never connects).
  kj::Maybe<proto::ExpertShard::Client> connected() { return cap_; }
  // Forgets the connection (a call on it failed Unavailable); the next call reconnects.
  void dropConnection();

 private:
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoProvider& io_;
  kj::Timer& timer_;
  ShardConfig shard_;
  TimeoutConfig timeouts_;
  RpcClientTls tls_;
  kj::Maybe<kj::Own<RpcConnection>> connection_;
  kj::Maybe<proto::ExpertShard::Client> cap_;
  std::function<void()> onDisconnect_;
  uint64_t generation_ = 0;  // bumps on every (dis)connect so a stale watcher does nothing
  kj::TaskSet watchers_;
};

}  // namespace moe::router
