// ShardClient implementation.
#include "router_service/shard_client.h"

#include "common/log.h"

namespace moe::router {

ShardClient::ShardClient(kj::AsyncIoProvider& io, kj::Timer& timer, const ShardConfig& shard,
                         const TimeoutConfig& timeouts)
    : io_(io),
      timer_(timer),
      shard_(shard),
      timeouts_(timeouts),
      label_("shard " + shard.name + " (" + shard.listen + ")"),
      watchers_(*this) {}

void ShardClient::taskFailed(kj::Exception&& exception) {
  logDebug(label_, ": watcher: ", exception.getDescription().cStr());
}

kj::Promise<proto::ExpertShard::Client> ShardClient::capability() {
  KJ_IF_MAYBE (cap, cap_) {
    return *cap;
  }
  // Concurrent callers may each open a connection; the last one to finish is kept. Simple, and
  // only happens on (re)connect.
  return connectRpc(io_, timer_, shard_.listen, timeouts_.connectMs)
      .then([this](kj::Own<RpcConnection> conn) -> proto::ExpertShard::Client {
        KJ_IF_MAYBE (cap, cap_) {
          return *cap;
        }
        auto cap = conn->bootstrap<proto::ExpertShard>();
        const uint64_t gen = ++generation_;
        watchers_.add(conn->onDisconnect().then([this, gen]() {
          if (gen != generation_) return;
          logWarn(label_, ": disconnected; will reconnect on the next call");
          cap_ = nullptr;
          connection_ = nullptr;
          ++generation_;
        }));
        connection_ = kj::mv(conn);
        cap_ = cap;
        logInfo("connected to ", label_);
        return cap;
      });
}

template <typename T>
kj::Promise<T> ShardClient::guarded(kj::Promise<T> call, uint32_t deadlineMs) {
  auto bounded =
      withDeadline(timer_, deadlineMs, kj::mv(call),
                   label_ + " did not answer within " + std::to_string(deadlineMs) + " ms");
  return bounded.catch_([this](kj::Exception&& e) -> T {
    if (e.getType() == kj::Exception::Type::DISCONNECTED) {
      cap_ = nullptr;  // drop the broken connection; the next call reconnects
      connection_ = nullptr;
      ++generation_;
    }
    auto desc = std::string(e.getDescription().cStr());
    if (desc.rfind(label_, 0) == 0) kj::throwFatalException(kj::mv(e));
    throwRpcError(e.getType(), label_ + ": " + desc);
  });
}

kj::Promise<ShardClient::RunResponse> ShardClient::run(
    kj::Function<void(RunParams::Builder)> fill) {
  auto call = capability().then([fill = kj::mv(fill)](proto::ExpertShard::Client cap) mutable {
    auto req = cap.runRequest();
    fill(req);
    return kj::Promise<RunResponse>(req.send());
  });
  return guarded<RunResponse>(kj::mv(call), timeouts_.shardCallMs);
}

kj::Promise<ShardClient::InfoResponse> ShardClient::info() {
  auto call = capability().then([](proto::ExpertShard::Client cap) {
    return kj::Promise<InfoResponse>(cap.infoRequest().send());
  });
  return guarded<InfoResponse>(kj::mv(call), timeouts_.connectMs + timeouts_.shardCallMs);
}

}  // namespace moe::router
