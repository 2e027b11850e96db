// Unit tests for coalescing on an expert shard: the pure merge / split and queue rules of
// expert_service/run_coalescer, then a real ShardServer driven in-process over a synthetic
// checkpoint (concurrent runs equal the same runs alone, a bad call fails alone, cancelled calls
// are dropped, and moe_expert_coalesced_calls counts the calls of each compute job), its identity
// in info, and draining (new calls refused, accepted ones finished, whenIdle).
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "common/model_fingerprint.h"
#include "common/tensor_wire.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/run_coalescer.h"
#include "expert_service/shard_server.h"
#include "tests/unit/test_util.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::expert {
namespace {

using unit::contains;

// ---------------------------------------------------------------------------------------------
// mergeRuns / mergedRows on hand-made calls

// Distinct fake weight handles: the merge copies them and never dereferences them.
const kernels::Matrix* fake(int i) {
  static const kernels::Matrix mats[8] = {{1, 1}, {1, 1}, {1, 1}, {1, 1},
                                          {1, 1}, {1, 1}, {1, 1}, {1, 1}};
  return &mats[i];
}
kernels::ExpertFfnWeights ffn(int i) {
  return {fake(i), fake(i), fake(i)};
}

struct Seg {
  uint32_t key;
  std::vector<uint32_t> rows;
  std::vector<float> weights;
};

SegmentTable table(const std::vector<Seg>& segs) {
  SegmentTable t;
  for (const Seg& s : segs) {
    t.rows.insert(t.rows.end(), s.rows.begin(), s.rows.end());
    t.weights.insert(t.weights.end(), s.weights.begin(), s.weights.end());
    t.closeSegment(ffn(s.key == kSharedExpertKey ? 7 : static_cast<int>(s.key)), s.key);
  }
  return t;
}

TEST(MergeRuns, ConcatenatesRowsAndMergesSegmentsPerExpert) {
  constexpr uint32_t H = 2;
  const std::vector<float> x0 = {1, 2, 3, 4};           // 2 rows
  const std::vector<float> x1 = {5, 6};                 // 1 row
  const std::vector<float> x2 = {7, 8, 9, 10, 11, 12};  // 3 rows
  const SegmentTable t0 = table({{2, {0, 1}, {0.5f, 0.25f}}, {kSharedExpertKey, {0, 1}, {1, 1}}});
  const SegmentTable t1 = table({{1, {0}, {0.75f}}, {2, {0}, {0.125f}}});
  const SegmentTable t2 = table({{kSharedExpertKey, {2}, {1}}, {1, {2, 0}, {0.5f, 0.5f}}});
  const MergePart parts[] = {{x0, &t0}, {x1, &t1}, {x2, &t2}};

  const MergedRuns m = mergeRuns(parts, H);
  EXPECT_EQ(m.x, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(m.rowOffsets, (std::vector<uint32_t>{0, 2, 3, 6}));
  EXPECT_EQ(m.totalRows(), 6u);
  // Segments in order of first appearance: expert 2, shared, expert 1.
  EXPECT_EQ(m.segments.keys, (std::vector<uint32_t>{2, kSharedExpertKey, 1}));
  ASSERT_EQ(m.segments.experts.size(), 3u);
  EXPECT_EQ(m.segments.experts[0].w1, fake(2));
  EXPECT_EQ(m.segments.experts[1].w1, fake(7));
  EXPECT_EQ(m.segments.experts[2].w1, fake(1));
  EXPECT_EQ(m.segments.offsets, (std::vector<uint32_t>{0, 3, 6, 9}));
  EXPECT_EQ(m.segments.rows, (std::vector<uint32_t>{0, 1, 2, /*shared*/ 0, 1, 5, /*1*/ 2, 5, 3}));
  EXPECT_EQ(m.segments.weights,
            (std::vector<float>{0.5f, 0.25f, 0.125f, 1, 1, 1, 0.75f, 0.5f, 0.5f}));

  const std::vector<float> out = {10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61};
  const std::vector<std::vector<float>> want = {
      {10, 11, 20, 21}, {30, 31}, {40, 41, 50, 51, 60, 61}};
  for (size_t i = 0; i < want.size(); ++i) {
    auto rows = mergedRows(m, i, out, H);
    EXPECT_EQ(std::vector<float>(rows.begin(), rows.end()), want[i]) << "call " << i;
  }
}

TEST(MergeRuns, RepeatedExpertInOneCallStaysInSeparateSegments) {
  // A call may name one expert in two segments, even for the same row; merging them would list a
  // row twice in one segment, which the kernels do not allow.
  constexpr uint32_t H = 1;
  const std::vector<float> x0 = {1, 2}, x1 = {3};
  const SegmentTable t0 = table({{0, {0, 1}, {1, 1}}, {0, {0}, {2}}});
  const SegmentTable t1 = table({{0, {0}, {3}}});
  const MergePart parts[] = {{x0, &t0}, {x1, &t1}};
  const MergedRuns m = mergeRuns(parts, H);
  EXPECT_EQ(m.segments.keys, (std::vector<uint32_t>{0, 0}));
  EXPECT_EQ(m.segments.offsets, (std::vector<uint32_t>{0, 3, 4}));
  EXPECT_EQ(m.segments.rows, (std::vector<uint32_t>{0, 1, 2, 0}));
  EXPECT_EQ(m.segments.weights, (std::vector<float>{1, 1, 3, 2}));
}

// Calls from a bf16 wire merge in bf16 (their rows reach the backend as they came); a job that
// mixes wire dtypes (two routers) merges in f32, the bf16 rows widened exactly.
TEST(MergeRuns, RowsKeepTheirWireDtypeUnlessCallsMix) {
  constexpr uint32_t H = 2;
  const std::vector<uint16_t> b0 = {0x3f80, 0xc020}, b1 = {0x3e20, 0x4000};  // 1, -2.5 | .15625, 2
  const std::vector<float> f1 = {0.15625f, 2.0f};
  const SegmentTable t = table({{0, {0}, {1}}});
  const MergePart bf16Parts[] = {{Activations::bf16(b0), &t}, {Activations::bf16(b1), &t}};
  const MergedRuns both = mergeRuns(bf16Parts, H);
  EXPECT_EQ(both.dtype, DType::kBF16);
  EXPECT_EQ(both.x16, (std::vector<uint16_t>{0x3f80, 0xc020, 0x3e20, 0x4000}));
  EXPECT_EQ(both.rows().dtype(), DType::kBF16);
  EXPECT_EQ(both.rows().size(), 4u);

  const MergePart mixedParts[] = {{Activations::bf16(b0), &t}, {f1, &t}};
  const MergedRuns mixed = mergeRuns(mixedParts, H);
  EXPECT_EQ(mixed.dtype, DType::kF32);
  EXPECT_EQ(mixed.x, (std::vector<float>{1.0f, -2.5f, 0.15625f, 2.0f}));
  EXPECT_EQ(mixed.rows().dtype(), DType::kF32);
  EXPECT_EQ(mixed.rowOffsets, (std::vector<uint32_t>{0, 1, 2}));
}

TEST(MergeRuns, SingleCallAndEmptySegments) {
  const std::vector<float> x = {1, 2, 3};
  const SegmentTable t = table({{3, {}, {}}, {1, {0}, {1}}});
  const MergePart parts[] = {{x, &t}};
  const MergedRuns m = mergeRuns(parts, 3);
  EXPECT_EQ(m.x, x);
  EXPECT_EQ(m.segments.keys, (std::vector<uint32_t>{3, 1}));
  EXPECT_EQ(m.segments.offsets, (std::vector<uint32_t>{0, 0, 1}));
}

// ---------------------------------------------------------------------------------------------
// RunQueue: which waiting calls the next job takes

// One step of a queue scenario. push: a call arrives; take: the executor is idle (want: the ids
// taken, wantWait: the window's deadline); finish: the job ends; remove: a call is cancelled (want:
// {id} when it was still waiting).
struct Step {
  enum Op { kPush, kTake, kFinish, kRemove } op;
  uint64_t id = 0;
  uint32_t layer = 0;
  uint32_t rows = 0;
  uint64_t now = 0;
  std::vector<uint64_t> want = {};
  std::optional<uint64_t> wantWait = std::nullopt;
};
Step push(uint64_t id, uint32_t layer, uint32_t rows, uint64_t now = 0) {
  return {Step::kPush, id, layer, rows, now};
}
Step take(std::vector<uint64_t> want, uint64_t now = 0, std::optional<uint64_t> wait = {}) {
  return {Step::kTake, 0, 0, 0, now, std::move(want), wait};
}
Step finish() {
  return {Step::kFinish};
}
Step remove(uint64_t id, bool wasWaiting) {
  return {
      Step::kRemove, id, 0, 0, 0, wasWaiting ? std::vector<uint64_t>{id} : std::vector<uint64_t>{}};
}

struct QueueCase {
  const char* name;
  ExpertBatchingConfig config;
  std::vector<Step> steps;
};

void runScenario(const QueueCase& tc) {
  RunQueue q(tc.config);
  for (size_t i = 0; i < tc.steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    const Step& s = tc.steps[i];
    switch (s.op) {
      case Step::kPush:
        q.push(s.id, s.layer, s.rows, s.now);
        break;
      case Step::kTake: {
        auto next = q.take(s.now);
        EXPECT_EQ(next.ids, s.want);
        EXPECT_EQ(next.waitUntilUs, s.wantWait);
        break;
      }
      case Step::kFinish:
        q.finished();
        break;
      case Step::kRemove:
        EXPECT_EQ(q.remove(s.id), !s.want.empty());
        break;
    }
  }
}

TEST(RunQueue, Scenarios) {
  const QueueCase cases[] = {
      {"window 0: calls queued behind a job go together, other layers wait their turn",
       {true, 0, 100},
       {push(1, 0, 10), take({1}), push(2, 0, 5), push(3, 1, 5), push(4, 0, 7), take({}), finish(),
        take({2, 4}), finish(), take({3}), finish(), take({})}},
      {"max_rows caps a job; a call that does not fit waits for the next one",
       {true, 0, 16},
       {push(1, 0, 1), take({1}), push(2, 0, 10), push(3, 0, 10), push(4, 0, 6), push(5, 0, 1),
        finish(), take({2, 4}), finish(), take({3, 5}), finish(), take({})}},
      {"a call larger than max_rows runs alone",
       {true, 0, 8},
       {push(1, 0, 1), take({1}), push(2, 0, 50), push(3, 0, 1), finish(), take({2}), finish(),
        take({3})}},
      {"disabled: one call per job, in arrival order",
       {false, 0, 100},
       {push(1, 0, 1), take({1}), push(2, 0, 1), push(3, 0, 1), finish(), take({2}), finish(),
        take({3})}},
      {"disabled ignores the window", {false, 500, 100}, {push(1, 0, 1, 0), take({1}, 0)}},
      {"window: an idle shard holds a call until window_us after it arrived (layer 1's call too, "
       "as it arrived before the job)",
       {true, 100, 64},
       {push(1, 0, 4, 1000), take({}, 1000, 1100), push(2, 0, 4, 1050), take({}, 1050, 1100),
        push(3, 1, 4, 1060), take({1, 2}, 1100), finish(), take({}, 1101, 1160), take({3}, 1160)}},
      {"window: a full job starts at once",
       {true, 100, 8},
       {push(1, 0, 4, 0), take({}, 0, 100), push(2, 0, 4, 10), take({1, 2}, 10)}},
      {"window: calls that arrive while a job runs do not wait again",
       {true, 100, 64},
       {push(1, 0, 4, 0), take({1}, 200), push(2, 0, 4, 210), finish(), take({2}, 220)}},
      {"window: a cancelled head hands the window to the next call",
       {true, 100, 64},
       {push(1, 0, 4, 0), push(2, 0, 4, 50), take({}, 60, 100), remove(1, true), take({}, 100, 150),
        take({2}, 150)}},
      {"remove: a waiting call leaves the queue; a taken one is not waiting",
       {true, 0, 64},
       {push(1, 0, 4), take({1}), push(2, 0, 4), push(3, 0, 4), remove(2, true), remove(1, false),
        finish(), take({3}), remove(3, false)}},
  };
  for (const QueueCase& tc : cases) {
    SCOPED_TRACE(tc.name);
    runScenario(tc);
  }
}

// ---------------------------------------------------------------------------------------------
// A real ShardServer in-process

constexpr uint32_t kH = 64;
constexpr uint32_t kI = 96;
constexpr uint32_t kExperts = 4;

struct SegmentSpec {
  uint32_t expert;
  bool shared;
  std::vector<uint32_t> rows;
  std::vector<float> weights;
};

struct RunSpec {
  uint32_t layer = 0;
  uint32_t rows = 0;
  std::vector<float> x;  // [rows, kH]
  std::vector<SegmentSpec> segments;
  bool bf16Wire = false;  // rows sent (and the reply returned) in bf16, as router.wire_dtype bf16
};

// R random rows; every expert in `experts` takes a random subset of them.
RunSpec randomRun(uint32_t layer, uint32_t R, std::vector<uint32_t> experts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f), weight(0.05f, 1.0f);
  RunSpec spec{layer, R, std::vector<float>(size_t{R} * kH), {}};
  for (float& v : spec.x) v = value(rng);
  for (uint32_t e : experts) {
    SegmentSpec seg{e, false, {}, {}};
    for (uint32_t r = 0; r < R; ++r) {
      if (rng() % 3 == 0) continue;
      seg.rows.push_back(r);
      seg.weights.push_back(weight(rng));
    }
    spec.segments.push_back(std::move(seg));
  }
  return spec;
}

// The server of shard "s0" (all experts, BLAS on one thread) over a checkpoint written once.
class ShardServerHarness {
 public:
  ShardServerHarness(const std::string& modelDir, const std::string& batchingYaml)
      : io_(kj::setupAsyncIo()) {
    const std::string yaml = "model: {path: " + modelDir + "}\n" + batchingYaml +
                             "shards:\n  - {name: s0, listen: '127.0.0.1:1', experts: '0-3', "
                             "device: cpu, threads: 1}\n";
    auto cluster = parseClusterConfig(yaml, "test.yaml", "/");
    EXPECT_TRUE(cluster.isOk()) << cluster.error();
    auto model = ShardModel::load(cluster.value(), "s0");
    EXPECT_TRUE(model.isOk()) << model.error();
    metrics_ = std::make_unique<ExpertMetrics>(registry_, *model.value()->store, "blas");
    auto server =
        kj::heap<ShardServer>(std::move(model).value(), *metrics_, io_.provider->getTimer());
    server_ = server.get();
    client_ = kj::mv(server);
  }

