// moe::Client: calls a moe-cluster router from a C++ inference engine — one MoE layer per call.
// Installed with the library (`cmake --install`) and found with find_package(MoeCluster), target
// MoeCluster::client. The wire format (Cap'n Proto, common/proto/moe.capnp) stays behind this
// interface: nothing here needs the schema's generated headers.
//
// Two forms with the same calls:
//   - synchronous: `moe::Client client("127.0.0.1:7100");` connects at once and runs on a KJ
//     event loop of its own, shared by the synchronous Clients of the constructing thread;
//     info() and forward() block and throw moe::ClientError.
//   - kj-promise: `moe::Client client(io.provider, "127.0.0.1:7100");` runs on the caller's KJ
//     event loop; infoAsync() / forwardAsync() return kj::Promise and many may be in flight on the
//     one connection. A failed promise carries a kj::Exception; ClientError::fromException tells
//     its code. The synchronous form has them too (wait on waitScope()).
// A Client is used from the thread that made it; its promises must not outlive it.
#pragma once

#include <kj/async-io.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/result.h"

#define MOE_CLIENT_API __attribute__((visibility("default")))

namespace moe {

// A failed call: the status code the server answered with (or the client's own: Unavailable when
// the router cannot be reached, DeadlineExceeded when the call's timeout passed first), mapped
// from the RPC exception by common/rpc_status (the one table of codes), and the server's message
// ("hidden size 64 expected, got 32" names `hidden`). what() is "<Code>: <message>".
class MOE_CLIENT_API ClientError : public std::runtime_error {
 public:
  ClientError(StatusCode code, const std::string& message);
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // The error a failed promise of the kj form stands for.
  static ClientError fromException(const kj::Exception& e);

 private:
  StatusCode code_;
  std::string message_;
};

// What the router serves (Router.info).
struct ModelInfo {
  std::string family;         // config.json model_type: "mixtral", "qwen2_moe", "deepseek_v3", …
  std::string familyName;     // the family as the router names it ("Qwen3-MoE"); "" if not said
  std::string routingRecipe;  // the routing rule in use ("softmax, top-k, renormalize"), or ""
  uint32_t hiddenSize = 0;
  uint32_t intermediateSize = 0;
  uint32_t numLayers = 0;           // decoder layers (num_hidden_layers)
  std::vector<uint32_t> moeLayers;  // which of them are MoE layers: the `layer` of forward()
  uint32_t numExperts = 0;          // per MoE layer, MoE++ zero-computation experts included
  uint32_t topK = 0;
  uint32_t maxTokens = 0;           // tokens one forward() may carry
  std::vector<DType> inputDtypes;   // what forward() accepts: f32, bf16, f16
  DType outputDtype = DType::kF32;  // what it returns
  // The dtype the cluster's experts are held and computed in (config model.dtype resolved);
  // f32 for routers that do not report it. Outputs of a bf16 cluster carry bf16 rounding.
  DType computeDtype = DType::kF32;
  std::string fingerprint;    // the checkpoint's fingerprint; "" when not reported
  std::string serverVersion;  // moe-cluster version of the router
  bool ready = false;         // every expert reachable on at least one shard
};

// Input rows: a view (not owned) of `rows` × `cols` little-endian elements of `dtype`,
// row-major. forward() copies them into the request before it returns.
struct MOE_CLIENT_API HiddenStates {
  DType dtype = DType::kF32;
  uint32_t rows = 0;  // tokens
  uint32_t cols = 0;  // hidden size
  std::span<const std::byte> data;

  // [rows, values.size() / rows] f32.
  static HiddenStates f32(std::span<const float> values, uint32_t rows);
  // [rows, values.size() / rows] bf16 or f16 (raw 16-bit patterns).
  static HiddenStates half(DType dtype, std::span<const uint16_t> values, uint32_t rows);
};

// Owned f32 rows.
struct FloatMatrix {
  uint32_t rows = 0, cols = 0;
  std::vector<float> values;  // [rows, cols]
  float at(uint32_t r, uint32_t c) const { return values[size_t{r} * cols + c]; }
};

struct ForwardOptions {
  // MoE++ gating residual: the previous MoE layer's ForwardResult::logits for the same tokens,
  // [tokens, experts] f32; empty for the first MoE layer and for models without a residual.
  std::span<const float> prevLogits;
  bool returnRouting = false;  // fill ForwardResult::routing (and logits)
  uint64_t noiseSeed = 0;      // noisy top-k: this call's seed; 0 = the cluster's configured one
  std::optional<std::chrono::milliseconds> timeout;  // default: ClientOptions::timeout
};

// The routing decision of one call: token t's slot j < k chose experts[t·k + j] with final
// weight weights[t·k + j] (0 when dropped: over capacity, or its expert had no replica left).
struct RoutingResult {
  uint32_t k = 0;
  std::vector<uint32_t> experts;  // [tokens, k]
  std::vector<float> weights;     // [tokens, k]
  std::vector<bool> dropped;      // [tokens, k]
};

struct ForwardResult {
  FloatMatrix output;                    // [tokens, hidden] f32
  std::optional<RoutingResult> routing;  // when ForwardOptions::returnRouting
  // This layer's gate logits [tokens, experts] f32: for models with a gating residual (pass them
  // as the next MoE layer's prevLogits), or when returnRouting.
  std::optional<FloatMatrix> logits;
  uint64_t serverMicros = 0;  // the router's time for the call, receipt to reply
};

// TLS to a router whose cluster config has `tls:` (README "TLS"): PEM file paths, as in that
// section. The router's certificate must be signed by `ca` and name the host of the address (a DNS
// name, or an IP address as an IP SAN). `cert` and `key` are this client's identity; leave both
// empty only for a cluster with tls.client_auth: false. The files are read when the Client is
// made (ClientError FailedPrecondition naming the file if one cannot be used).
struct ClientTls {
  std::string ca;
  std::string cert;
  std::string key;
};

struct ClientOptions {
  std::chrono::milliseconds timeout{60000};        // per call, unless ForwardOptions says
  std::chrono::milliseconds connectTimeout{5000};  // per connection attempt
  std::optional<ClientTls> tls;                    // unset: plaintext
};

class MOE_CLIENT_API Client {
 public:
  // Synchronous form: connects to "host:port" now (ClientError Unavailable when it cannot), on
  // this thread's loop for synchronous Clients — so not on a thread that runs a KJ loop of its
  // own (ClientError FailedPrecondition: use the promise form there).
  explicit Client(const std::string& address, ClientOptions options = {});
  // Promise form on the caller's event loop: connects in the background; calls wait for it.
  Client(kj::AsyncIoProvider& io, const std::string& address, ClientOptions options = {});
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Synchronous form only (ClientError FailedPrecondition in the promise form).
  ModelInfo info();
  ForwardResult forward(uint32_t layer, const HiddenStates& hidden,
                        const ForwardOptions& options = {});

  kj::Promise<ModelInfo> infoAsync();
  kj::Promise<ForwardResult> forwardAsync(uint32_t layer, const HiddenStates& hidden,
                                          const ForwardOptions& options = {});
  // The synchronous form's event loop (this thread's), to wait on promises of the calls above.
  kj::WaitScope& waitScope();

  // Drops the connection; a later call connects again. Calls in flight fail (Unavailable).
  void close();
  const std::string& address() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
