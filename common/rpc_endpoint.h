// Cap'n Proto connections for our services: the listener that serves a bootstrap capability on
// every accepted connection, the client side of one connection, and the message-size limits both
// sides share (a batch of 8192 tokens × hidden 4096 in f32 is 128 MiB, over Cap'n Proto's default).
// With TLS (config `tls:`, common/rpc_tls.h) both sides complete a handshake before any message.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <functional>
#include <memory>
#include <string>

#include "common/rpc_status.h"

namespace moe {

// Largest message either side accepts (traversal limit): `maxMessageBytes` (default 1 GiB, what a
// client reading replies from trusted services allows), nesting 64. A peer whose segment table
// declares more is refused before anything is allocated for it.
capnp::ReaderOptions wireReaderOptions(uint64_t maxMessageBytes = uint64_t{1} << 30);

// What one served process allows its peers (config `limits:`).
struct ListenerLimits {
  uint64_t maxMessageBytes = uint64_t{1} << 30;
  uint32_t maxConnections = 0;  // 0 = unlimited
  uint32_t idleTimeoutMs = 0;   // 0 = never idle out
};

class RpcTls;

// TLS on a listener (config `tls:`): every accepted connection must complete a handshake within
// handshakeTimeoutMs before it is served; one that does not (plaintext, a certificate the CA did
// not sign, none when client_auth) is closed and reported to onHandshakeFailure, which the
// process's metrics count (moe_tls_handshake_failures_total{side="server"}).
struct ListenerTls {
  std::shared_ptr<const RpcTls> tls;  // null: plaintext
  uint32_t handshakeTimeoutMs = 10000;
  std::function<void()> onHandshakeFailure = {};
};

// Counts the writes of served connections that the kernel has not taken yet (a reply larger than
// the socket buffer waits for the peer to read).
struct PendingWrites {
  uint64_t count = 0;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> onZero;
  void started() { ++count; }
  void finished();
};

// Accepts connections on `receiver` forever, serving `bootstrap` on each; a failed connection
// only ends that connection. Beyond limits.maxConnections open ones a new connection is closed at
// once; a connection with no byte read or written for limits.idleTimeoutMs is closed. A connection
// still in its TLS handshake counts as open.
class RpcListener final : private kj::TaskSet::ErrorHandler {
 public:
  RpcListener(kj::Own<kj::ConnectionReceiver> receiver, capnp::Capability::Client bootstrap,
              kj::Timer& timer, ListenerLimits limits = {}, ListenerTls tls = {});
  kj::Promise<void> run();
  uint16_t port() { return static_cast<uint16_t>(receiver_->getPort()); }
  // Resolves once every reply already sent by the served objects is in the kernel's hands, so a
  // draining process can exit without cutting its last replies short (they are written
  // asynchronously, after the call that produced them has resolved).
  kj::Promise<void> whenWritesFlushed();
  uint32_t openConnections() const { return open_; }
  uint64_t refusedConnections() const { return refused_; }
  uint64_t idleClosedConnections() const { return idleClosed_; }
  uint64_t failedHandshakes() const { return failedHandshakes_; }

 private:
  void taskFailed(kj::Exception&& exception) override;
  kj::Promise<void> closeWhenIdle(const kj::TimePoint& lastActivity);
  kj::Promise<kj::Maybe<kj::Own<kj::AsyncIoStream>>> handshake(kj::Own<kj::AsyncIoStream> stream);
  kj::Promise<void> serve(kj::Own<kj::AsyncIoStream> stream);
  kj::Timer& timer_;
  ListenerLimits limits_;
  ListenerTls tls_;
  uint32_t open_ = 0;
  uint64_t refused_ = 0;
  uint64_t idleClosed_ = 0;
  uint64_t failedHandshakes_ = 0;
  PendingWrites writes_;  // before connections_: their streams report to it until destroyed
  kj::Own<kj::ConnectionReceiver> receiver_;
  capnp::Capability::Client bootstrap_;
  kj::TaskSet connections_;
};

// The client side of one connection.
class RpcConnection {
 public:
  explicit RpcConnection(kj::Own<kj::AsyncIoStream> stream);
  template <typename T>
  typename T::Client bootstrap() {
    return rpc_.bootstrap(serverId()).castAs<T>();
  }
  kj::Promise<void> onDisconnect() { return network_.onDisconnect(); }

 private:
  capnp::rpc::twoparty::VatId::Reader serverId();
  kj::Own<kj::AsyncIoStream> stream_;
  capnp::TwoPartyVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
  capnp::MallocMessageBuilder vatId_;
};

// TLS on a client's connections (config `tls:`): the server must present a certificate the CA
// signed for the address's host; a failed handshake is reported to onHandshakeFailure (the
// router counts moe_tls_handshake_failures_total{side="client",shard}).
struct RpcClientTls {
  std::shared_ptr<const RpcTls> tls;  // null: plaintext
  std::function<void()> onHandshakeFailure = {};
};

// Connects to "host:port" (and completes the TLS handshake, with `tls`) within `timeoutMs`; errors
// are Unavailable and name the address.
kj::Promise<kj::Own<RpcConnection>> connectRpc(kj::AsyncIoProvider& io, kj::Timer& timer,
                                               const std::string& address, uint32_t timeoutMs,
                                               const RpcClientTls& tls = {});

// `promise`, or a DeadlineExceeded error saying `message` once `ms` milliseconds pass first.
template <typename T>
kj::Promise<T> withDeadline(kj::Timer& timer, uint32_t ms, kj::Promise<T> promise,
                            std::string message);

template <typename T>
kj::Promise<T> withDeadline(kj::Timer& timer, uint32_t ms, kj::Promise<T> promise,
                            std::string message) {
  return promise.exclusiveJoin(
      timer.afterDelay(ms * kj::MILLISECONDS).then([message = kj::mv(message)]() -> kj::Promise<T> {
        throwStatus(StatusCode::kDeadlineExceeded, message);
      }));
}

}  // namespace moe