  kj::WaitScope& ws() { return io_.waitScope; }
  kj::Timer& timer() { return io_.provider->getTimer(); }
  ShardServer& server() { return *server_; }  // owned by client_
  capnp::Response<proto::ExpertShard::InfoResults> info() {
    return client_.infoRequest().send().wait(ws());
  }

  capnp::RemotePromise<proto::ExpertShard::RunResults> send(const RunSpec& spec) {
    auto req = client_.runRequest();
    req.setLayer(spec.layer);
    auto rows = req.initRows();
    const uint32_t shape[] = {spec.rows, kH};
    if (spec.bf16Wire) {
      encodeBf16(rows, shape, spec.x);
    } else {
      std::memcpy(initF32(rows, shape).data(), spec.x.data(), spec.x.size() * sizeof(float));
    }
    auto segs = req.initSegments(static_cast<unsigned>(spec.segments.size()));
    for (unsigned s = 0; s < spec.segments.size(); ++s) {
      const SegmentSpec& in = spec.segments[s];
      segs[s].setExpert(in.expert);
      segs[s].setShared(in.shared);
      auto idx = segs[s].initRowIndex(static_cast<unsigned>(in.rows.size()));
      auto wt = segs[s].initWeight(static_cast<unsigned>(in.weights.size()));
      for (unsigned j = 0; j < in.rows.size(); ++j) idx.set(j, in.rows[j]);
      for (unsigned j = 0; j < in.weights.size(); ++j) wt.set(j, in.weights[j]);
    }
    return req.send();
  }

