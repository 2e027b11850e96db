// Cap'n Proto connection plumbing shared by the router, the expert service and the tools.
#include "common/rpc_endpoint.h"

#include <capnp/rpc.h>

#include "common/log.h"

namespace moe {

capnp::ReaderOptions wireReaderOptions(uint64_t maxMessageBytes) {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = maxMessageBytes / sizeof(capnp::word);
  o.nestingLimit = 64;
  return o;
}

namespace {
// A served socket that reports each write to `pending` from its start until the kernel has all of
// its bytes (or it fails, or is cancelled), and stamps `lastActivity` whenever bytes move either
// way; everything else passes straight through.
class TrackedStream final : public kj::AsyncIoStream {
 public:
  TrackedStream(kj::Own<kj::AsyncIoStream> inner, PendingWrites& pending, kj::Timer& timer)
      : inner_(kj::mv(inner)), pending_(pending), timer_(timer), lastActivity(timer.now()) {}
  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    if (minBytes == 0 || maxBytes == 0) return inner_->tryRead(buffer, minBytes, maxBytes);
    // minBytes > 1 would let a peer trickle bytes that never complete a read: stamp each one.
    return inner_->tryRead(buffer, 1, maxBytes).then([this, buffer, minBytes, maxBytes](size_t n) {
      if (n == 0) return kj::Promise<size_t>(n);
      lastActivity = timer_.now();
      if (n >= minBytes) return kj::Promise<size_t>(n);
      return tryRead(static_cast<kj::byte*>(buffer) + n, minBytes - n, maxBytes - n)
          .then([n](size_t more) { return n + more; });
    });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return track(inner_->write(buffer, size));
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return track(inner_->write(pieces));
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, kj::uint* length) override {
    inner_->getpeername(addr, length);
  }

 private:
  kj::Promise<void> track(kj::Promise<void> write) {
    pending_.started();
    lastActivity = timer_.now();
    return write.attach(kj::defer([this]() {
      lastActivity = timer_.now();
      pending_.finished();
    }));
  }
  kj::Own<kj::AsyncIoStream> inner_;
  PendingWrites& pending_;
  kj::Timer& timer_;

 public:
  kj::TimePoint lastActivity;
};

// One served connection: lives until the peer disconnects (or idles out).
struct ServedConnection {
  ServedConnection(kj::Own<TrackedStream> s, capnp::Capability::Client bootstrap,
                   uint64_t maxMessageBytes)
      : tracked(*s),
        stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, wireReaderOptions(maxMessageBytes)),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
  TrackedStream& tracked;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};
}  // namespace

void PendingWrites::finished() {
  if (--count > 0) return;
  for (auto& f : onZero) f->fulfill();
  onZero.clear();
}

RpcListener::RpcListener(kj::Own<kj::ConnectionReceiver> receiver,
                         capnp::Capability::Client bootstrap, kj::Timer& timer,
                         ListenerLimits limits)
    : timer_(timer),
      limits_(limits),
      receiver_(kj::mv(receiver)),
      bootstrap_(kj::mv(bootstrap)),
      connections_(*this) {}

kj::Promise<void> RpcListener::run() {
  return receiver_->accept().then([this](kj::Own<kj::AsyncIoStream>&& stream) {
    if (limits_.maxConnections != 0 && open_ >= limits_.maxConnections) {
      // Dropping the stream closes it: the peer sees a disconnect before any message.
      if (refused_++ % 1000 == 0) {
        logWarn("refused a connection: ", open_,
                " open, limits.max_connections = ", limits_.maxConnections, " (", refused_,
                " refused so far)");
      }
      return run();
    }
    auto conn = kj::heap<ServedConnection>(kj::heap<TrackedStream>(kj::mv(stream), writes_, timer_),
                                           bootstrap_, limits_.maxMessageBytes);
    ++open_;
    kj::Promise<void> done = conn->network.onDisconnect();
    if (limits_.idleTimeoutMs != 0) {
      done = done.exclusiveJoin(closeWhenIdle(conn->tracked.lastActivity));
    }
    connections_.add(done.attach(kj::mv(conn), kj::defer([this]() { --open_; })));
    return run();
  });
}

// Resolves once `lastActivity` is idleTimeoutMs in the past; the connection is then dropped.
kj::Promise<void> RpcListener::closeWhenIdle(const kj::TimePoint& lastActivity) {
  const kj::Duration idle = limits_.idleTimeoutMs * kj::MILLISECONDS;
  return timer_.atTime(lastActivity + idle).then([this, &lastActivity, idle]() {
    if (timer_.now() - lastActivity < idle) return closeWhenIdle(lastActivity);
    ++idleClosed_;
    logInfo("closed a connection idle for limits.idle_timeout_ms = ", limits_.idleTimeoutMs, " ms");
    return kj::Promise<void>(kj::READY_NOW);
  });
}

// A reply is written a few turns after its call resolves, and one write may queue the next, so the
// count is read only once the loop has nothing else to do (evalLast), and read again after it
// drops to zero.
kj::Promise<void> RpcListener::whenWritesFlushed() {
  return kj::evalLast([this]() -> kj::Promise<void> {
    if (writes_.count == 0) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    writes_.onZero.add(kj::mv(paf.fulfiller));
    return paf.promise.then([this]() { return whenWritesFlushed(); });
  });
}

void RpcListener::taskFailed(kj::Exception&& exception) {
  logWarn("connection ended with error: ", exception.getDescription().cStr());
}

RpcConnection::RpcConnection(kj::Own<kj::AsyncIoStream> stream)
    : stream_(kj::mv(stream)),
      network_(*stream_, capnp::rpc::twoparty::Side::CLIENT, wireReaderOptions()),
      rpc_(capnp::makeRpcClient(network_)) {}

capnp::rpc::twoparty::VatId::Reader RpcConnection::serverId() {
  auto id = vatId_.getRoot<capnp::rpc::twoparty::VatId>();
  id.setSide(capnp::rpc::twoparty::Side::SERVER);
  return id.asReader();
}

kj::Promise<kj::Own<RpcConnection>> connectRpc(kj::AsyncIoProvider& io, kj::Timer& timer,
                                               const std::string& address, uint32_t timeoutMs) {
  auto connecting = io.getNetwork()
                        .parseAddress(address)
                        .then([](kj::Own<kj::NetworkAddress> addr) {
                          auto p = addr->connect();
                          return p.attach(kj::mv(addr));
                        })
                        .then([](kj::Own<kj::AsyncIoStream> stream) {
                          return kj::heap<RpcConnection>(kj::mv(stream));
                        });
  auto timedOut =
      timer.afterDelay(timeoutMs * kj::MILLISECONDS)
          .then([address, timeoutMs]() -> kj::Own<RpcConnection> {
            throwStatus(StatusCode::kUnavailable, "cannot connect to " + address + " within " +
                                                      std::to_string(timeoutMs) + " ms");
          });
  // Only a failed connect is reworded; the time-out above already says what happened.
  auto refused = connecting.catch_([address](kj::Exception&& e) -> kj::Own<RpcConnection> {
    throwStatus(StatusCode::kUnavailable,
                "cannot connect to " + address + ": " + e.getDescription().cStr());
  });
  return refused.exclusiveJoin(kj::mv(timedOut));
}

}  // namespace moe
