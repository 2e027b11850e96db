// Bad input over real processes: every malformed request gets an RPC error naming the problem,
// and the next good request succeeds. Also: a shard that is down or stalled, and broken config or
// weight files at start-up.
#include <signal.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "common/tensor_wire.h"
#include "deploy/local/local_cluster.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

constexpr uint32_t kH = 32;

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterSpec spec;
    spec.model.hiddenSize = kH;
    spec.model.intermediateSize = 48;
    spec.model.numExperts = 4;
    spec.model.topK = 2;
    spec.model.numLayers = 2;
    spec.shardExperts = {{0, 1}, {2, 3}};
    spec.maxTokens = 512;
    spec.shardCallMs = 1500;
    yaml_ = new std::string(writeCluster("bad-input", spec));
    cluster_ = startCluster(*yaml_).release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete yaml_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  // The cluster still serves: a good request right after each bad one.
  void expectServing(TestClient& c) {
    auto x = randomTokens(64, kH, 5);
    auto ok = c.forward(0, x, 64, kH);
    EXPECT_TRUE(ok.value) << "a good request after the bad one failed: " << ok.error;
  }

  static std::string* yaml_;
  static deploy::LocalCluster* cluster_;
};
std::string* BadInputTest::yaml_ = nullptr;
deploy::LocalCluster* BadInputTest::cluster_ = nullptr;

void setF32(proto::Tensor::Builder t, std::vector<uint32_t> shape, size_t bytes) {
  t.setDtype(proto::DType::F32);
  auto s = t.initShape(static_cast<unsigned>(shape.size()));
  for (unsigned i = 0; i < shape.size(); ++i) s.set(i, shape[i]);
  auto d = t.initData(static_cast<unsigned>(bytes));
  std::memset(d.begin(), 0, bytes);
}

#define EXPECT_RPC_ERROR(outcome, text)                                             \
  do {                                                                              \
    auto&& o_ = (outcome);                                                          \
    EXPECT_FALSE(o_.value) << "expected an error containing: " << (text);           \
    EXPECT_NE(o_.error.find(text), std::string::npos) << "error was: " << o_.error; \
  } while (0)

TEST_F(BadInputTest, WrongHiddenSize) {
  TestClient c(cluster_->routerAddress());
  EXPECT_RPC_ERROR(c.forwardRaw(0,
                                [](auto t) {
                                  setF32(t, {4, kH - 4}, 4 * (kH - 4) * 4);
                                }),
                   "hidden size 32 expected, got 28");
  expectServing(c);
}

TEST_F(BadInputTest, WrongRank) {
  TestClient c(cluster_->routerAddress());
  EXPECT_RPC_ERROR(c.forwardRaw(0, [](auto t) { setF32(t, {kH}, kH * 4); }),
                   "expected a 2-D tensor");
  expectServing(c);
}

TEST_F(BadInputTest, UnknownDtype) {
  TestClient c(cluster_->routerAddress());
  EXPECT_RPC_ERROR(c.forwardRaw(0,
                                [](auto t) {
                                  setF32(t, {2, kH}, 2 * kH * 4);
                                  t.setDtype(static_cast<proto::DType>(9));
                                }),
                   "unknown dtype code 9");
  expectServing(c);
}

TEST_F(BadInputTest, UnknownLayer) {
  TestClient c(cluster_->routerAddress());
  auto x = randomTokens(4, kH, 1);
  EXPECT_RPC_ERROR(c.forward(7, x, 4, kH),
                   "layer 7 is not an MoE layer of this model (MoE layers: 0, 1)");
  expectServing(c);
}

TEST_F(BadInputTest, ZeroTokens) {
  TestClient c(cluster_->routerAddress());
  EXPECT_RPC_ERROR(c.forwardRaw(0, [](auto t) { setF32(t, {0, kH}, 0); }), "zero tokens");
  expectServing(c);
}

TEST_F(BadInputTest, TooManyTokens) {
  TestClient c(cluster_->routerAddress());
  auto x = randomTokens(513, kH, 2);
  EXPECT_RPC_ERROR(c.forward(0, x, 513, kH),
                   "513 tokens exceeds limits.max_tokens_per_request = 512");
  expectServing(c);
}