  // The output of a finished call, or its error message.
  struct Reply {
    std::vector<float> out;
    std::string error;
  };
  Reply wait(kj::Promise<capnp::Response<proto::ExpertShard::RunResults>>& promise) {
    Reply r;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   auto resp = promise.wait(ws());
                   auto view = decodeTensor(resp.getOutput(), "output");
                   KJ_REQUIRE(view.isOk(), view.error());
                   const F32Rows out(view.value());
                   r.out.assign(out.values().begin(), out.values().end());
                 })) {
      r.error = e->getDescription().cStr();
    }
    return r;
  }
  Reply runAlone(const RunSpec& spec) {
    kj::Promise<capnp::Response<proto::ExpertShard::RunResults>> p = send(spec);
    return wait(p);
  }

  // moe_expert_coalesced_calls: jobs, calls, and jobs with one call.
  struct Coalesced {
    uint64_t jobs = 0;
    double calls = 0;
    uint64_t singleCallJobs = 0;
  };
  Coalesced coalesced() const {
    Coalesced c;
    for (const auto& family : registry_.Collect()) {
      if (family.name != "moe_expert_coalesced_calls") continue;
      const auto& h = family.metric.at(0).histogram;
      c.jobs = h.sample_count;
      c.calls = h.sample_sum;
      c.singleCallJobs = h.bucket.at(0).cumulative_count;  // le="1"
    }
    return c;
  }
  double queueDepth() const { return metrics_->queueDepth.Value(); }

  // Runs the event loop (without blocking on the compute thread) until `done` or 5 s.
  template <typename Pred>
  bool spinUntil(Pred done) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
      if (std::chrono::steady_clock::now() > end) return false;
      timer().afterDelay(50 * kj::MICROSECONDS).wait(ws());
    }
    return true;
  }

 private:
  kj::AsyncIoContext io_;
  prometheus::Registry registry_;
  std::unique_ptr<ExpertMetrics> metrics_;
  ShardServer* server_ = nullptr;
  proto::ExpertShard::Client client_{nullptr};
};

