// The one place where a Status code meets the outside world: the Cap'n Proto exception at the RPC
// edge (a stable "Code: message" description that clients parse, plus the KJ exception type that
// fits), the `code` label of the request and error metrics, and the exit status of the
// command-line programs. Nothing else looks at an error's text to learn its kind.
#pragma once

#include <kj/exception.h>

#include <string_view>

#include "common/result.h"

namespace moe {

// The exception a failed status becomes at the RPC edge: description "InvalidArgument: message".
kj::Exception toRpcException(const Status& status);
[[noreturn]] void throwStatus(const Status& status);
[[noreturn]] inline void throwStatus(StatusCode code, std::string message) {
  throwStatus(Status::error(code, std::move(message)));
}

// The status an exception stands for: the code its "Code: message" description names (after
// Cap'n Proto's "remote exception: " prefix, when it crossed the wire), or, for exceptions KJ
// raised itself (a dropped connection, a refused connect), the code its KJ type implies.
Status statusFromException(const kj::Exception& e);

// "ok", "invalid_argument", …: the value of the metrics' `code` label.
std::string_view metricCodeLabel(StatusCode code);

// The exit status of a command-line program that ends on `code`: 0 ok, 2 invalid argument (as
// for a usage error), 1 internal, and 3… for the rest (listed in README "Error codes").
int exitStatusFor(StatusCode code);

}  // namespace moe
