// Integration-test support: tiny synthetic checkpoints, cluster YAML with free loopback ports,
// real clusters started through deploy/local's LocalCluster, and an RPC client for the tests.
#pragma once

#include <kj/async-io.h>

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"
#include "deploy/local/local_cluster.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::testing {

uint16_t freePort();

// A fresh directory under the gtest temp dir, unique per call.
std::string freshDir(const std::string& name);

struct ClusterSpec {
  SyntheticModelSpec model;
  std::vector<std::vector<uint32_t>> shardExperts;  // experts per shard
  uint32_t maxTokens = 4096;
  uint32_t shardCallMs = 10000;
  uint32_t requestMs = 20000;
  RoutingOptions routing;      // written as the `routing:` section
  int sharedExpertShard = -1;  // index of the shard with shared_expert: true (-1: on the router)
  std::string routerYaml;      // more keys of the router: section, e.g. "  batching: {...}\n"
  std::string modelYaml;       // more keys of the model: section, e.g. "  dtype: bf16\n"
  bool adminPorts = false;     // an admin plane (/metrics) on the router and every shard
  std::string topLevelYaml;    // more top-level sections, e.g. "metrics: {per_expert: off}\n"
  std::string modelPath;       // serve this existing checkpoint instead of writing `model`
};

// What a forward call may add to the tokens.
struct ForwardExtras {
  std::vector<float> prevLogits;  // [rows, E] MoE++ gating residual, or empty
  uint32_t prevRows = 0;          // rows of prevLogits; 0: the batch's T
  bool returnRouting = false;
  uint64_t noiseSeed = 0;
};

// Writes the checkpoint and the YAML into a fresh directory; returns the YAML path.
std::string writeCluster(const std::string& name, const ClusterSpec& spec);

// Starts every process of the cluster (logs in <dir>/logs) and waits until ready.
std::unique_ptr<deploy::LocalCluster> startCluster(const std::string& yamlPath);

// A result or the error message of one RPC.
template <typename T>
struct Outcome {
  std::optional<T> value;
  std::string error;
  kj::Exception::Type type = kj::Exception::Type::FAILED;
};

// One connection to a router or a shard, on this thread's own event loop.
class TestClient {
 public:
  explicit TestClient(const std::string& address, const RpcClientTls& tls = {});
  kj::WaitScope& waitScope() { return io_.waitScope; }

  using ForwardResponse = capnp::Response<proto::Router::ForwardResults>;
  using RunResponse = capnp::Response<proto::ExpertShard::RunResults>;

  // Router.forward with an f32 tensor [T, H] of `x`.
  Outcome<ForwardResponse> forward(uint32_t layer, const std::vector<float>& x, uint32_t T,
                                   uint32_t H);
  Outcome<ForwardResponse> forward(uint32_t layer, const std::vector<float>& x, uint32_t T,
                                   uint32_t H, const ForwardExtras& extras);
  // The same call left in flight, to send several at once; waitAll collects them in order.
  kj::Promise<ForwardResponse> forwardAsync(uint32_t layer, const std::vector<float>& x, uint32_t T,
                                            uint32_t H, const ForwardExtras& extras);
  std::vector<Outcome<ForwardResponse>> waitAll(kj::Array<kj::Promise<ForwardResponse>> calls);
  // Router.forward with a tensor the caller fills (for malformed input).
  Outcome<ForwardResponse> forwardRaw(uint32_t layer,
                                      kj::Function<void(proto::Tensor::Builder)> fill);
  Outcome<capnp::Response<proto::Router::InfoResults>> routerInfo();
  Outcome<RunResponse> run(kj::Function<void(proto::ExpertShard::RunParams::Builder)> fill);

 private:
  template <typename T>
  Outcome<T> wait(kj::Promise<T> promise);
  kj::AsyncIoContext io_;
  kj::Own<RpcConnection> conn_;
};

// The small model most cluster tests serve: hidden 64, intermediate 96, 8 experts, top-2, 2 MoE
// layers, f32 (so outputs compare at fp32 rounding).
SyntheticModelSpec smallF32Model();

std::vector<float> randomTokens(uint32_t T, uint32_t H, uint64_t seed);
// max |got - want| / max |want|: the relative error the parity checks bound.
double maxRelErr(const std::vector<float>& got, const std::vector<float>& want);
std::vector<float> outputValues(const TestClient::ForwardResponse& r);
std::vector<float> gateLogitValues(const TestClient::ForwardResponse& r);

// GET http://address/path over a fresh connection: (status code, body); status -1 when the
// server does not answer.
std::pair<int, std::string> httpGet(const std::string& address, const std::string& path);
// POST `body` to http://address/path the same way.
std::pair<int, std::string> httpPost(const std::string& address, const std::string& path,
                                     const std::string& body);

// Starts `args` (argv[0] a path) as a child process, its stderr appended to `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log);

// Runs a shell command, returns (exit status, combined stdout+stderr).
std::pair<int, std::string> runCommand(const std::string& command);

}  // namespace moe::testing
