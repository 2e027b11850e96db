// Unit tests for common/rpc_status: every code survives the trip through an RPC exception (also
// after Cap'n Proto's "remote exception: " prefix), KJ's own exceptions get the code their type
// implies, and every code has one metric label and one exit status.
#include "common/rpc_status.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace moe {
namespace {

const StatusCode kAll[] = {StatusCode::kInvalidArgument,   StatusCode::kFailedPrecondition,
                           StatusCode::kUnavailable,       StatusCode::kDeadlineExceeded,
                           StatusCode::kResourceExhausted, StatusCode::kInternal};

TEST(RpcStatus, EveryCodeRoundTripsThroughAnException) {
  for (StatusCode code : kAll) {
    const Status s = Status::error(code, "hidden: 7 columns, expected 8");
    const kj::Exception e = toRpcException(s);
    EXPECT_EQ(std::string(e.getDescription().cStr()),
              std::string(statusCodeName(code)) + ": hidden: 7 columns, expected 8");
    const Status back = statusFromException(e);
    EXPECT_EQ(back.code(), code) << statusCodeName(code);
    EXPECT_EQ(back.message(), "hidden: 7 columns, expected 8");
    const kj::Exception remote(e.getType(), __FILE__, __LINE__,
                               kj::str("remote exception: ", e.getDescription()));
    EXPECT_EQ(statusFromException(remote).code(), code) << statusCodeName(code);
  }
}

TEST(RpcStatus, KjExceptionsWithoutACodeGetOneFromTheirType) {
  const struct {
    kj::Exception::Type type;
    StatusCode code;
  } cases[] = {{kj::Exception::Type::DISCONNECTED, StatusCode::kUnavailable},
               {kj::Exception::Type::OVERLOADED, StatusCode::kResourceExhausted},
               {kj::Exception::Type::FAILED, StatusCode::kInternal},
               {kj::Exception::Type::UNIMPLEMENTED, StatusCode::kInternal}};
  for (const auto& c : cases) {
    // A message that merely starts like a code name is not one.
    kj::Exception e(c.type, __FILE__, __LINE__, kj::str("Internally: connection reset"));
    EXPECT_EQ(statusFromException(e).code(), c.code);
    EXPECT_EQ(statusFromException(e).message(), "Internally: connection reset");
  }
}

TEST(RpcStatus, EveryCodeHasItsOwnLabelAndExitStatus) {
  std::set<std::string_view> labels;
  std::set<int> exits;
  for (StatusCode code : kAll) {
    labels.insert(metricCodeLabel(code));
    exits.insert(exitStatusFor(code));
  }
  EXPECT_EQ(labels.size(), std::size(kAll));
  EXPECT_EQ(exits.size(), std::size(kAll));
  EXPECT_EQ(metricCodeLabel(StatusCode::kOk), "ok");
  EXPECT_EQ(exitStatusFor(StatusCode::kOk), 0);
  EXPECT_EQ(exitStatusFor(StatusCode::kInvalidArgument), 2);
  EXPECT_EQ(metricCodeLabel(StatusCode::kDeadlineExceeded), "deadline_exceeded");
}

TEST(RpcStatus, ResultsCarryTheirCodeAcrossTypes) {
  Result<int> failed = makeError(StatusCode::kUnavailable, "gone");
  Result<double> carried = makeError(failed.status());
  EXPECT_EQ(carried.code(), StatusCode::kUnavailable);
  EXPECT_EQ(carried.error(), "gone");
  EXPECT_EQ(Result<int>(makeError("bad")).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
