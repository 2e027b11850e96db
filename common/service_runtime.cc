// Service process runtime: signal handling and the serve loop.
#include "common/service_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "common/log.h"
#include "common/rpc_endpoint.h"

namespace moe {

const char* const kMoeVersion = "0.1.0";

namespace {
// The write end of the signal pipe. A signal handler can reach nothing else, so this one
// process-wide value is unavoidable; it is set once before the handler is installed.
int gSignalPipeWrite = -1;

void onSignal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] auto n = write(gSignalPipeWrite, &b, 1);
  errno = saved;
}
}  // namespace

kj::Promise<int> onTerminationSignal(kj::LowLevelAsyncIoProvider& io) {
  int fds[2];
  KJ_SYSCALL(pipe2(fds, O_CLOEXEC | O_NONBLOCK));
  gSignalPipeWrite = fds[1];
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  auto stream = io.wrapInputFd(fds[0], kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  auto buf = kj::heapArray<unsigned char>(1);
  auto read = stream->tryRead(buf.begin(), 1, 1);
  return read.then([buf = kj::mv(buf)](size_t n) { return n == 1 ? static_cast<int>(buf[0]) : 0; })
      .attach(kj::mv(stream));
}

int serveUntilSignal(kj::AsyncIoContext& io, capnp::Capability::Client bootstrap,
                     const std::string& listen, const std::string& what) {
  auto signal = onTerminationSignal(*io.lowLevelProvider);
  kj::Own<kj::ConnectionReceiver> receiver;
  try {
    auto addr = io.provider->getNetwork().parseAddress(listen).wait(io.waitScope);
    receiver = addr->listen();
  } catch (const kj::Exception& e) {
    logError("cannot listen on ", listen, ": ", e.getDescription().cStr());
    return 1;
  }
  RpcListener listener(kj::mv(receiver), kj::mv(bootstrap));
  auto serving = listener.run().then([]() { return 0; },
                                     [](kj::Exception&& e) {
                                       logError("listener failed: ", e.getDescription().cStr());
                                       return 1;
                                     });
  logInfo(what, " ready on ", listen);
  int sig = 0;
  auto code = signal
                  .then([&sig](int s) {
                    sig = s;
                    return 0;
                  })
                  .exclusiveJoin(kj::mv(serving))
                  .wait(io.waitScope);
  if (sig != 0) logInfo("received signal ", sig, "; shutting down");
  return code;
}

void fillModelInfo(proto::ServiceInfo::Builder info, const ModelConfig& model) {
  info.setVersion(kMoeVersion);
  info.setModelType(model.modelType);
  info.setHiddenSize(model.hiddenSize);
  info.setIntermediateSize(model.intermediateSize);
  info.setNumExperts(model.numExperts);
  info.setTopK(model.topK);
  auto layers = info.initMoeLayers(static_cast<unsigned>(model.moeLayers.size()));
  for (size_t i = 0; i < model.moeLayers.size(); ++i)
    layers.set(static_cast<unsigned>(i), model.moeLayers[i]);
}

}  // namespace moe
