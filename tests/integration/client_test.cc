// moe::Client (client/client.h) against real clusters on loopback: info() reports the model the
// cluster serves; forward() returns what the in-process reference layer computes (f32, bf16 and
// f16 input, routing, MoE++ logits chained through prevLogits); the kj-promise form keeps many
// calls in flight on one connection, queued while it connects; every failure arrives as a
// ClientError with the code of common/rpc_status and the server's message; close() reconnects.
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "client/client.h"
#include "client/reference/in_process_layer.h"
#include "common/version.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kH = 64;

// The small f32 model of the other cluster tests on two shards, with a small router queue so that
// one request can exceed it (ResourceExhausted).
class ClientTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kMaxQueued = 300;

  static void SetUpTestSuite() {
    ClusterSpec spec;
    spec.model = smallF32Model();
    spec.shardExperts = {{0, 1, 2, 3}, {4, 5, 6, 7}};
    spec.routerYaml = "  max_queued_tokens: " + std::to_string(kMaxQueued) + "\n";
    cluster_ = startCluster(writeCluster("client", spec)).release();
    if (cluster_ == nullptr) return;
    auto backend = kernels::createBackend(kernels::BackendKind::kReference);
    reference_ = client::InProcessModel::load(cluster_->config().modelPath,
                                              std::move(backend).value(), {0, 1})
                     .value()
                     .release();
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete cluster_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  static std::vector<float> referenceOutput(uint32_t layer, const std::vector<float>& x, uint32_t T,
                                            client::ReferenceRouting* routing) {
    std::vector<float> want(size_t{T} * kH);
    auto s = reference_->forward(layer, x, T, want, {}, routing);
    EXPECT_TRUE(s.isOk()) << s.message();
    return want;
  }

  static deploy::LocalCluster* cluster_;
  static client::InProcessModel* reference_;
};
deploy::LocalCluster* ClientTest::cluster_ = nullptr;
client::InProcessModel* ClientTest::reference_ = nullptr;