using RunPromise = kj::Promise<capnp::Response<proto::ExpertShard::RunResults>>;

// Equal within 1e-6 relative to the magnitude of the row's values (a merged GEMM may block the
// rows differently, so bit equality is not promised).
void expectClose(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t r = 0; r < want.size() / kH; ++r) {
    float scale = 1e-3f;
    for (size_t h = 0; h < kH; ++h) scale = std::max(scale, std::abs(want[r * kH + h]));
    for (size_t h = 0; h < kH; ++h) {
      ASSERT_NEAR(got[r * kH + h], want[r * kH + h], 1e-6f * scale) << "row " << r << " col " << h;
    }
  }
}

class ShardServerCoalescing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One directory per process: ctest -j runs this suite's tests as concurrent processes, and
    // each removes its directory when done.
    dir_ = new std::string(::testing::TempDir() + "moe_unit_shard_coalescing-" +
                           std::to_string(::getpid()));
    std::filesystem::remove_all(*dir_);
    SyntheticModelSpec spec;
    spec.hiddenSize = kH;
    spec.intermediateSize = kI;
    spec.numExperts = kExperts;
    spec.topK = 2;
    spec.numLayers = 2;
    spec.dtype = DType::kF32;
    spec.seed = 7;
    auto s = writeSyntheticCheckpoint(spec, *dir_);
    ASSERT_TRUE(s.isOk()) << s.message();
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  static std::string* dir_;

  // Calls of both layers, different sizes, overlapping experts.
  static std::vector<RunSpec> mixedRuns() {
    return {randomRun(0, 7, {0, 1, 2, 3}, 1), randomRun(0, 1, {2}, 2),
            randomRun(0, 33, {1, 3}, 3),      randomRun(1, 5, {0, 3}, 4),
            randomRun(0, 12, {3, 0}, 5),      randomRun(1, 9, {1, 2}, 6),
            randomRun(0, 64, {0, 1, 2, 3}, 7)};
  }
};
std::string* ShardServerCoalescing::dir_ = nullptr;

