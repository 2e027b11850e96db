// ShardTransport and its two implementations; see shard_transport.h.
#include "router_service/shard_transport.h"

#include "common/rpc_endpoint.h"
#include "common/rpc_status.h"

namespace moe::router {

ShardTransport::ShardTransport(kj::Timer& timer, const TimeoutConfig& timeouts)
    : timer_(timer), timeouts_(timeouts) {}

std::string ShardTransport::label(uint32_t index) const {
  const ShardConfig& s = shard(index);
  return "shard " + s.name + " (" + s.listen + ")";
}

template <typename T>
kj::Promise<T> ShardTransport::guarded(uint32_t shard, kj::Promise<T> call, uint32_t deadlineMs) {
  auto bounded = withDeadline(timer_, deadlineMs, kj::mv(call),
                              "did not answer within " + std::to_string(deadlineMs) + " ms");
  return bounded.catch_([this, shard](kj::Exception&& e) -> T {
    Status s = statusFromException(e);
    if (s.code() == StatusCode::kUnavailable) {
      connectionLost(shard);
      notifyLost(shard);
    }
    throwStatus(s.code(), label(shard) + ": " + s.message());
  });
}

kj::Maybe<ShardTransport::RunRequest> ShardTransport::readyRunRequest(uint32_t shard) {
  KJ_IF_MAYBE (cap, readyCapability(shard)) {
    return cap->runRequest();
  }
  return nullptr;
}

kj::Promise<ShardTransport::RunResponse> ShardTransport::send(uint32_t shard, RunRequest request) {
  return guarded<RunResponse>(shard, request.send(), timeouts_.shardCallMs);
}

kj::Promise<ShardTransport::InfoResponse> ShardTransport::info(uint32_t shard) {
  auto call = capability(shard).then([](proto::ExpertShard::Client cap) {
    return kj::Promise<InfoResponse>(cap.infoRequest().send());
  });
  return guarded<InfoResponse>(shard, kj::mv(call), timeouts_.connectMs + timeouts_.shardCallMs);
}

CapnpShardTransport::CapnpShardTransport(kj::AsyncIoProvider& io, kj::Timer& timer,
                                         const std::vector<ShardConfig>& shards,
                                         const TimeoutConfig& timeouts)
    : ShardTransport(timer, timeouts) {
  for (uint32_t i = 0; i < shards.size(); ++i) {
    clients_.push_back(std::make_unique<ShardClient>(io, timer, shards[i], timeouts,
                                                     [this, i]() { notifyLost(i); }));
  }
}

kj::Promise<proto::ExpertShard::Client> CapnpShardTransport::capability(uint32_t shard) {
  return clients_[shard]->capability();
}

kj::Maybe<proto::ExpertShard::Client> CapnpShardTransport::readyCapability(uint32_t shard) {
  return clients_[shard]->connected();
}

void CapnpShardTransport::connectionLost(uint32_t shard) {
  clients_[shard]->dropConnection();
}

InProcessShardTransport::InProcessShardTransport(kj::Timer& timer, const TimeoutConfig& timeouts)
    : ShardTransport(timer, timeouts) {}

void InProcessShardTransport::add(const ShardConfig& config, proto::ExpertShard::Client shard) {
  configs_.push_back(config);
  shards_.push_back(kj::mv(shard));
}

kj::Promise<proto::ExpertShard::Client> InProcessShardTransport::capability(uint32_t shard) {
  return shards_[shard];
}

kj::Maybe<proto::ExpertShard::Client> InProcessShardTransport::readyCapability(uint32_t shard) {
  return shards_[shard];
}

}  // namespace moe::router