// Per token, the set of experts (order among equal scores is not part of the contract).
void expectSameExperts(const RoutingResult& got, const client::ReferenceRouting& want, uint32_t T) {
  ASSERT_EQ(got.k, want.k);
  ASSERT_EQ(got.experts.size(), size_t{T} * want.k);
  ASSERT_EQ(got.weights.size(), got.experts.size());
  for (uint32_t t = 0; t < T; ++t) {
    std::vector<std::pair<uint32_t, float>> a, b;
    for (uint32_t j = 0; j < want.k; ++j) {
      a.emplace_back(got.experts[t * want.k + j], got.weights[t * want.k + j]);
      b.emplace_back(want.ids[t * want.k + j], want.weights[t * want.k + j]);
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    for (uint32_t j = 0; j < want.k; ++j) {
      EXPECT_EQ(a[j].first, b[j].first) << "token " << t;
      EXPECT_NEAR(a[j].second, b[j].second, 1e-5) << "token " << t;
    }
  }
}

TEST_F(ClientTest, InfoDescribesTheServedModel) {
  Client client(cluster_->routerAddress());
  const ModelInfo info = client.info();
  EXPECT_EQ(info.family, "mixtral");
  EXPECT_EQ(info.familyName, "Mixtral");
  EXPECT_EQ(info.routingRecipe, "softmax, top-k, renormalize");
  EXPECT_EQ(info.hiddenSize, kH);
  EXPECT_EQ(info.intermediateSize, 96u);
  EXPECT_EQ(info.numLayers, 2u);
  EXPECT_EQ(info.moeLayers, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(info.numExperts, 8u);
  EXPECT_EQ(info.topK, 2u);
  EXPECT_EQ(info.maxTokens, 4096u);
  EXPECT_EQ(info.inputDtypes, (std::vector<DType>{DType::kF32, DType::kBF16, DType::kF16}));
  EXPECT_EQ(info.outputDtype, DType::kF32);
  EXPECT_EQ(info.fingerprint.size(), 32u) << info.fingerprint;
  EXPECT_EQ(info.serverVersion, MOE_VERSION);
  EXPECT_TRUE(info.ready);
}

TEST_F(ClientTest, ForwardMatchesTheReferenceLayer) {
  Client client(cluster_->routerAddress());
  for (uint32_t T : {1u, 7u, 64u}) {
    for (uint32_t layer : {0u, 1u}) {
      SCOPED_TRACE("T " + std::to_string(T) + " layer " + std::to_string(layer));
      const auto x = randomTokens(T, kH, 100 + T + layer);
      ForwardOptions options;
      options.returnRouting = true;
      const ForwardResult got = client.forward(layer, HiddenStates::f32(x, T), options);
      client::ReferenceRouting routing;
      const auto want = referenceOutput(layer, x, T, &routing);
      EXPECT_EQ(got.output.rows, T);
      EXPECT_EQ(got.output.cols, kH);
      EXPECT_LE(maxRelErr(got.output.values, want), 1e-5);
      ASSERT_TRUE(got.routing.has_value());
      expectSameExperts(*got.routing, routing, T);
      ASSERT_TRUE(got.logits.has_value());  // asked for with the routing
      EXPECT_EQ(got.logits->rows, T);
      EXPECT_EQ(got.logits->cols, 8u);
      EXPECT_LE(maxRelErr(got.logits->values, routing.logits), 1e-5);
      EXPECT_GT(got.serverMicros, 0u);
    }
  }
  // Without returnRouting there is neither routing nor logits (the model has no residual).
  const auto x = randomTokens(3, kH, 9);
  const ForwardResult plain = client.forward(0, HiddenStates::f32(x, 3));
  EXPECT_FALSE(plain.routing.has_value());
  EXPECT_FALSE(plain.logits.has_value());
}

TEST_F(ClientTest, HalfPrecisionInputs) {
  Client client(cluster_->routerAddress());
  const uint32_t T = 16;
  const auto x = randomTokens(T, kH, 21);
  struct Case {
    DType dtype;
    uint16_t (*encode)(float);
    float (*decode)(uint16_t);
  };
  for (const Case& c :
       {Case{DType::kBF16, floatToBf16, bf16ToFloat}, Case{DType::kF16, floatToF16, f16ToFloat}}) {
    SCOPED_TRACE(std::string(dtypeName(c.dtype)));
    std::vector<uint16_t> bits(x.size());
    std::vector<float> rounded(x.size());  // what the router sees, for the reference
    for (size_t i = 0; i < x.size(); ++i) {
      bits[i] = c.encode(x[i]);
      rounded[i] = c.decode(bits[i]);
    }
    const ForwardResult got = client.forward(0, HiddenStates::half(c.dtype, bits, T));
    EXPECT_LE(maxRelErr(got.output.values, referenceOutput(0, rounded, T, nullptr)), 1e-5);
  }
}

// The promise form on the test's own event loop: calls made right after construction queue
// until the connection is up; 16 in flight at once each get their own answer.
TEST_F(ClientTest, PromiseFormKeepsManyCallsInFlight) {
  auto io = kj::setupAsyncIo();
  Client client(*io.provider, cluster_->routerAddress());
  // Synchronous calls need the synchronous form, which cannot run beside this thread's loop.
  for (const auto& misuse : std::vector<std::function<void()>>{
           [&] { client.info(); },
           [&] { Client sync(cluster_->routerAddress()); },
       }) {
    try {
      misuse();
      ADD_FAILURE() << "no error";
    } catch (const ClientError& e) {
      EXPECT_EQ(e.code(), StatusCode::kFailedPrecondition) << e.what();
    }
  }
  constexpr uint32_t kCalls = 16, T = 4;
  std::vector<std::vector<float>> inputs;
  kj::Vector<kj::Promise<ForwardResult>> calls;
  for (uint32_t i = 0; i < kCalls; ++i) {
    inputs.push_back(randomTokens(T, kH, 300 + i));
    calls.add(client.forwardAsync(i % 2, HiddenStates::f32(inputs.back(), T)));
  }
  auto info = client.infoAsync().wait(io.waitScope);
  EXPECT_EQ(info.hiddenSize, kH);
  auto results = kj::joinPromises(calls.releaseAsArray()).wait(io.waitScope);
  ASSERT_EQ(results.size(), kCalls);
  for (uint32_t i = 0; i < kCalls; ++i) {
    EXPECT_LE(maxRelErr(results[i].output.values, referenceOutput(i % 2, inputs[i], T, nullptr)),
              1e-5)
        << "call " << i;
  }
}

// MoE++: each layer's logits feed the next layer's gate (prevLogits), as an engine chains them.
TEST(ClientMoePlusPlus, LogitsChainThroughPrevLogits) {
  ClusterSpec spec;
  spec.model = smallF32Model();
  spec.model.modelType = "MoE++";
  spec.model.numExperts = 10;  // 6 FFN + 4 zero-computation experts
  spec.model.numLayers = 3;
  spec.shardExperts = {{0, 1, 2}, {3, 4, 5}};
  auto cluster = startCluster(writeCluster("client-moepp", spec));
  ASSERT_TRUE(cluster);
  auto reference = client::InProcessModel::load(
      cluster->config().modelPath,
      std::move(kernels::createBackend(kernels::BackendKind::kReference)).value(), {0, 1, 2});
  ASSERT_TRUE(reference.isOk()) << reference.error();

  Client client(cluster->routerAddress());
  const ModelInfo info = client.info();
  ASSERT_EQ(info.moeLayers, (std::vector<uint32_t>{0, 1, 2}));
  const uint32_t T = 9;
  const auto x = randomTokens(T, kH, 77);
  std::vector<float> logits, referenceLogits;
  for (uint32_t layer : info.moeLayers) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    ForwardOptions options;
    options.prevLogits = logits;
    const ForwardResult got = client.forward(layer, HiddenStates::f32(x, T), options);
    ASSERT_TRUE(got.logits.has_value()) << "a model with a gating residual returns its logits";
    std::vector<float> want(size_t{T} * kH);
    client::ReferenceRequest request;
    request.prevLogits = referenceLogits;
    client::ReferenceRouting routing;
    ASSERT_TRUE(reference.value()->forward(layer, x, T, want, request, &routing).isOk());
    EXPECT_LE(maxRelErr(got.output.values, want), 1e-5);
    logits = got.logits->values;
    referenceLogits = routing.logits;
  }
}

// Every failure is a ClientError with the code the server (or the client) decided and a message
// naming the problem.
TEST_F(ClientTest, ErrorsCarryTheServersCodeAndMessage) {
  const std::string router = cluster_->routerAddress();
  struct Case {
    std::string name;
    std::function<void(Client&)> call;
    StatusCode code;
    std::string message;
  };
  const auto x = randomTokens(4, kH, 5);
  auto nan = x;
  nan[kH + 3] = std::numeric_limits<float>::quiet_NaN();
  const auto big = randomTokens(kMaxQueued + 1, kH, 6);
  const std::vector<float> oddLogits(7);
  const std::vector<Case> cases = {
      {"hidden size", [&](Client& c) { c.forward(0, HiddenStates::f32(x, 8)); },
       StatusCode::kInvalidArgument, "hidden size 64 expected, got 32"},
      {"unknown layer", [&](Client& c) { c.forward(5, HiddenStates::f32(x, 4)); },
       StatusCode::kInvalidArgument, "layer 5 is not an MoE layer"},
      {"non-finite", [&](Client& c) { c.forward(0, HiddenStates::f32(nan, 4)); },
       StatusCode::kInvalidArgument, "token 1 has a non-finite value"},
      {"prevLogits without a residual",
       [&](Client& c) {
         ForwardOptions o;
         std::vector<float> logits(4 * 8);
         o.prevLogits = logits;
         c.forward(0, HiddenStates::f32(x, 4), o);
       },
       StatusCode::kInvalidArgument, "prevLogits: model_type 'mixtral' has no gating residual"},
      {"prevLogits shape (checked by the client)",
       [&](Client& c) {
         ForwardOptions o;
         o.prevLogits = oddLogits;
         c.forward(0, HiddenStates::f32(x, 4), o);
       },
       StatusCode::kInvalidArgument, "prevLogits: 7 values are not [tokens, experts]"},
      {"storage dtype (checked by the client)",
       [&](Client& c) {
         const std::vector<std::byte> bytes(4 * kH);
         c.forward(0, HiddenStates{DType::kU8, 4, kH, bytes});
       },
       StatusCode::kInvalidArgument,
       "hidden: dtype u8 is a checkpoint storage dtype; activations are f32, bf16 or f16"},
      {"router queue full",
       [&](Client& c) { c.forward(0, HiddenStates::f32(big, kMaxQueued + 1)); },
       StatusCode::kResourceExhausted, "exceeds router.max_queued_tokens = 300"},
      {"no router there", [&](Client&) { Client other("127.0.0.1:" + std::to_string(freePort())); },
       StatusCode::kUnavailable, "cannot connect to 127.0.0.1:"},
      {"deadline",
       [&](Client& c) {
         const pid_t pid = cluster_->pidOf("router");
         ASSERT_EQ(kill(pid, SIGSTOP), 0);
         ForwardOptions o;
         o.timeout = 300ms;
         try {
           c.forward(0, HiddenStates::f32(x, 4), o);
         } catch (...) {
           kill(pid, SIGCONT);
           throw;
         }
         kill(pid, SIGCONT);
       },
       StatusCode::kDeadlineExceeded,
       "Router.forward: no answer from " + router + " within 300 ms"},
  };
  Client client(router);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    try {
      c.call(client);
      ADD_FAILURE() << "no error";
    } catch (const ClientError& e) {
      EXPECT_EQ(e.code(), c.code) << e.what();
      EXPECT_NE(e.message().find(c.message), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()), std::string(statusCodeName(c.code)) + ": " + e.message());
    }
    // The connection still serves the next call.
    EXPECT_EQ(client.forward(0, HiddenStates::f32(x, 4)).output.rows, 4u);
  }
}

// close() drops the connection; the next call connects again.
TEST_F(ClientTest, CloseThenCallReconnects) {
  Client client(cluster_->routerAddress());
  const auto x = randomTokens(2, kH, 8);
  const auto before = client.forward(1, HiddenStates::f32(x, 2)).output.values;
  client.close();
  const auto after = client.forward(1, HiddenStates::f32(x, 2)).output.values;
  EXPECT_EQ(before, after);
}

}  // namespace
}  // namespace moe::testing
