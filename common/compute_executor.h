// ComputeExecutor: one worker thread that runs compute jobs in order, off the RPC event loop.
// A job is posted from the event-loop thread and its result comes back as a kj::Promise on that
// loop, so RPC keeps flowing while a GEMM runs.
#pragma once

#include <kj/async.h>
#include <kj/mutex.h>
#include <kj/thread.h>

#include <atomic>
#include <string>

namespace moe {

class ComputeExecutor {
 public:
  explicit ComputeExecutor(std::string name);
  ~ComputeExecutor();  // finishes the running job, drops queued ones, joins the thread
  ComputeExecutor(const ComputeExecutor&) = delete;
  ComputeExecutor& operator=(const ComputeExecutor&) = delete;

  // Runs `func` on the worker; the promise resolves on the calling thread's event loop. `func`
  // must only touch data that stays alive and unshared until the promise resolves.
  template <typename Func>
  kj::PromiseForResult<Func, void> run(Func&& func) {
    return executor_->executeAsync([mark = QueuedMark(queued_), f = kj::fwd<Func>(func)]() mutable {
      mark.started();
      return f();
    });
  }

  // Jobs posted and not yet started (a queue-depth gauge).
  int64_t queued() const { return queued_.load(std::memory_order_relaxed); }

 private:
  // Counts a job as queued from posting until it starts, or until it is dropped unstarted (a
  // cancelled call): the job's functor owns the mark and is destroyed either way.
  class QueuedMark {
   public:
    explicit QueuedMark(std::atomic<int64_t>& queued) : queued_(&queued) {
      queued_->fetch_add(1, std::memory_order_relaxed);
    }
    QueuedMark(QueuedMark&& other) noexcept : queued_(other.queued_) { other.queued_ = nullptr; }
    QueuedMark(const QueuedMark&) = delete;
    QueuedMark& operator=(const QueuedMark&) = delete;
    QueuedMark& operator=(QueuedMark&&) = delete;
    ~QueuedMark() { started(); }
    void started() {
      if (queued_ != nullptr) queued_->fetch_sub(1, std::memory_order_relaxed);
      queued_ = nullptr;
    }

   private:
    std::atomic<int64_t>* queued_;
  };

  struct Shared {
    kj::Maybe<kj::Own<const kj::Executor>> executor;
  };
  kj::MutexGuarded<Shared> shared_;
  kj::Own<const kj::Executor> executor_;
  kj::Own<kj::PromiseFulfiller<void>> stop_;  // lives on the worker; only touched there
  std::atomic<int64_t> queued_{0};
  kj::Own<kj::Thread> thread_;
};

}  // namespace moe
