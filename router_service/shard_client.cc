// ShardClient implementation.
#include "router_service/shard_client.h"

#include "common/log.h"

namespace moe::router {

ShardClient::ShardClient(kj::AsyncIoProvider& io, kj::Timer& timer, const ShardConfig& shard,
                         const TimeoutConfig& timeouts, std::function<void()> onDisconnect,
                         RpcClientTls tls)
    : io_(io),
      timer_(timer),
      shard_(shard),
      timeouts_(timeouts),
      tls_(std::move(tls)),
      onDisconnect_(std::move(onDisconnect)),
      watchers_(*this) {}

void ShardClient::taskFailed(kj::Exception&& exception) {
  logDebug("shard ", shard_.name, ": watcher: ", exception.getDescription().cStr());
}

void ShardClient::dropConnection() {
  cap_ = nullptr;
  connection_ = nullptr;
  ++generation_;
}

kj::Promise<proto::ExpertShard::Client> ShardClient::capability() {
  KJ_IF_MAYBE (cap, cap_) {
    return *cap;
  }
  // Concurrent callers may each open a connection; the last one to finish is kept. Simple, and
  // only happens on (re)connect.
  return connectRpc(io_, timer_, shard_.listen, timeouts_.connectMs, tls_)
      .then([this](kj::Own<RpcConnection> conn) -> proto::ExpertShard::Client {
        KJ_IF_MAYBE (cap, cap_) {
          return *cap;
        }
        auto cap = conn->bootstrap<proto::ExpertShard>();
        const uint64_t gen = ++generation_;
        watchers_.add(conn->onDisconnect().then([this, gen]() {
          if (gen != generation_) return;
          logWarn("shard ", shard_.name, " (", shard_.listen,
                  "): disconnected; it must prove its identity again before it gets work");
          dropConnection();
          if (onDisconnect_) onDisconnect_();
        }));
        connection_ = kj::mv(conn);
        cap_ = cap;
        logInfo("connected to shard ", shard_.name, " (", shard_.listen, ")");
        return cap;
      });
}

}  // namespace moe::router
