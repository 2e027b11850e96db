// Cap'n Proto connection plumbing shared by the router, the expert service and the tools.
#include "common/rpc_endpoint.h"

#include <capnp/rpc.h>

#include "common/log.h"

namespace moe {

capnp::ReaderOptions wireReaderOptions() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = (uint64_t{1} << 30) / sizeof(capnp::word);
  o.nestingLimit = 64;
  return o;
}

namespace {
// One served connection: lives until the peer disconnects.
struct ServedConnection {
  ServedConnection(kj::Own<kj::AsyncIoStream> s, capnp::Capability::Client bootstrap)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, wireReaderOptions()),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};
}  // namespace

RpcListener::RpcListener(kj::Own<kj::ConnectionReceiver> receiver,
                         capnp::Capability::Client bootstrap)
    : receiver_(kj::mv(receiver)), bootstrap_(kj::mv(bootstrap)), connections_(*this) {}

kj::Promise<void> RpcListener::run() {
  return receiver_->accept().then([this](kj::Own<kj::AsyncIoStream>&& stream) {
    auto conn = kj::heap<ServedConnection>(kj::mv(stream), bootstrap_);
    auto done = conn->network.onDisconnect();
    connections_.add(done.attach(kj::mv(conn)));
    return run();
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
  auto timedOut = timer.afterDelay(timeoutMs * kj::MILLISECONDS)
                      .then([address, timeoutMs]() -> kj::Own<RpcConnection> {
                        throwStatus(StatusCode::kUnavailable,
                                    "cannot connect to " + address + " within " +
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
