// ComputeExecutor: the worker runs its own KJ event loop so kj::Executor can deliver jobs to it.
#include "common/compute_executor.h"

#include <pthread.h>

namespace moe {

ComputeExecutor::ComputeExecutor(std::string name) {
  thread_ = kj::heap<kj::Thread>([this, name = kj::mv(name)]() {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    kj::EventLoop loop;
    kj::WaitScope waitScope(loop);
    auto paf = kj::newPromiseAndFulfiller<void>();
    stop_ = kj::mv(paf.fulfiller);
    shared_.lockExclusive()->executor = kj::getCurrentThreadExecutor().addRef();
    paf.promise.wait(waitScope);
  });
  // Wait for the worker to publish its executor.
  shared_.when([](const Shared& s) { return s.executor != nullptr; },
               [this](Shared& s) {
                 KJ_IF_MAYBE (e, s.executor) {
                   executor_ = (*e)->addRef();
                 }
               });
}

ComputeExecutor::~ComputeExecutor() {
  executor_->executeSync([this]() { stop_->fulfill(); });
  thread_ = nullptr;  // joins
}

}  // namespace moe