TEST_F(ShardServerCoalescing, ConcurrentRunsEqualTheSameRunsAlone) {
  const struct {
    const char* name;
    const char* yaml;
    bool expectMerged;
  } configs[] = {
      // Window 0 merges only what queued while a job ran; with this tiny model the first job may
      // end before the others arrive, so merging is not asserted here (the window cases do).
      {"window 0", "expert: {batching: {window_us: 0}}\n", false},
      {"window 2 ms", "expert: {batching: {window_us: 2000}}\n", true},
      {"max_rows 16", "expert: {batching: {max_rows: 16, window_us: 2000}}\n", true},
      {"disabled", "expert: {batching: {enabled: false}}\n", false},
  };
  const std::vector<RunSpec> runs = mixedRuns();
  for (const auto& cfg : configs) {
    SCOPED_TRACE(cfg.name);
    ShardServerHarness shard(*dir_, cfg.yaml);
    std::vector<std::vector<float>> alone;
    for (const RunSpec& r : runs) {
      auto reply = shard.runAlone(r);
      ASSERT_EQ(reply.error, "");
      alone.push_back(reply.out);
    }
    const auto before = shard.coalesced();
    EXPECT_EQ(before.jobs, runs.size());  // each alone: one job per call
    std::vector<RunPromise> pending;
    for (const RunSpec& r : runs) pending.push_back(shard.send(r));
    for (size_t i = 0; i < runs.size(); ++i) {
      SCOPED_TRACE("call " + std::to_string(i));
      auto reply = shard.wait(pending[i]);
      ASSERT_EQ(reply.error, "");
      expectClose(reply.out, alone[i]);
    }
    const auto after = shard.coalesced();
    EXPECT_DOUBLE_EQ(after.calls - before.calls, static_cast<double>(runs.size()));
    const uint64_t jobs = after.jobs - before.jobs;
    const uint64_t multi = jobs - (after.singleCallJobs - before.singleCallJobs);
    if (cfg.expectMerged) {
      EXPECT_GE(multi, 1u) << "no compute job coalesced several calls";
      EXPECT_LT(jobs, runs.size());
    } else if (std::string_view(cfg.name) == "disabled") {
      EXPECT_EQ(jobs, runs.size());
      EXPECT_EQ(multi, 0u);
    }
    EXPECT_EQ(shard.queueDepth(), 0);
  }
}

