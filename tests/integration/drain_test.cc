// A shard process draining on SIGTERM, over real processes: a call it accepted before the signal
// is answered, a call after it is refused with Unavailable (so a router fails over), info and
// /readyz say draining, and the process exits as soon as it is idle, or at the drain deadline.
// The test starts moe-expert itself (not through LocalCluster), since the shard exiting on its own
// is the point, and one client event loop holds a call in flight while it sends the others.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "common/model_fingerprint.h"
#include "common/rpc_status.h"
#include "common/tensor_wire.h"
#include "deploy/local/child_process.h"
#include "deploy/local/local_cluster.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kSmallHidden = 32;

using RunResponse = capnp::Response<proto::ExpertShard::RunResults>;
using InfoResponse = capnp::Response<proto::ExpertShard::InfoResults>;

long msSince(Clock::time_point t) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// One moe-expert process (shard "shard-0", every expert of a tiny model, an admin port) with the
// given drain_ms; a 1 s coalescing window holds a lone call for company, so a call is reliably
// "accepted, not finished" while the test signals the process.
class ShardProcess {
 public:
  explicit ShardProcess(uint32_t drainMs, uint32_t hidden = kSmallHidden)
      : dir_(freshDir("drain")) {
    SyntheticModelSpec model;
    model.hiddenSize = hidden;
    model.intermediateSize = 48;
    model.numExperts = 4;
    model.topK = 2;
    model.numLayers = 2;
    EXPECT_TRUE(writeSyntheticCheckpoint(model, dir_ + "/model").isOk());
    listen_ = "127.0.0.1:" + std::to_string(freePort());
    admin_ = "127.0.0.1:" + std::to_string(freePort());
    std::ofstream(dir_ + "/cluster.yaml")
        << "model:\n  path: model\nexpert:\n  batching: {window_us: 1000000}\n"
        << "shards:\n  - {name: shard-0, listen: '" << listen_ << "', admin: '" << admin_
        << "', device: cpu, threads: 1, experts: '0-3'}\n"
        << "timeouts: {drain_ms: " << drainMs << "}\n";
    deploy::ChildOptions options;
    options.logPath = logPath();
    auto pid = deploy::spawnChild({deploy::selfDir() + "/moe-expert", "--config",
                                   dir_ + "/cluster.yaml", "--shard", "shard-0"},
                                  options);
    EXPECT_TRUE(pid.isOk()) << pid.error();
    if (pid) pid_ = pid.value();
  }
  ~ShardProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }
  const std::string& listen() const { return listen_; }
  const std::string& admin() const { return admin_; }
  std::string modelDir() const { return dir_ + "/model"; }
  std::string logPath() const { return dir_ + "/shard-0.log"; }
  std::string log() const {
    std::ifstream in(logPath());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // The exit status once the process has exited within `ms`, else nullopt.
  std::optional<int> waitExit(long ms) {
    const auto start = Clock::now();
    while (pid_ > 0 && msSince(start) <= ms) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

 private:
  std::string dir_, listen_, admin_;
  pid_t pid_ = -1;
};

// One RPC connection on this thread's event loop; calls can be left in flight.
class ShardConnection {
 public:
  ShardConnection(const std::string& address, uint32_t hidden = kSmallHidden)
      : io_(kj::setupAsyncIo()), hidden_(hidden) {
    const auto start = Clock::now();
    while (!conn_ && msSince(start) < 30000) {  // the shard is loading its weights meanwhile
      try {
        conn_ = connectRpc(*io_.provider, timer(), address, 1000).wait(io_.waitScope);
        info();
      } catch (const kj::Exception&) {
        conn_ = nullptr;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  bool connected() const { return conn_.get() != nullptr; }
  kj::WaitScope& ws() { return io_.waitScope; }
  kj::Timer& timer() { return io_.provider->getTimer(); }

  // A valid call: `rows` rows of layer 0, experts 1 and 2.
  kj::Promise<RunResponse> send(uint32_t rows = 4) {
    auto req = conn_->bootstrap<proto::ExpertShard>().runRequest();
    req.setLayer(0);
    const uint32_t shape[2] = {rows, hidden_};
    auto x = initF32(req.initRows(), shape);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.01f * static_cast<float>(i % 13);
    auto segs = req.initSegments(2);
    for (unsigned s = 0; s < 2; ++s) {
      segs[s].setExpert(s + 1);
      auto idx = segs[s].initRowIndex(rows);
      auto wt = segs[s].initWeight(rows);
      for (unsigned r = 0; r < rows; ++r) idx.set(r, r), wt.set(r, 0.5f);
    }
    return req.send();
  }
  // How a call of `rows` rows ended: its status from the exception (the code from its
  // "Code: message" text or its KJ type), ok with a reply of the right size.
  Status finish(kj::Promise<RunResponse>& call, uint32_t rows = 4) {
    try {
      auto reply = withDeadline(timer(), 10000, kj::mv(call), "no reply in 10 s").wait(ws());
      if (reply.getOutput().getData().size() == size_t{rows} * hidden_ * 4) return Status::ok();
      return Status::error(StatusCode::kInternal, "wrong output size");
    } catch (const kj::Exception& e) {
      return statusFromException(e);
    }
  }
  InfoResponse info() {
    auto req = conn_->bootstrap<proto::ExpertShard>().infoRequest();
    return withDeadline(timer(), 5000, kj::Promise<InfoResponse>(req.send()), "no info in 5 s")
        .wait(ws());
  }
  // Runs this loop (sending what is queued) for `ms`.
  void spin(uint32_t ms) { timer().afterDelay(ms * kj::MILLISECONDS).wait(ws()); }

 private:
  kj::AsyncIoContext io_;
  uint32_t hidden_;
  kj::Own<RpcConnection> conn_;
};

// moe_expert_queue_depth from /metrics: the shard has accepted a call and holds it in its queue.
bool queueDepthIs(const std::string& admin, int depth) {
  auto [code, body] = httpGet(admin, "/metrics");
  return code == 200 && contains(body, "\nmoe_expert_queue_depth " + std::to_string(depth) + "\n");
}

TEST(ShardInfo, ReportsFingerprintAndDtype) {
  ShardProcess shard(0);
  ShardConnection c(shard.listen());
  ASSERT_TRUE(c.connected()) << shard.log();
  auto reply = c.info();
  auto info = reply.getInfo();
  auto want = modelFingerprint(shard.modelDir());
  ASSERT_TRUE(want.isOk()) << want.error();
  EXPECT_EQ(std::string(info.getFingerprint().cStr()), want.value());
  EXPECT_EQ(std::string(info.getDtype().cStr()), "f32");
  EXPECT_FALSE(info.getDraining());
  EXPECT_TRUE(info.getReady());
  auto [code, body] = httpGet(shard.admin(), "/v1/info");
  EXPECT_EQ(code, 200);
  EXPECT_TRUE(contains(body, "\"fingerprint\":\"" + want.value() + "\"")) << body;
  EXPECT_TRUE(contains(body, "\"dtype\":\"f32\"")) << body;
}

struct DrainCase {
  const char* name;
  uint32_t drainMs;
  bool callInFlight;        // a call is accepted (held in the coalescing window) at SIGTERM
  bool probeWhileDraining;  // check refusal, info and /readyz before the process goes
  bool callSucceeds;        // else it fails with Unavailable (the connection closes)
  long exitWithinMs;        // after SIGTERM
  const char* logLine;
  uint32_t rows = 4;  // of the accepted call
  uint32_t hidden = kSmallHidden;
};

void runDrainCase(const DrainCase& tc) {
  ShardProcess shard(tc.drainMs, tc.hidden);
  ShardConnection c(shard.listen(), tc.hidden);
  ASSERT_TRUE(c.connected()) << shard.log();
  std::optional<kj::Promise<RunResponse>> accepted;
  if (tc.callInFlight) {
    accepted = c.send(tc.rows);
    const auto start = Clock::now();
    while (!queueDepthIs(shard.admin(), 1) && msSince(start) < 5000) c.spin(5);
    ASSERT_TRUE(queueDepthIs(shard.admin(), 1)) << "the call never reached the shard's queue";
  }
  const auto signalled = Clock::now();
  ASSERT_EQ(kill(shard.pid(), SIGTERM), 0);
  if (tc.probeWhileDraining) {
    while (!c.info().getInfo().getDraining() && msSince(signalled) < 5000) c.spin(5);
    auto info = c.info();
    EXPECT_TRUE(info.getInfo().getDraining());
    EXPECT_FALSE(info.getInfo().getReady());
    auto call = c.send();
    const Status refused = c.finish(call);
    EXPECT_EQ(refused.code(), StatusCode::kUnavailable) << refused.message();
    EXPECT_EQ(refused.message(), "shard shard-0 is draining");
    auto [code, body] = httpGet(shard.admin(), "/readyz");
    EXPECT_EQ(code, 503);
    EXPECT_TRUE(contains(body, "draining")) << body;
  }
  if (accepted) {
    const Status s = c.finish(*accepted, tc.rows);
    if (tc.callSucceeds) {
      EXPECT_TRUE(s.isOk()) << s.message();
    } else {
      EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.message();
    }
  }
  const auto status = shard.waitExit(tc.exitWithinMs - msSince(signalled));
  ASSERT_TRUE(status.has_value()) << "still running " << tc.exitWithinMs << " ms after SIGTERM\n"
                                  << shard.log();
  EXPECT_EQ(*status, 0) << shard.log();
  EXPECT_TRUE(contains(shard.log(), tc.logLine)) << shard.log();
}

TEST(ShardDrain, OnSigterm) {
  const DrainCase cases[] = {
      // The accepted call waits out its 1 s window and is answered; the shard exits right after,
      // long before drain_ms.
      {"an accepted call finishes, a new one is refused, then the shard exits", 5000, true, true,
       true, 3000, "drained: 1 accepted calls finished"},
      {"an idle shard exits at once, not after drain_ms", 5000, false, false, true, 1500,
       "drained: 0 accepted calls finished"},
      {"drain_ms 0: no deadline, the accepted call still finishes", 0, true, true, true, 3000,
       "drained: 1 accepted calls finished"},
      // A reply larger than the socket buffers (16 MiB) still leaves whole before the exit.
      {"a large reply is written out in full before the shard exits", 10000, true, false, true,
       6000, "drained: 1 accepted calls finished", 4096, 1024},
      // The window outlasts drain_ms: the process stops at the deadline and the call is cut.
      {"the drain deadline cuts an accepted call", 300, true, false, false, 1300,
       "1 cut by the drain deadline"},
  };
  for (const DrainCase& tc : cases) {
    SCOPED_TRACE(tc.name);
    runDrainCase(tc);
  }
}

}  // namespace
}  // namespace moe::testing
