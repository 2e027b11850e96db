// moe::Client over Cap'n Proto RPC (Router.info, Router.forward); see client.h.
#include "client/client.h"

#include <capnp/message.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_status.h"
#include "common/rpc_tls.h"
#include "common/tensor_wire.h"

namespace moe {
namespace {

using InfoResponse = capnp::Response<proto::Router::InfoResults>;
using ForwardResponse = capnp::Response<proto::Router::ForwardResults>;

// A failed promise carrying `status` the way the server's errors arrive (common/rpc_status).
template <typename T>
kj::Promise<T> failed(StatusCode code, std::string message) {
  return kj::Promise<T>(toRpcException(Status::error(code, std::move(message))));
}

uint32_t millis(std::chrono::milliseconds ms) {
  return static_cast<uint32_t>(std::max<int64_t>(1, std::min<int64_t>(ms.count(), UINT32_MAX)));
}

void setTensor(proto::Tensor::Builder t, DType dtype, uint32_t rows, uint32_t cols,
               std::span<const std::byte> data) {
  t.setDtype(toProto(dtype));
  auto shape = t.initShape(2);
  shape.set(0, rows);
  shape.set(1, cols);
  // The one copy on the way out: into the message (the caller's buffer is free once we return).
  auto bytes = t.initData(static_cast<unsigned>(data.size()));
  if (!data.empty()) std::memcpy(bytes.begin(), data.data(), data.size());
}

// f32 [rows, cols] of a reply tensor; Internal when the reply is malformed.
FloatMatrix readMatrix(proto::Tensor::Reader tensor, std::string_view what) {
  auto view = decodeTensor(tensor, what);
  if (!view || view.value().shape.size() != 2) {
    throwStatus(
        StatusCode::kInternal,
        std::string("reply ") + std::string(what) + ": " +
            (view ? "shape " + shapeString(view.value().shape) + " is not 2-D" : view.error()));
  }
  FloatMatrix m;
  m.rows = view.value().shape[0];
  m.cols = view.value().shape[1];
  F32Rows rows(view.value());
  m.values.assign(rows.values().begin(), rows.values().end());  // the one copy on the way in
  return m;
}

ModelInfo toModelInfo(proto::ServiceInfo::Reader i) {
  ModelInfo m;
  m.family = i.getModelType();
  m.familyName = i.getFamilyName();
  m.routingRecipe = i.getRoutingRecipe();
  m.hiddenSize = i.getHiddenSize();
  m.intermediateSize = i.getIntermediateSize();
  m.numLayers = i.getNumLayers();
  for (uint32_t l : i.getMoeLayers()) m.moeLayers.push_back(l);
  m.numExperts = i.getNumExperts();
  m.topK = i.getTopK();
  m.maxTokens = i.getMaxTokens();
  m.inputDtypes = {DType::kF32, DType::kBF16, DType::kF16};  // the Router.forward contract
  m.outputDtype = DType::kF32;
  m.fingerprint = i.getFingerprint();
  const std::string dtype = i.getDtype();
  m.computeDtype = dtype == "bf16" ? DType::kBF16 : dtype == "f16" ? DType::kF16 : DType::kF32;
  m.serverVersion = i.getVersion();
  m.ready = i.getReady();
  return m;
}

ForwardResult toForwardResult(ForwardResponse& reply, uint32_t tokens, uint32_t hidden,
                              bool wantRouting) {
  ForwardResult r;
  r.output = readMatrix(reply.getOutput(), "output");
  if (r.output.rows != tokens || r.output.cols != hidden) {
    throwStatus(StatusCode::kInternal, "reply output has shape [" + std::to_string(r.output.rows) +
                                           ", " + std::to_string(r.output.cols) + "], expected [" +
                                           std::to_string(tokens) + ", " + std::to_string(hidden) +
                                           "]");
  }
  if (wantRouting) {
    auto routing = reply.getRouting();
    RoutingResult rr;
    rr.k = routing.getK();
    for (uint32_t e : routing.getExperts()) rr.experts.push_back(e);
    for (float w : routing.getWeights()) rr.weights.push_back(w);
    for (bool d : routing.getDropped()) rr.dropped.push_back(d);
    r.routing = std::move(rr);
  }
  if (reply.hasGateLogits() && reply.getGateLogits().getShape().size() == 2) {
    r.logits = readMatrix(reply.getGateLogits(), "gateLogits");
  }
  r.serverMicros = reply.getStats().getTotalMicros();
  return r;
}

}  // namespace

ClientError::ClientError(StatusCode code, const std::string& message)
    : std::runtime_error(std::string(statusCodeName(code)) + ": " + message),
      code_(code),
      message_(message) {}

ClientError ClientError::fromException(const kj::Exception& e) {
  const Status s = statusFromException(e);
  return ClientError(s.code(), s.message());
}

HiddenStates HiddenStates::f32(std::span<const float> values, uint32_t rows) {
  return {DType::kF32, rows, rows == 0 ? 0 : static_cast<uint32_t>(values.size() / rows),
          std::as_bytes(values)};
}

HiddenStates HiddenStates::half(DType dtype, std::span<const uint16_t> values, uint32_t rows) {
  return {dtype, rows, rows == 0 ? 0 : static_cast<uint32_t>(values.size() / rows),
          std::as_bytes(values)};
}

// The event loop of this thread's synchronous Clients: one per thread (KJ allows no more), shared
// by every synchronous Client on it and freed with the last of them.
std::shared_ptr<kj::AsyncIoContext> threadLoop() {
  thread_local std::weak_ptr<kj::AsyncIoContext> current;
  if (auto loop = current.lock()) return loop;
  try {
    auto loop = std::make_shared<kj::AsyncIoContext>(kj::setupAsyncIo());
    current = loop;
    return loop;
  } catch (const kj::Exception& e) {
    throw ClientError(StatusCode::kFailedPrecondition,
                      std::string("the synchronous Client needs a thread without a KJ event loop "
                                  "(construct it with the loop's AsyncIoProvider instead): ") +
                          e.getDescription().cStr());
  }
}

struct Client::Impl {
  Impl(std::shared_ptr<kj::AsyncIoContext> loop, kj::AsyncIoProvider& provider, std::string addr,
       ClientOptions opts)
      : ownLoop(std::move(loop)),
        io(provider),
        timer(provider.getTimer()),
        address(std::move(addr)),
        options(opts) {
    if (options.tls) {
      TlsConfig files{options.tls->ca, options.tls->cert, options.tls->key, true};
      auto loaded = RpcTls::load(files, "tls");
      if (!loaded) throw ClientError(loaded.code(), loaded.error());
      tls.tls = std::move(loaded).value();
    }
  }