TEST_F(BadInputTest, NaNAndInf) {
  TestClient c(cluster_->routerAddress());
  auto x = randomTokens(8, kH, 3);
  x[3 * kH + 5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_RPC_ERROR(c.forward(0, x, 8, kH), "token 3 has a non-finite value");
  expectServing(c);
  x[3 * kH + 5] = 0;
  x[6 * kH + 1] = -std::numeric_limits<float>::infinity();
  EXPECT_RPC_ERROR(c.forward(1, x, 8, kH), "token 6 has a non-finite value");
  expectServing(c);
}

TEST_F(BadInputTest, TruncatedData) {
  TestClient c(cluster_->routerAddress());
  EXPECT_RPC_ERROR(c.forwardRaw(0,
                                [](auto t) {
                                  setF32(t, {4, kH}, 4 * kH * 4 - 6);
                                }),
                   "(truncated)");
  expectServing(c);
}

TEST_F(BadInputTest, Bf16InputIsAccepted) {
  TestClient c(cluster_->routerAddress());
  auto ok = c.forwardRaw(0, [](proto::Tensor::Builder t) {
    t.setDtype(proto::DType::BF16);
    auto s = t.initShape(2);
    s.set(0, 3);
    s.set(1, kH);
    auto d = t.initData(3 * kH * 2);
    for (size_t i = 0; i < 3 * kH; ++i) {
      uint16_t v = floatToBf16(0.01f * static_cast<float>(i % 17));
      std::memcpy(d.begin() + 2 * i, &v, 2);
    }
  });
  EXPECT_TRUE(ok.value) << ok.error;
}

TEST_F(BadInputTest, RoutingOptionsThisModelDoesNotHave) {
  TestClient c(cluster_->routerAddress());
  auto x = randomTokens(4, kH, 4);
  ForwardExtras residual;
  residual.prevLogits.assign(4 * 4, 0.5f);
  EXPECT_RPC_ERROR(c.forward(0, x, 4, kH, residual),
                   "prevLogits: model_type 'mixtral' has no gating residual");
  ForwardExtras noise;
  noise.noiseSeed = 7;
  EXPECT_RPC_ERROR(c.forward(0, x, 4, kH, noise),
                   "options.noiseSeed: noisy top-k is off in this cluster (routing.noisy_topk)");
  expectServing(c);
}

// MoE++'s gating residual must match the batch: [T, E] with finite values.
TEST(BadInputMoePlusPlus, MalformedPrevLogits) {
  ClusterSpec spec;
  spec.model.modelType = "MoE++";
  spec.model.hiddenSize = kH;
  spec.model.intermediateSize = 48;
  spec.model.numExperts = 6;  // FFN experts 0, 1; four zero-computation experts
  spec.model.topK = 2;
  spec.model.numLayers = 2;
  spec.shardExperts = {{0}, {1}};
  auto cluster = startCluster(writeCluster("bad-input-moepp", spec));
  ASSERT_TRUE(cluster);
  TestClient c(cluster->routerAddress());
  auto x = randomTokens(4, kH, 6);
  ForwardExtras wrongRows;
  wrongRows.prevLogits.assign(3 * 6, 0.1f);
  wrongRows.prevRows = 3;
  EXPECT_RPC_ERROR(c.forward(1, x, 4, kH, wrongRows), "prevLogits: 3 rows for a batch of 4 tokens");
  ForwardExtras wrongWidth;
  wrongWidth.prevLogits.assign(4 * 5, 0.1f);
  EXPECT_RPC_ERROR(c.forward(1, x, 4, kH, wrongWidth), "prevLogits");
  ForwardExtras nan;
  nan.prevLogits.assign(4 * 6, 0.1f);
  nan.prevLogits[2 * 6 + 3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_RPC_ERROR(c.forward(1, x, 4, kH, nan), "prevLogits: token 2 has a non-finite value");
  ForwardExtras good;
  good.prevLogits.assign(4 * 6, 0.1f);
  good.returnRouting = true;
  auto ok = c.forward(1, x, 4, kH, good);
  ASSERT_TRUE(ok.value) << ok.error;
  EXPECT_EQ(gateLogitValues(*ok.value).size(), 4u * 6u);
  EXPECT_EQ(ok.value->getRouting().getExperts().size(), 4u * 2u);
}

// Huge finite hidden values (issue 15's probe: an OK reply with Inf/NaN rows, or an error blamed on
// a shard): each is either served with finite rows or refused as the client's InvalidArgument
// naming the float32 overflow, never with a shard's name.
TEST_F(BadInputTest, HugeFiniteValuesAreTheClientsError) {
  TestClient c(cluster_->routerAddress());
  int refused = 0;
  for (float v : {1e10f, 1e20f, 1e30f, 1e37f, 3e38f, -3e38f}) {
    SCOPED_TRACE(v);
    auto x = randomTokens(4, kH, 11);
    x[kH + 5] = v;  // token 1, column 5
    auto r = c.forward(0, x, 4, kH);
    if (r.value) {
      for (float y : outputValues(*r.value))
        ASSERT_TRUE(std::isfinite(y)) << "an OK reply with " << y;
    } else {
      ++refused;
      std::cout << v << " → " << r.error << "\n";
      EXPECT_EQ(r.error.find("remote exception: InvalidArgument: "), 0u) << r.error;
      EXPECT_NE(r.error.find("overflow"), std::string::npos) << r.error;
      EXPECT_NE(r.error.find("token 1"), std::string::npos) << r.error;
      EXPECT_EQ(r.error.find("shard"), std::string::npos) << r.error;
    }
  }
  EXPECT_GE(refused, 2);  // 3e38 cannot pass the gate, nor 1e20 the expert FFN
  expectServing(c);
}

// Malformed ExpertShard.run calls straight to a shard: the shard rejects each and keeps serving.
TEST_F(BadInputTest, ShardRejectsMalformedRuns) {
  const auto& shard0 = cluster_->config().shards[0];
  TestClient c(shard0.listen);
  auto good = [](proto::ExpertShard::RunParams::Builder p) {
    p.setLayer(0);
    setF32(p.initRows(), {2, kH}, 2 * kH * 4);
    auto segs = p.initSegments(1);
    segs[0].setExpert(1);
    auto idx = segs[0].initRowIndex(2);
    auto wt = segs[0].initWeight(2);
    idx.set(0, 0), idx.set(1, 1), wt.set(0, 0.5f), wt.set(1, 0.25f);
  };
  struct Case {
    const char* expect;
    std::function<void(proto::ExpertShard::RunParams::Builder)> breakIt;
  };
  std::vector<Case> cases = {
      {"expert 3 of layer 0 is not on shard shard-0",
       [](auto p) { p.getSegments()[0].setExpert(3); }},
      {"row index 2 >= 2 rows", [](auto p) { p.getSegments()[0].getRowIndex().set(1, 2); }},
      {"row 0 listed twice", [](auto p) { p.getSegments()[0].getRowIndex().set(1, 0); }},
      {"non-finite weight", [](auto p) { p.getSegments()[0].getWeight().set(0, NAN); }},
      {"layer 5 is not served by shard shard-0", [](auto p) { p.setLayer(5); }},
      {"hidden size 32 expected, got 16",
       [](auto p) {
         setF32(p.initRows(), {4, 16}, 4 * 16 * 4);
       }},
      {"zero rows",
       [](auto p) {
         setF32(p.initRows(), {0, kH}, 0);
       }},
      {"non-finite value",
       [](auto p) {
         auto d = p.getRows().getData();
         float inf = INFINITY;
         std::memcpy(d.begin() + 4 * (kH + 3), &inf, 4);
       }},
  };
  for (auto& tc : cases) {
    SCOPED_TRACE(tc.expect);
    EXPECT_RPC_ERROR(c.run([&](auto p) {
      good(p);
      tc.breakIt(p);
    }),
                     tc.expect);
    auto ok = c.run(good);
    ASSERT_TRUE(ok.value) << ok.error;
  }
  // Segment lengths disagree.
  EXPECT_RPC_ERROR(c.run([&](auto p) {
    good(p);
    p.getSegments()[0].initWeight(1).set(0, 1.0f);
  }),
                   "2 row indices but 1 weights");
  EXPECT_TRUE(c.run(good).value);
}

// A shard that is down: the request fails naming the shard; after a restart, requests succeed.
TEST_F(BadInputTest, ShardDownThenBack) {
  TestClient c(cluster_->routerAddress());
  ASSERT_EQ(kill(cluster_->pidOf("shard-1"), SIGKILL), 0);
  auto x = randomTokens(128, kH, 9);  // 128 tokens × top-2 of 4 experts: both shards are needed
  auto failed = c.forward(0, x, 128, kH);
  EXPECT_RPC_ERROR(failed, "shard shard-1 (" + cluster_->config().shards[1].listen + ")");
  EXPECT_RPC_ERROR(failed, "Unavailable: ");
  auto info = c.routerInfo();
  ASSERT_TRUE(info.value) << info.error;
  EXPECT_FALSE(info.value->getInfo().getReady());
  EXPECT_FALSE(info.value->getInfo().getShards()[1].getReachable());

  ASSERT_TRUE(cluster_->restartShard("shard-1").isOk());
  // The router verifies the restarted shard (Router.info probes at once; otherwise its prober
  // does within ~1 s) before sending it work.
  info = c.routerInfo();
  ASSERT_TRUE(info.value);
  EXPECT_TRUE(info.value->getInfo().getReady());
  auto ok = c.forward(0, x, 128, kH);
  EXPECT_TRUE(ok.value) << ok.error;
}

// A stalled shard (SIGSTOP): the call hits the shard deadline instead of hanging.
TEST_F(BadInputTest, StalledShardHitsDeadline) {
  TestClient c(cluster_->routerAddress());
  const pid_t pid = cluster_->pidOf("shard-0");
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  auto x = randomTokens(128, kH, 10);
  auto failed = c.forward(0, x, 128, kH);
  kill(pid, SIGCONT);
  EXPECT_RPC_ERROR(failed, "shard shard-0");
  EXPECT_NE(failed.error.find("did not answer within 1500 ms"), std::string::npos) << failed.error;
  expectServing(c);
}

// Broken config and weight files stop start-up with a message naming the file and the problem.
TEST(StartupErrors, BrokenConfigAndWeights) {
  const std::string bin = deploy::selfDir();
  ClusterSpec spec;
  spec.model.hiddenSize = 16;
  spec.model.intermediateSize = 24;
  spec.model.numExperts = 2;
  spec.model.topK = 1;
  spec.shardExperts = {{0, 1}};
  const std::string yaml = writeCluster("startup", spec);
  const std::string dir = std::filesystem::path(yaml).parent_path().string();

  // Unknown key, with its line.
  std::ofstream(dir + "/typo.yaml")
      << "model:\n  path: model\nshards:\n  - name: a\n    listen: 127.0.0.1:1\n"
         "    experts: [0, 1]\n    expertz: [2]\n";
  auto [code, out] = runCommand(bin + "/moe-router --config " + dir + "/typo.yaml");
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("typo.yaml:7: shards[0].expertz: unknown key"), std::string::npos) << out;

  // Placement naming an expert the model lacks.
  std::ofstream(dir + "/placement.yaml")
      << "model:\n  path: model\nshards:\n  - name: a\n    listen: 127.0.0.1:1\n"
         "    experts: [0, 1, 2]\n";
  std::tie(code, out) =
      runCommand(bin + "/moe-expert --config " + dir + "/placement.yaml --shard a");
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("lists expert 2 but the model has 2 FFN experts"), std::string::npos) << out;

  // Noisy top-k asked of a checkpoint without W_noise: the router names the missing tensor.
  std::ofstream(dir + "/noisy.yaml")
      << "model:\n  path: model\nshards:\n  - {name: a, listen: '127.0.0.1:1', experts: [0, 1]}\n"
         "routing:\n  noisy_topk: {seed: 3}\n";
  std::tie(code, out) = runCommand(bin + "/moe-router --config " + dir + "/noisy.yaml");
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("routing.noisy_topk is on but the checkpoint has no noise weights: tensor "
                     "model.layers.0.block_sparse_moe.w_noise.weight missing"),
            std::string::npos)
      << out;

  // A shared expert placed on a shard of a model that has none.
  std::ofstream(dir + "/shared.yaml")
      << "model:\n  path: model\nshards:\n  - {name: a, listen: '127.0.0.1:1', experts: [0, 1], "
         "shared_expert: true}\n";
  std::tie(code, out) = runCommand(bin + "/moe-expert --config " + dir + "/shared.yaml --shard a");
  EXPECT_EQ(code, 2);
  EXPECT_NE(
      out.find("shard a sets shared_expert: true but the model (mixtral) has no shared expert"),
      std::string::npos)
      << out;

  // Truncated weights file.
  const auto weights = dir + "/model/model.safetensors";
  std::filesystem::resize_file(weights, std::filesystem::file_size(weights) - 100);
  std::tie(code, out) = runCommand(bin + "/moe-expert --config " + yaml + " --shard shard-0");
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find(weights), std::string::npos) << out;

  // Missing config.json.
  std::filesystem::remove(dir + "/model/config.json");
  std::tie(code, out) = runCommand(bin + "/moe-router --config " + yaml);
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("config.json"), std::string::npos) << out;
}