// A bf16 wire's calls merge in bf16 (their rows go to the backend as they came) and each gets
// the rows it would get alone; the reply is bf16 too, so "close" is half a bf16 ulp of the row.
TEST_F(ShardServerCoalescing, Bf16WireRunsMergeAndEqualTheSameRunsAlone) {
  ShardServerHarness shard(*dir_, "expert: {batching: {window_us: 2000}}\n");
  std::vector<RunSpec> runs = mixedRuns();
  for (RunSpec& r : runs) r.bf16Wire = true;
  std::vector<std::vector<float>> alone;
  for (const RunSpec& r : runs) {
    auto reply = shard.runAlone(r);
    ASSERT_EQ(reply.error, "");
    alone.push_back(reply.out);
  }
  const auto before = shard.coalesced();
  std::vector<RunPromise> pending;
  for (const RunSpec& r : runs) pending.push_back(shard.send(r));
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE("call " + std::to_string(i));
    auto reply = shard.wait(pending[i]);
    ASSERT_EQ(reply.error, "");
    ASSERT_EQ(reply.out.size(), alone[i].size());
    for (size_t j = 0; j < reply.out.size(); ++j) {
      ASSERT_NEAR(reply.out[j], alone[i][j], std::abs(alone[i][j]) * (1.0f / 128) + 1e-6f)
          << "element " << j;
    }
  }
  const auto after = shard.coalesced();
  EXPECT_GE((after.jobs - before.jobs) - (after.singleCallJobs - before.singleCallJobs), 1u)
      << "no compute job coalesced several bf16 calls";
}

