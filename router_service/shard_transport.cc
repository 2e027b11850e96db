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

uint32_t ShardTransport::addShard(const ShardConfig& config) {
  configs_.push_back(config);
  const auto index = static_cast<uint32_t>(configs_.size() - 1);
  open(index);
  return index;
}

CapnpShardTransport::CapnpShardTransport(kj::AsyncIoProvider& io, kj::Timer& timer,
                                         const std::vector<ShardConfig>& shards,
                                         const TimeoutConfig& timeouts,
                                         std::shared_ptr<const RpcTls> tls,
                                         std::function<void(uint32_t)> onTlsFailure)
    : ShardTransport(timer, timeouts),
      io_(io),
      tls_(std::move(tls)),
      onTlsFailure_(std::move(onTlsFailure)) {
  for (const ShardConfig& s : shards) addShard(s);
}

void CapnpShardTransport::open(uint32_t i) {
  RpcClientTls tls{tls_, nullptr};
  if (onTlsFailure_) tls.onHandshakeFailure = [this, i]() { onTlsFailure_(i); };
  clients_.push_back(std::make_unique<ShardClient>(
      io_, timer(), shard(i), timeouts(), [this, i]() { notifyLost(i); }, std::move(tls)));
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
  offer(config.name, kj::mv(shard));
  addShard(config);
}

void InProcessShardTransport::offer(const std::string& name, proto::ExpertShard::Client shard) {
  offered_.insert_or_assign(name, kj::mv(shard));
}

void InProcessShardTransport::open(uint32_t index) {
  auto it = offered_.find(shard(index).name);
  if (it != offered_.end()) {
    proto::ExpertShard::Client cap = it->second;  // a new reference to the same server
    shards_.push_back(kj::mv(cap));
  } else {  // nothing serves that name here: like an address where nothing listens
    shards_.push_back(capnp::Capability::Client(KJ_EXCEPTION(DISCONNECTED, "connection refused"))
                          .castAs<proto::ExpertShard>());
  }
}

kj::Promise<proto::ExpertShard::Client> InProcessShardTransport::capability(uint32_t shard) {
  return shards_[shard];
}

kj::Maybe<proto::ExpertShard::Client> InProcessShardTransport::readyCapability(uint32_t shard) {
  return shards_[shard];
}

}  // namespace moe::router
