// Unit tests for router_service/batcher: which requests are merged into which batch, on plain
// data with a scripted batch runner (no model, no shards): merging what queued during a batch's
// gate stage, max_tokens, batching off, window_us, withdrawal on a deadline, the queue limit and
// per-member errors.
#include "router_service/batcher.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <vector>

#include "common/rpc_endpoint.h"
#include "tests/unit/test_util.h"

namespace moe::router {
namespace {

using unit::contains;

constexpr uint32_t kH = 2;

ForwardRequest request(uint32_t tokens, float value) {
  ForwardRequest r;
  r.tokens = tokens;
  r.hidden = std::make_shared<const F32Rows>(std::vector<float>(size_t{tokens} * kH, value));
  return r;
}

// Records every batch; each batch's gate stage and run end when the test says so.
struct ScriptedRunner {
  struct Run {
    Batch batch;
    kj::Function<void()> routed;
    kj::Own<kj::PromiseFulfiller<Batcher::Replies>> done;
  };
  std::vector<std::unique_ptr<Run>> runs;

  Batcher::RunBatch runner() {
    return [this](Batch b, kj::Function<void()> routed) {
      auto paf = kj::newPromiseAndFulfiller<Batcher::Replies>();
      runs.push_back(
          std::unique_ptr<Run>(new Run{std::move(b), kj::mv(routed), kj::mv(paf.fulfiller)}));
      return kj::mv(paf.promise);
    };
  }
  // Routes and completes run i: each member's output is its first input value.
  void finish(size_t i) {
    Run& r = *runs[i];
    r.routed();
    Batcher::Replies replies;
    for (const auto& m : r.batch.members) {
      ForwardReply reply;
      reply.output = {r.batch.x[size_t{m.offset} * kH]};
      replies.emplace_back(std::move(reply));
    }
    r.done->fulfill(std::move(replies));
  }
};

class BatcherTest : public ::testing::Test {
 protected:
  // Held by pointer: kj's context may throw from its destructor, a gtest fixture's may not.
  std::unique_ptr<kj::AsyncIoContext> ctx =
      std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  kj::AsyncIoContext& io = *ctx;
  ScriptedRunner runner;
  // Completes run i and lets the loop deliver it.
  void finish(size_t i) {
    runner.finish(i);
    io.waitScope.poll();
  }
};

TEST_F(BatcherTest, RequestsQueuedDuringABatchFormTheNextOne) {
  Batcher b({}, kH, io.provider->getTimer(), runner.runner());
  auto first = b.admit(request(2, 1));
  auto second = b.admit(request(3, 2));
  auto third = b.admit(request(1, 3));
  ASSERT_EQ(runner.runs.size(), 1u);  // the first went at once, alone
  EXPECT_EQ(runner.runs[0]->batch.members.size(), 1u);
  EXPECT_EQ(b.waitingRequests(), 2u);
  runner.runs[0]->routed();  // routed but still in flight: the others keep waiting
  EXPECT_EQ(runner.runs.size(), 1u);
  finish(0);  // served: the other two go together
  ASSERT_EQ(runner.runs.size(), 2u);
  const Batch& merged = runner.runs[1]->batch;
  ASSERT_EQ(merged.members.size(), 2u);
  EXPECT_EQ(merged.tokens, 4u);
  EXPECT_EQ(merged.members[1].offset, 3u);
  EXPECT_EQ(merged.x, (std::vector<float>{2, 2, 2, 2, 2, 2, 3, 3}));
  finish(1);
  EXPECT_EQ(first.wait(io.waitScope).output[0], 1.0f);
  EXPECT_EQ(second.wait(io.waitScope).output[0], 2.0f);
  EXPECT_EQ(third.wait(io.waitScope).output[0], 3.0f);
}

TEST_F(BatcherTest, AMergedBatchStaysWithinMaxTokens) {
  BatchingPolicy p;
  p.maxTokens = 5;
  Batcher b(p, kH, io.provider->getTimer(), runner.runner());
  std::vector<kj::Promise<ForwardReply>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(b.admit(request(2, static_cast<float>(i))));
  finish(0);
  ASSERT_EQ(runner.runs.size(), 2u);
  EXPECT_EQ(runner.runs[1]->batch.tokens, 4u);  // 2 + 2; a third would make 6
  finish(1);
  ASSERT_EQ(runner.runs.size(), 3u);
  EXPECT_EQ(runner.runs[2]->batch.tokens, 4u);  // the last two
}

TEST_F(BatcherTest, BatchingOffRunsEveryRequestAloneAtOnce) {
  BatchingPolicy p;
  p.enabled = false;
  Batcher b(p, kH, io.provider->getTimer(), runner.runner());
  auto a = b.admit(request(2, 1));
  auto c = b.admit(request(2, 2));
  ASSERT_EQ(runner.runs.size(), 2u);
  EXPECT_EQ(runner.runs[1]->batch.members.size(), 1u);
}

// With a window, a request waits for as much company as the previous batch had, at most
// window_us; a client that is alone (previous batch of one) never waits.
// With a window, a request waits for as many requests as the layer had when its previous batch
// formed, at most window_us; a client that is alone never waits.
TEST_F(BatcherTest, TheWindowWaitsForThePreviousBatchsCompanyAtMost) {
  BatchingPolicy p;
  p.windowUs = 30000;
  Batcher b(p, kH, io.provider->getTimer(), runner.runner());
  auto a = b.admit(request(1, 1));
  ASSERT_EQ(runner.runs.size(), 1u);  // alone before, alone now: no wait
  auto c1 = b.admit(request(1, 2));
  auto c2 = b.admit(request(1, 3));
  finish(0);  // {c1, c2} go at once (two waiting ≥ one expected)
  ASSERT_EQ(runner.runs.size(), 2u);
  EXPECT_EQ(runner.runs[1]->batch.members.size(), 2u);
  finish(1);
  auto d = b.admit(request(1, 4));  // expects company of two: waits
  EXPECT_EQ(runner.runs.size(), 2u);
  auto e = b.admit(request(1, 5));  // the company arrived: the window closes early
  ASSERT_EQ(runner.runs.size(), 3u);
  EXPECT_EQ(runner.runs[2]->batch.members.size(), 2u);
  finish(2);
  auto f = b.admit(request(1, 6));  // company that never comes: at most the window
  EXPECT_EQ(runner.runs.size(), 3u);
  io.provider->getTimer().afterDelay(60 * kj::MILLISECONDS).wait(io.waitScope);
  ASSERT_EQ(runner.runs.size(), 4u);
  EXPECT_EQ(runner.runs[3]->batch.members.size(), 1u);
}

// A batch that takes far longer than the layer's usual lets the next one start.
TEST_F(BatcherTest, AnOverdueBatchLetsTheNextOneStart) {
  Batcher b({}, kH, io.provider->getTimer(), runner.runner());
  auto stuck = b.admit(request(1, 1));
  runner.runs[0]->routed();  // … and then never answers
  auto next = b.admit(request(1, 2));
  EXPECT_EQ(runner.runs.size(), 1u);
  io.provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope);
  ASSERT_EQ(runner.runs.size(), 2u);
  finish(1);
  EXPECT_EQ(next.wait(io.waitScope).output[0], 2.0f);
}

TEST_F(BatcherTest, AWithdrawnRequestLeavesTheQueueAndNeverRuns) {
  Batcher b({}, kH, io.provider->getTimer(), runner.runner());
  auto first = b.admit(request(1, 1));
  {
    auto expired = withDeadline(io.provider->getTimer(), 1, b.admit(request(1, 2)), "too late");
    EXPECT_THROW(expired.wait(io.waitScope), kj::Exception);
  }
  EXPECT_EQ(b.waitingRequests(), 0u);
  finish(0);
  EXPECT_EQ(runner.runs.size(), 1u);  // nothing was left to run
}

TEST_F(BatcherTest, AFullQueueRefusesWithResourceExhausted) {
  BatchingPolicy p;
  p.maxQueuedTokens = 4;
  Batcher b(p, kH, io.provider->getTimer(), runner.runner());
  auto running = b.admit(request(3, 1));  // runs at once: not queued
  auto queued = b.admit(request(3, 2));
  auto refused = b.admit(request(2, 3));
  try {
    refused.wait(io.waitScope);
    ADD_FAILURE() << "not refused";
  } catch (const kj::Exception& e) {
    EXPECT_TRUE(contains(e.getDescription().cStr(), "ResourceExhausted: router queue full"));
  }
}

TEST_F(BatcherTest, AMembersErrorFailsThatMemberOnly) {
  Batcher b({}, kH, io.provider->getTimer(), [](Batch batch, kj::Function<void()> routed) {
    routed();
    Batcher::Replies r;
    for (size_t i = 0; i < batch.members.size(); ++i) {
      if (i == 0) {
        r.emplace_back(ForwardReply{});
      } else {
        r.emplace_back(makeError(StatusCode::kUnavailable, "shard gone"));
      }
    }
    return kj::Promise<Batcher::Replies>(std::move(r));
  });
  auto ok = b.admit(request(1, 1));
  EXPECT_NO_THROW(ok.wait(io.waitScope));
}

}  // namespace
}  // namespace moe::router