TEST_F(ShardServerCoalescing, MalformedCallFailsAloneWhileItsBatchMatesSucceed) {
  ShardServerHarness shard(*dir_, "");
  std::vector<RunSpec> runs = mixedRuns();
  std::vector<std::vector<float>> alone;
  for (const RunSpec& r : runs) alone.push_back(shard.runAlone(r).out);

  RunSpec nan = randomRun(0, 6, {0, 1}, 11);
  nan.x[2 * kH + 5] = std::numeric_limits<float>::quiet_NaN();
  RunSpec badRow = randomRun(0, 4, {2}, 12);
  badRow.segments[0].rows.push_back(4);
  badRow.segments[0].weights.push_back(0.5f);
  RunSpec badWeight = randomRun(0, 4, {1, 3}, 13);
  badWeight.segments[1].weights.back() = std::numeric_limits<float>::infinity();
  const struct {
    size_t at;  // position among the good calls
    RunSpec spec;
    const char* error;
  } bad[] = {
      {1, nan, "rows: row 2 has a non-finite value at column 5"},
      {3, badRow, "segment 0: row index 4 >= 4 rows"},
      {5, badWeight, "segment 1: non-finite weight"},
  };
  std::vector<RunPromise> good, failing;
  for (size_t i = 0; i < runs.size(); ++i) {
    for (const auto& b : bad) {
      if (b.at == i) failing.push_back(shard.send(b.spec));
    }
    good.push_back(shard.send(runs[i]));
  }
  for (size_t i = 0; i < std::size(bad); ++i) {
    SCOPED_TRACE(bad[i].error);
    EXPECT_TRUE(contains(shard.wait(failing[i]).error, bad[i].error));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE("call " + std::to_string(i));
    auto reply = shard.wait(good[i]);
    ASSERT_EQ(reply.error, "");
    expectClose(reply.out, alone[i]);
  }
  EXPECT_GE(shard.coalesced().jobs - shard.coalesced().singleCallJobs, 1u);
}

TEST_F(ShardServerCoalescing, CancelledWaitingCallIsNeverComputed) {
  // A 1 s window and max_rows 8: a 4-row call waits for company; an 8-row call starts at once.
  ShardServerHarness shard(*dir_, "expert: {batching: {window_us: 1000000, max_rows: 8}}\n");
  {
    RunPromise waiting = shard.send(randomRun(0, 4, {0, 1}, 21));
    ASSERT_TRUE(shard.spinUntil([&] { return shard.queueDepth() == 1; }));
  }  // dropped: the caller cancels
  EXPECT_EQ(shard.queueDepth(), 0);
  const RunSpec full = randomRun(0, 8, {0, 2}, 22);
  auto reply = shard.runAlone(full);
  ASSERT_EQ(reply.error, "");
  EXPECT_EQ(shard.coalesced().jobs, 1u);  // only the 8-row call was computed
  EXPECT_EQ(shard.coalesced().calls, 1);
  // The server goes away with the window's timer still armed for the cancelled call.
}

TEST_F(ShardServerCoalescing, CancellingCallsInsideRunningJobsIsSafe) {
  const RunSpec big = randomRun(0, 1024, {0, 1, 2, 3}, 31);
  const auto want = ShardServerHarness(*dir_, "").runAlone(big).out;
  // A 1 s window and max_rows 3072: the third call fills the job, which starts at once; two of
  // its three callers cancel while it runs (it may have finished already: then nothing is left).
  ShardServerHarness shard(*dir_, "expert: {batching: {window_us: 1000000, max_rows: 3072}}\n");
  {
    RunPromise a = shard.send(big);
    RunPromise b = shard.send(big);
    RunPromise c = shard.send(big);
    ASSERT_TRUE(shard.spinUntil([&] { return shard.coalesced().jobs == 1; }));
    EXPECT_EQ(shard.coalesced().calls, 3);
    a = nullptr;
    c = nullptr;
    auto reply = shard.wait(b);
    ASSERT_EQ(reply.error, "");
    expectClose(reply.out, want);
  }
  // A call computed alone, straight into its reply, cancelled while it runs: dropping it waits
  // for the compute before the reply is freed.
  {
    RunPromise d = shard.send(randomRun(0, 4096, {0, 1, 2, 3}, 32));
    ASSERT_TRUE(shard.spinUntil([&] { return shard.coalesced().jobs == 2; }));
    d = nullptr;
  }
  auto after = shard.runAlone(randomRun(0, 3072, {1}, 33));  // fills a job: runs at once
  EXPECT_EQ(after.error, "");
  EXPECT_EQ(shard.coalesced().jobs, 3u);
  EXPECT_EQ(shard.queueDepth(), 0);
}

