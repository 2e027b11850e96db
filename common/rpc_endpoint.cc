// Cap'n Proto connection plumbing shared by the router, the expert service and the tools.
#include "common/rpc_endpoint.h"

#include <arpa/inet.h>
#include <capnp/rpc.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/rpc_tls.h"

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

namespace {
// "address:port" of the peer of an accepted socket, for logs; "?" when it has none.
std::string peerName(kj::AsyncIoStream& stream) {
  sockaddr_storage addr{};
  kj::uint len = sizeof(addr);
  try {
    stream.getpeername(reinterpret_cast<sockaddr*>(&addr), &len);
  } catch (const kj::Exception&) {
    return "?";
  }
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  } else {
    return "?";
  }
  return std::string(host) + ":" + std::to_string(port);
}
}  // namespace

RpcListener::RpcListener(kj::Own<kj::ConnectionReceiver> receiver,
                         capnp::Capability::Client bootstrap, kj::Timer& timer,
                         ListenerLimits limits, ListenerTls tls)
    : timer_(timer),
      limits_(limits),
      tls_(std::move(tls)),
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
    ++open_;
    kj::Promise<void> served = nullptr;
    if (tls_.tls) {
      // The handshake runs beside the accept loop: a slow or silent peer holds up nobody else.
      served =
          handshake(kj::mv(stream))
              .then([this](kj::Maybe<kj::Own<kj::AsyncIoStream>> secured) -> kj::Promise<void> {
                KJ_IF_MAYBE (s, secured) {
                  return serve(kj::mv(*s));
                }
                return kj::READY_NOW;
              });
    } else {
      served = serve(kj::mv(stream));
    }
    connections_.add(served.attach(kj::defer([this]() { --open_; })));
    return run();
  });
}

// The TLS stream of an accepted connection, or nothing when the peer was refused (counted and
// logged; its socket closes with the failed handshake).
kj::Promise<kj::Maybe<kj::Own<kj::AsyncIoStream>>> RpcListener::handshake(
    kj::Own<kj::AsyncIoStream> stream) {
  std::string peer = peerName(*stream);
  const uint32_t ms = tls_.handshakeTimeoutMs;
  auto secured = kj::evalNow([&]() { return tls_.tls->wrapServer(kj::mv(stream)); });
  auto late = timer_.afterDelay(ms * kj::MILLISECONDS).then([ms]() -> kj::Own<kj::AsyncIoStream> {
    throwStatus(StatusCode::kDeadlineExceeded,
                "no TLS handshake within " + std::to_string(ms) + " ms");
  });
  return secured.exclusiveJoin(kj::mv(late))
      .then(
          [](kj::Own<kj::AsyncIoStream> s) {
            return kj::Maybe<kj::Own<kj::AsyncIoStream>>(kj::mv(s));
          },
          [this, peer = kj::mv(peer)](kj::Exception&& e) -> kj::Maybe<kj::Own<kj::AsyncIoStream>> {
            if (tls_.onHandshakeFailure) tls_.onHandshakeFailure();
            // A scanner could fill the log: the first failure and then one in 100 are logged.
            if (failedHandshakes_++ % 100 == 0) {
              logWarn("refused a connection from ", peer,
                      ": TLS handshake failed: ", e.getDescription().cStr(), " (",
                      failedHandshakes_, " failed so far; one in 100 is logged)");
            }
            return nullptr;
          });
}

kj::Promise<void> RpcListener::serve(kj::Own<kj::AsyncIoStream> stream) {
  auto conn = kj::heap<ServedConnection>(kj::heap<TrackedStream>(kj::mv(stream), writes_, timer_),
                                         bootstrap_, limits_.maxMessageBytes);
  kj::Promise<void> done = conn->network.onDisconnect();
  if (limits_.idleTimeoutMs != 0) {
    done = done.exclusiveJoin(closeWhenIdle(conn->tracked.lastActivity));
  }
  return done.attach(kj::mv(conn));
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
                                               const std::string& address, uint32_t timeoutMs,
                                               const RpcClientTls& tls) {
  // Only a failed connect is reworded here; the handshake and the time-out say what happened.
  kj::Promise<kj::Own<kj::AsyncIoStream>> connected =
      io.getNetwork()
          .parseAddress(address)
          .then([](kj::Own<kj::NetworkAddress> addr) {
            auto p = addr->connect();
            return p.attach(kj::mv(addr));
          })
          .catch_([address](kj::Exception&& e) -> kj::Own<kj::AsyncIoStream> {
            throwStatus(StatusCode::kUnavailable,
                        "cannot connect to " + address + ": " + e.getDescription().cStr());
          });
  if (tls.tls) {
    connected = connected.then([address, tls](kj::Own<kj::AsyncIoStream> stream) {
      return tls.tls->wrapClient(kj::mv(stream), address)
          .catch_([address, tls](kj::Exception&& e) -> kj::Own<kj::AsyncIoStream> {
            if (tls.onHandshakeFailure) tls.onHandshakeFailure();
            throwStatus(StatusCode::kUnavailable,
                        "TLS handshake with " + address + " failed: " + e.getDescription().cStr());
          });
    });
  }
  auto connecting = connected.then(
      [](kj::Own<kj::AsyncIoStream> stream) { return kj::heap<RpcConnection>(kj::mv(stream)); });
  auto timedOut =
      timer.afterDelay(timeoutMs * kj::MILLISECONDS)
          .then([address, timeoutMs]() -> kj::Own<RpcConnection> {
            throwStatus(StatusCode::kUnavailable, "cannot connect to " + address + " within " +
                                                      std::to_string(timeoutMs) + " ms");
          });
  return connecting.exclusiveJoin(kj::mv(timedOut));
}

}  // namespace moe
