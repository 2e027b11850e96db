// Unit tests for coalescing on an expert shard: the pure merge / split and queue rules of
// expert_service/run_coalescer.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "expert_service/run_coalescer.h"

namespace moe::expert {
namespace {

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
}

}  // namespace
}  // namespace moe::expert
