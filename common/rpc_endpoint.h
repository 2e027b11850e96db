// Cap'n Proto connections for our services: the listener that serves a bootstrap capability on
// every accepted connection, the client side of one connection, and the message-size limits both
// sides share (a batch of 8192 tokens × hidden 4096 in f32 is 128 MiB, over Cap'n Proto's default).
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <string>

#include "common/rpc_status.h"

namespace moe {

// Largest message either side accepts (traversal limit): 1 GiB.
capnp::ReaderOptions wireReaderOptions();

// Counts the writes of served connections that the kernel has not taken yet (a reply larger than
// the socket buffer waits for the peer to read).
struct PendingWrites {
  uint64_t count = 0;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> onZero;
  void started() { ++count; }
  void finished();
};

// Accepts connections on `receiver` forever, serving `bootstrap` on each; a failed connection
// only ends that connection.
class RpcListener final : private kj::TaskSet::ErrorHandler {
 public:
  RpcListener(kj::Own<kj::ConnectionReceiver> receiver, capnp::Capability::Client bootstrap);
  kj::Promise<void> run();
  uint16_t port() { return static_cast<uint16_t>(receiver_->getPort()); }
  // Resolves once every reply already sent by the served objects is in the kernel's hands, so a
  // draining process can exit without cutting its last replies short (they are written
  // asynchronously, after the call that produced them has resolved).
  kj::Promise<void> whenWritesFlushed();

 private:
  void taskFailed(kj::Exception&& exception) override;
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

// Connects to "host:port" within `timeoutMs`; errors are Unavailable and name the address.
kj::Promise<kj::Own<RpcConnection>> connectRpc(kj::AsyncIoProvider& io, kj::Timer& timer,
                                               const std::string& address, uint32_t timeoutMs);

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
