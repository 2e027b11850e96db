// What every service process does around its RPC object: listen on an address, serve until
// SIGINT/SIGTERM, and describe the model in ServiceInfo replies.
#pragma once

#include <capnp/capability.h>
#include <kj/async-io.h>

#include <string>

#include "common/checkpoint.h"
#include "common/proto/moe.capnp.h"

namespace moe {

// Resolves when the process receives SIGINT or SIGTERM. Works whichever thread the signal lands
// on (BLAS and CUDA start threads of their own before main runs), via a handler and a pipe.
kj::Promise<int> onTerminationSignal(kj::LowLevelAsyncIoProvider& io);

// Listens on `listen`, serves `bootstrap` on every connection, logs "<what> ready on <addr>", and
// returns when a termination signal arrives. Returns a process exit code.
int serveUntilSignal(kj::AsyncIoContext& io, capnp::Capability::Client bootstrap,
                     const std::string& listen, const std::string& what);

// Model facts shared by every ServiceInfo reply.
void fillModelInfo(proto::ServiceInfo::Builder info, const ModelConfig& model);

extern const char* const kMoeVersion;

}  // namespace moe