// Issue 15's probe: the number 1e400 in config.json or a safetensors header ended start-up with
// SIGABRT (an uncaught JSON out_of_range). Every malformed number now ends it with exit 2 and a
// message naming the file, in both services.
TEST(StartupErrors, MalformedNumbersExit2NamingTheFile) {
  const std::string bin = deploy::selfDir();
  ClusterSpec spec;
  spec.model.hiddenSize = 16;
  spec.model.intermediateSize = 24;
  spec.model.numExperts = 2;
  spec.model.topK = 1;
  spec.shardExperts = {{0, 1}};
  const std::string yaml = writeCluster("malformed-numbers", spec);
  const std::string model = std::filesystem::path(yaml).parent_path().string() + "/model";
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  auto write = [](const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  const std::string config = read(model + "/config.json");
  const std::string weights = read(model + "/model.safetensors");
  uint64_t headerLen = 0;
  std::memcpy(&headerLen, weights.data(), 8);
  const std::string header = weights.substr(8, headerLen), data = weights.substr(8 + headerLen);
  // Replaces the first `from` in `text` by `to`.
  auto replaced = [](std::string text, const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
  };
  auto withHeader = [&](const std::string& h) {
    std::string out(8, '\0');
    const uint64_t n = h.size();
    std::memcpy(out.data(), &n, 8);
    return out + h + data;
  };
  const std::string hidden = "\"hidden_size\": 16";
  const std::string offsets = "\"data_offsets\":[0,";
  ASSERT_NE(config.find(hidden), std::string::npos) << config;
  struct Case {
    std::string file;  // config.json or model.safetensors
    std::string from, to;
  };
  const std::vector<Case> cases = {
      {"config.json", hidden, "\"hidden_size\": 1e400"},
      {"config.json", hidden, "\"hidden_size\": -1e400"},
      {"config.json", hidden, "\"hidden_size\": 18446744073709551616"},
      {"config.json", hidden, "\"hidden_size\": 1.5"},
      {"config.json", hidden, "\"hidden_size\": NaN"},
      {"config.json", hidden, "\"hidden_size\": 0x10"},
      {"config.json", hidden, "\"hidden_size\": 1e"},
      {"model.safetensors", offsets, "\"data_offsets\":[1e400,"},
      {"model.safetensors", offsets, "\"data_offsets\":[-1,"},
      {"model.safetensors", offsets, "\"data_offsets\":[1.5,"},
      {"model.safetensors", offsets, "\"data_offsets\":[18446744073709551616,"},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.file + ": " + tc.to);
    if (tc.file == "config.json") {
      write(model + "/config.json", replaced(config, tc.from, tc.to));
    } else {
      write(model + "/model.safetensors", withHeader(replaced(header, tc.from, tc.to)));
    }
    for (const std::string& cmd :
         {"/moe-router --config " + yaml, "/moe-expert --config " + yaml + " --shard shard-0"}) {
      auto [code, out] = runCommand(bin + cmd);
      EXPECT_EQ(code, 2) << cmd << "\n" << out;
      EXPECT_NE(out.find(model + "/" + tc.file), std::string::npos) << cmd << "\n" << out;
    }
    write(model + "/config.json", config);
    write(model + "/model.safetensors", weights);
  }
}

}  // namespace
}  // namespace moe::testing