  // The synchronous form's event loop; first, so that it is destroyed after everything on it.
  std::shared_ptr<kj::AsyncIoContext> ownLoop;
  kj::AsyncIoProvider& io;
  kj::Timer& timer;
  std::string address;
  ClientOptions options;
  RpcClientTls tls;  // options.tls, read

  // The router capability: a promise of one while connecting (calls made meanwhile queue on it,
  // or fail with the connection's error). `stale`: there is none, it failed, close() dropped it
  // or the peer hung up; the next call connects again.
  bool stale = true;
  // Counts connection attempts, so that a late answer to a dropped attempt is not kept.
  uint64_t generation = 0;
  proto::Router::Client router = nullptr;
  kj::Own<RpcConnection> connection;
  kj::Maybe<kj::Promise<void>> watch;  // sets `stale` when the peer hangs up

  proto::Router::Client routerCap() {
    if (!stale) return router;
    drop();
    stale = false;
    const uint64_t gen = ++generation;
    router = proto::Router::Client(
        connectRpc(io, timer, address, millis(options.connectTimeout), tls)
            .then(
                [this, gen](kj::Own<RpcConnection> conn) -> proto::Router::Client {
                  auto cap = conn->bootstrap<proto::Router>();
                  if (gen != generation) return cap;  // dropped meanwhile; conn goes with it
                  watch = conn->onDisconnect()
                              .then([this, gen]() { staleIf(gen); },
                                    [this, gen](kj::Exception&&) { staleIf(gen); })
                              .eagerlyEvaluate(nullptr);
                  connection = kj::mv(conn);
                  return cap;
                },
                [this, gen](kj::Exception&& e) -> proto::Router::Client {
                  staleIf(gen);
                  kj::throwFatalException(kj::mv(e));
                }));
    return router;
  }

  void staleIf(uint64_t gen) {
    if (gen == generation) stale = true;
  }

  void drop() {
    stale = true;
    ++generation;
    watch = nullptr;
    router = nullptr;
    connection = nullptr;
  }

  ~Impl() { drop(); }  // the capability before the connection it came from

