// Unit tests for common/compute_executor: jobs run on the worker thread, in posting order,
// exceptions reject only their own promise, queued() tracks waiting jobs, and teardown is clean.
#include "common/compute_executor.h"

#include <gtest/gtest.h>
#include <kj/async.h>
#include <kj/exception.h>
#include <kj/vector.h>

#include <pthread.h>

#include <atomic>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/test_util.h"

namespace moe {
namespace {

using unit::contains;

// kj::EventLoop's destructor may throw, so the fixture holds it by pointer (a gtest fixture's
// destructor must not be noexcept(false)).
class ComputeExecutorTest : public ::testing::Test {
 protected:
  std::unique_ptr<kj::EventLoop> loop_ = std::make_unique<kj::EventLoop>();
  std::unique_ptr<kj::WaitScope> scope_ = std::make_unique<kj::WaitScope>(*loop_);
  kj::WaitScope& ws_ = *scope_;

  void TearDown() override {
    scope_.reset();
    loop_.reset();
  }
};

TEST_F(ComputeExecutorTest, RunsOnAnotherThread) {
  ComputeExecutor ex("unit-exec");
  const auto caller = std::this_thread::get_id();
  const auto worker = ex.run([]() { return std::this_thread::get_id(); }).wait(ws_);
  EXPECT_NE(worker, caller);
  // Always the same worker.
  EXPECT_EQ(ex.run([]() { return std::this_thread::get_id(); }).wait(ws_), worker);
}

TEST_F(ComputeExecutorTest, WorkerThreadIsNamedTruncatedTo15Chars) {
  ComputeExecutor ex("compute-executor-0");
  auto name = ex.run([]() {
                  char buf[32] = {};
                  pthread_getname_np(pthread_self(), buf, sizeof buf);
                  return std::string(buf);
                }).wait(ws_);
  EXPECT_EQ(name, "compute-executo");
}

TEST_F(ComputeExecutorTest, ResultsComeBackInPostingOrder) {
  ComputeExecutor ex("unit-exec");
  constexpr int kJobs = 500;
  std::vector<int> ranOrder;  // touched only on the worker until every job resolved
  kj::Vector<kj::Promise<int>> promises;
  for (int i = 0; i < kJobs; ++i) {
    promises.add(ex.run([i, &ranOrder]() {
      ranOrder.push_back(i);
      return i * 3;
    }));
  }
  auto results = kj::joinPromises(promises.releaseAsArray()).wait(ws_);
  ASSERT_EQ(results.size(), size_t{kJobs});
  for (int i = 0; i < kJobs; ++i) EXPECT_EQ(results[i], i * 3);
  ASSERT_EQ(ranOrder.size(), size_t{kJobs});
  for (int i = 0; i < kJobs; ++i) ASSERT_EQ(ranOrder[i], i) << "jobs ran out of order";
  EXPECT_EQ(ex.queued(), 0);
}

TEST_F(ComputeExecutorTest, VoidJobs) {
  ComputeExecutor ex("unit-exec");
  int value = 0;
  ex.run([&value]() { value = 42; }).wait(ws_);
  EXPECT_EQ(value, 42);
}

TEST_F(ComputeExecutorTest, ExceptionRejectsItsPromiseAndLaterJobsStillRun) {
  ComputeExecutor ex("unit-exec");
  auto failing = ex.run([]() -> int { throw std::runtime_error("gemm exploded at row 17"); });
  auto after = ex.run([]() { return 7; });

  std::string message;
  const int got = failing
                      .then([](int v) { return v; },
                            [&message](kj::Exception&& e) {
                              message = e.getDescription().cStr();
                              return -1;
                            })
                      .wait(ws_);
  EXPECT_EQ(got, -1) << "the failing job's promise resolved";
  EXPECT_TRUE(contains(message, "gemm exploded at row 17"));
  EXPECT_EQ(after.wait(ws_), 7);
  EXPECT_EQ(ex.run([]() { return 8; }).wait(ws_), 8);

  // A KJ exception keeps its description too.
  auto kjFail = ex.run([]() -> int { KJ_FAIL_REQUIRE("bad segment offsets", 3); });
  std::string kjMessage;
  kjFail.then([](int) {}, [&](kj::Exception&& e) { kjMessage = e.getDescription().cStr(); })
      .wait(ws_);
  EXPECT_TRUE(contains(kjMessage, "bad segment offsets"));
  EXPECT_EQ(ex.queued(), 0);
}

TEST_F(ComputeExecutorTest, QueuedCountsJobsNotYetStarted) {
  ComputeExecutor ex("unit-exec");
  EXPECT_EQ(ex.queued(), 0);
  std::latch started(1);
  std::atomic<bool> release{false};
  auto blocker = ex.run([&]() {
    started.count_down();
    while (!release.load()) std::this_thread::yield();
    return 0;
  });
  started.wait();  // the worker is inside the first job: nothing else can start
  kj::Vector<kj::Promise<int>> waiting;
  for (int i = 1; i <= 5; ++i) waiting.add(ex.run([i]() { return i; }));
  EXPECT_EQ(ex.queued(), 5);
  release.store(true);
  EXPECT_EQ(blocker.wait(ws_), 0);
  auto results = kj::joinPromises(waiting.releaseAsArray()).wait(ws_);
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[4], 5);
  EXPECT_EQ(ex.queued(), 0);
}

// Known bug in the code under test: fails until common/compute_executor.h is fixed.
// Regression (common/compute_executor.h, ComputeExecutor::run): queued_ is incremented when a job
// is posted and decremented only inside the job's lambda. When the caller drops the promise before
// the job starts (an RPC cancelled or timed out while waiting), KJ cancels the cross-thread event
// and the lambda never runs, so queued() stays too high forever (the queue-depth gauge leaks).
class ComputeExecutorRegression : public ComputeExecutorTest {};

TEST_F(ComputeExecutorRegression, CancelledJobIsNotCountedAsQueued) {
  ComputeExecutor ex("unit-exec");
  std::latch started(1);
  std::atomic<bool> release{false};
  std::atomic<bool> cancelledRan{false};
  auto blocker = ex.run([&]() {
    started.count_down();
    while (!release.load()) std::this_thread::yield();
    return 0;
  });
  started.wait();
  {
    auto dropped = ex.run([&]() {
      cancelledRan.store(true);
      return 1;
    });
    EXPECT_EQ(ex.queued(), 1);
  }  // promise dropped before the job could start: the job is cancelled
  release.store(true);
  EXPECT_EQ(blocker.wait(ws_), 0);
  EXPECT_EQ(ex.run([]() { return 2; }).wait(ws_), 2);  // everything before it has finished
  EXPECT_FALSE(cancelledRan.load()) << "the dropped job ran anyway";
  EXPECT_EQ(ex.queued(), 0) << "a cancelled job is still counted as queued";
}

TEST_F(ComputeExecutorTest, DestructionWithNoJobsIsClean) {
  for (int i = 0; i < 3; ++i) {
    ComputeExecutor ex("unit-exec");
    EXPECT_EQ(ex.queued(), 0);
  }
  {
    ComputeExecutor ex("unit-exec");
    EXPECT_EQ(ex.run([]() { return 1; }).wait(ws_), 1);
  }  // destroyed after its jobs finished
}

TEST(ComputeExecutorNoLoop, ConstructAndDestroyWithoutAnEventLoop) {
  // The calling thread needs no event loop just to own an executor.
  ComputeExecutor ex("unit-exec");
  EXPECT_EQ(ex.queued(), 0);
}

}  // namespace
}  // namespace moe
