// ShardTransport: how the router reaches its shards — the transport stage's seam. One interface,
// two ways to obtain each shard's ExpertShard capability: over Cap'n Proto connections (the
// service) or in this process (unit tests drive every router stage, deadlines and partial
// failures included, against real or scripted ExpertShard servers without processes). Deadlines,
// error statuses and the shard's name in every error are the same for both.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "router_service/shard_client.h"

namespace moe::router {

class ShardTransport {
 public:
  using RunRequest = capnp::Request<proto::ExpertShard::RunParams, proto::ExpertShard::RunResults>;
  using RunResponse = capnp::Response<proto::ExpertShard::RunResults>;
  using InfoResponse = capnp::Response<proto::ExpertShard::InfoResults>;

  ShardTransport(kj::Timer& timer, const TimeoutConfig& timeouts);
  virtual ~ShardTransport() = default;

  size_t numShards() const { return configs_.size(); }
  const ShardConfig& shard(uint32_t index) const { return configs_[index]; }
  // A shard joins (a reload listed it): returns its index. Shards are never taken out, so an index
  // stays valid for as long as a batch holds it; a removed shard just gets no more work.
  uint32_t addShard(const ShardConfig& config);
  // A reload changed what the shard holds (same name and address): the config the identity check
  // compares against from now on.
  void setConfig(uint32_t shard, const ShardConfig& config) { configs_[shard] = config; }
  // Closes the shard's connection, if any (a removed shard, once its calls are answered).
  void disconnect(uint32_t shard) { connectionLost(shard); }

  // A request for `shard` at once when its connection is up, else nothing. Run calls never open
  // a connection: only `info` (the prober, which verifies the shard's identity first) does.
  kj::Maybe<RunRequest> readyRunRequest(uint32_t shard);
  // Sends a filled request. Fails with the shard's status (Unavailable when the connection is
  // lost, DeadlineExceeded past timeouts.shard_call_ms), the message naming the shard.
  kj::Promise<RunResponse> send(uint32_t shard, RunRequest request);
  // Connects when needed.
  kj::Promise<InfoResponse> info(uint32_t shard);
  // Called with the shard's index whenever its connection is lost (a call failed Unavailable,
  // or the connection dropped).
  void onConnectionLost(std::function<void(uint32_t)> handler) { lost_ = std::move(handler); }

  // "shard shard-0 (127.0.0.1:7201)": how errors name a shard.
  std::string label(uint32_t shard) const;

 protected:
  // Makes shard `index` (just appended to the configs) reachable.
  virtual void open(uint32_t index) = 0;
  virtual kj::Promise<proto::ExpertShard::Client> capability(uint32_t shard) = 0;
  // The capability when it is usable right now (connected), else nothing.
  virtual kj::Maybe<proto::ExpertShard::Client> readyCapability(uint32_t shard) = 0;
  // A call to `shard` failed Unavailable: forget its connection.
  virtual void connectionLost(uint32_t shard) {}
  void notifyLost(uint32_t shard) {
    if (lost_) lost_(shard);
  }
  kj::Timer& timer() const { return timer_; }
  const TimeoutConfig& timeouts() const { return timeouts_; }

 private:
  template <typename T>
  kj::Promise<T> guarded(uint32_t shard, kj::Promise<T> call, uint32_t deadlineMs);

  kj::Timer& timer_;
  TimeoutConfig timeouts_;
  std::function<void(uint32_t)> lost_;
  std::deque<ShardConfig> configs_;  // by index; a deque so references stay valid as shards join
};

// Shards over Cap'n Proto connections (ShardClient each).
class CapnpShardTransport final : public ShardTransport {
 public:
  // `tls` (config `tls:`; null: plaintext) secures every shard connection; a failed handshake
  // with shard i calls onTlsFailure(i).
  CapnpShardTransport(kj::AsyncIoProvider& io, kj::Timer& timer,
                      const std::vector<ShardConfig>& shards, const TimeoutConfig& timeouts,
                      std::shared_ptr<const RpcTls> tls = nullptr,
                      std::function<void(uint32_t)> onTlsFailure = {});

 protected:
  void open(uint32_t index) override;
  kj::Promise<proto::ExpertShard::Client> capability(uint32_t shard) override;
  kj::Maybe<proto::ExpertShard::Client> readyCapability(uint32_t shard) override;
  void connectionLost(uint32_t shard) override;

 private:
  kj::AsyncIoProvider& io_;
  std::shared_ptr<const RpcTls> tls_;
  std::function<void(uint32_t)> onTlsFailure_;
  std::vector<std::unique_ptr<ShardClient>> clients_;
};

// Shards in this process: each an ExpertShard capability served locally (a real ShardServer, or
// a scripted one that fails or stalls on purpose), found by the shard's name.
class InProcessShardTransport final : public ShardTransport {
 public:
  InProcessShardTransport(kj::Timer& timer, const TimeoutConfig& timeouts);
  // Serves `config.name` with `shard` and adds it as the next shard.
  void add(const ShardConfig& config, proto::ExpertShard::Client shard);
  // Makes `name` reachable for a later addShard (a reload); an unoffered name is refused.
  void offer(const std::string& name, proto::ExpertShard::Client shard);

 protected:
  void open(uint32_t index) override;
  kj::Promise<proto::ExpertShard::Client> capability(uint32_t shard) override;
  kj::Maybe<proto::ExpertShard::Client> readyCapability(uint32_t shard) override;

 private:
  std::map<std::string, proto::ExpertShard::Client> offered_;
  std::vector<proto::ExpertShard::Client> shards_;
};

}  // namespace moe::router