TEST_F(ShardServerCoalescing, WindowHoldsAnIdleCallForCompany) {
  ShardServerHarness shard(*dir_, "expert: {batching: {window_us: 20000}}\n");
  const RunSpec a = randomRun(0, 3, {0}, 41), b = randomRun(0, 5, {0, 2}, 42);
  // The kj timer's clock is read when the loop wakes; wake it so arrivals are stamped with now.
  shard.timer().afterDelay(1 * kj::MILLISECONDS).wait(shard.ws());
  const auto start = std::chrono::steady_clock::now();
  RunPromise pa = shard.send(a), pb = shard.send(b);
  EXPECT_EQ(shard.wait(pa).error, "");
  EXPECT_EQ(shard.wait(pb).error, "");
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(19));
  EXPECT_EQ(shard.coalesced().jobs, 1u);  // both in one job
  EXPECT_EQ(shard.coalesced().calls, 2);
}

TEST_F(ShardServerCoalescing, InfoReportsIdentity) {
  ShardServerHarness shard(*dir_, "");
  auto reply = shard.info();
  auto info = reply.getInfo();
  auto want = modelFingerprint(*dir_);
  ASSERT_TRUE(want.isOk()) << want.error();
  EXPECT_EQ(std::string(info.getFingerprint().cStr()), want.value());
  EXPECT_EQ(std::string(info.getDtype().cStr()), "f32");
  EXPECT_TRUE(info.getReady());
  EXPECT_FALSE(info.getDraining());
  EXPECT_EQ(info.getExperts().size(), 2u);  // both layers, experts 0-3
}

// A call accepted before startDraining finishes normally, whether it still waits in the queue or
// is computing; a call after it is refused at once; whenIdle resolves once the accepted one ends.
TEST_F(ShardServerCoalescing, DrainingRefusesNewCallsAndFinishesAcceptedOnes) {
  const struct {
    const char* name;
    const char* yaml;
    RunSpec run;
    bool queued;  // still waiting for company when the drain starts (else already computing)
  } cases[] = {
      {"queued in the coalescing window", "expert: {batching: {window_us: 500000}}\n",
       randomRun(0, 4, {0, 1}, 51), true},
      {"computing", "", randomRun(1, 2048, {0, 1, 2, 3}, 52), false},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    const auto want = ShardServerHarness(*dir_, "").runAlone(tc.run).out;  // one loop at a time
    ShardServerHarness shard(*dir_, tc.yaml);
    ASSERT_TRUE(shard.server().whenIdle().poll(shard.ws())) << "an idle server is idle at once";
    RunPromise accepted = shard.send(tc.run);
    ASSERT_TRUE(shard.spinUntil(
        [&] { return tc.queued ? shard.queueDepth() == 1 : shard.coalesced().jobs == 1; }));
    shard.server().startDraining();
    kj::Promise<void> idle = shard.server().whenIdle();
    if (tc.queued) {
      EXPECT_FALSE(idle.poll(shard.ws()));
    }

    auto refused = shard.runAlone(randomRun(0, 2, {2}, 53));
    EXPECT_TRUE(contains(refused.error, "Unavailable: shard s0 is draining")) << refused.error;
    auto reply = shard.info();
    EXPECT_TRUE(reply.getInfo().getDraining());
    EXPECT_FALSE(reply.getInfo().getReady());

    auto done = shard.wait(accepted);
    ASSERT_EQ(done.error, "");
    expectClose(done.out, want);
    EXPECT_TRUE(shard.spinUntil([&] { return idle.poll(shard.ws()); }));
    idle.wait(shard.ws());
    EXPECT_EQ(shard.coalesced().calls, 1);  // the refused call never reached the queue
  }
}

TEST_F(ShardServerCoalescing, AnAcceptedCallItsCallerCancelsEndsTheDrain) {
  ShardServerHarness shard(*dir_, "expert: {batching: {window_us: 1000000}}\n");
  kj::Promise<void> idle = nullptr;
  {
    RunPromise waiting = shard.send(randomRun(0, 4, {0, 1}, 61));
    ASSERT_TRUE(shard.spinUntil([&] { return shard.queueDepth() == 1; }));
    shard.server().startDraining();
    idle = shard.server().whenIdle();
    EXPECT_FALSE(idle.poll(shard.ws()));
  }  // the caller gives up
  EXPECT_TRUE(shard.spinUntil([&] { return idle.poll(shard.ws()); }));
  EXPECT_EQ(shard.queueDepth(), 0);
  EXPECT_EQ(shard.coalesced().jobs, 0u);
}

}  // namespace
}  // namespace moe::expert