  template <typename T>
  T await(kj::Promise<T> promise) {
    if (!ownLoop) {
      throw ClientError(StatusCode::kFailedPrecondition,
                        "info() and forward() need the synchronous Client (constructed without "
                        "an AsyncIoProvider); use infoAsync() / forwardAsync() on this one");
    }
    try {
      return promise.wait(ownLoop->waitScope);
    } catch (const kj::Exception& e) {
      throw ClientError::fromException(e);
    }
  }
};

Client::Client(const std::string& address, ClientOptions options) {
  auto loop = threadLoop();
  kj::AsyncIoProvider& io = *loop->provider;
  impl_ = std::make_unique<Impl>(std::move(loop), io, address, options);
  impl_->await(impl_->routerCap().whenResolved());  // a router that cannot be reached: throw now
}

Client::Client(kj::AsyncIoProvider& io, const std::string& address, ClientOptions options)
    : impl_(std::make_unique<Impl>(nullptr, io, address, options)) {
  impl_->routerCap();  // connects in the background; calls queue until it is up
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

kj::Promise<ModelInfo> Client::infoAsync() {
  Impl& impl = *impl_;
  auto call = kj::Promise<InfoResponse>(impl.routerCap().infoRequest().send());
  return withDeadline(impl.timer, millis(impl.options.timeout), kj::mv(call),
                      "Router.info: no answer from " + impl.address + " within " +
                          std::to_string(impl.options.timeout.count()) + " ms")
      .then([](InfoResponse&& reply) { return toModelInfo(reply.getInfo()); });
}

kj::Promise<ForwardResult> Client::forwardAsync(uint32_t layer, const HiddenStates& hidden,
                                                const ForwardOptions& options) {
  Impl& impl = *impl_;
  // The wire has no code for storage dtypes (f64, FP8, u8): refuse here rather than send bytes
  // the router would read as another dtype.
  if (!isComputeDType(hidden.dtype)) {
    return failed<ForwardResult>(StatusCode::kInvalidArgument,
                                 "hidden: dtype " + std::string(dtypeName(hidden.dtype)) +
                                     " is a checkpoint storage dtype; activations are f32, bf16 "
                                     "or f16");
  }
  if (!options.prevLogits.empty() &&
      (hidden.rows == 0 || options.prevLogits.size() % hidden.rows != 0)) {
    return failed<ForwardResult>(StatusCode::kInvalidArgument,
                                 "prevLogits: " + std::to_string(options.prevLogits.size()) +
                                     " values are not [tokens, experts] for " +
                                     std::to_string(hidden.rows) + " tokens");
  }
  // The request is built now (calls queue on the capability while connecting), so the caller's
  // buffers need not outlive this call.
  auto request = impl.routerCap().forwardRequest();
  request.setLayer(layer);
  setTensor(request.initHidden(), hidden.dtype, hidden.rows, hidden.cols, hidden.data);
  if (!options.prevLogits.empty()) {
    setTensor(request.initPrevLogits(), DType::kF32, hidden.rows,
              static_cast<uint32_t>(options.prevLogits.size() / hidden.rows),
              std::as_bytes(options.prevLogits));
  }
  auto opts = request.initOptions();
  opts.setReturnRouting(options.returnRouting);
  opts.setNoiseSeed(options.noiseSeed);
  const auto timeout = options.timeout.value_or(impl.options.timeout);
  auto call = kj::Promise<ForwardResponse>(request.send());
  return withDeadline(impl.timer, millis(timeout), kj::mv(call),
                      "Router.forward: no answer from " + impl.address + " within " +
                          std::to_string(timeout.count()) + " ms")
      .then([tokens = hidden.rows, cols = hidden.cols,
             wantRouting = options.returnRouting](ForwardResponse&& reply) {
        return toForwardResult(reply, tokens, cols, wantRouting);
      });
}

ModelInfo Client::info() {
  return impl_->await(infoAsync());
}

ForwardResult Client::forward(uint32_t layer, const HiddenStates& hidden,
                              const ForwardOptions& options) {
  return impl_->await(forwardAsync(layer, hidden, options));
}

kj::WaitScope& Client::waitScope() {
  if (!impl_->ownLoop) {
    throw ClientError(StatusCode::kFailedPrecondition,
                      "waitScope(): this Client runs on the caller's event loop");
  }
  return impl_->ownLoop->waitScope;
}

void Client::close() {
  impl_->drop();
}

const std::string& Client::address() const {
  return impl_->address;
}

}  // namespace moe
