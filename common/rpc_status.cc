// Status codes at the RPC edge, in metrics and in exit statuses (see rpc_status.h).
#include "common/rpc_status.h"

#include <array>
#include <string>

namespace moe {
namespace {

struct CodeRow {
  StatusCode code;
  kj::Exception::Type rpcType;
  std::string_view metricLabel;
  int exitStatus;
};

// One row per code: everything the outside world sees of it.
constexpr std::array<CodeRow, 7> kCodes = {{
    {StatusCode::kOk, kj::Exception::Type::FAILED, "ok", 0},
    {StatusCode::kInvalidArgument, kj::Exception::Type::FAILED, "invalid_argument", 2},
    {StatusCode::kFailedPrecondition, kj::Exception::Type::FAILED, "failed_precondition", 3},
    {StatusCode::kUnavailable, kj::Exception::Type::DISCONNECTED, "unavailable", 4},
    {StatusCode::kDeadlineExceeded, kj::Exception::Type::OVERLOADED, "deadline_exceeded", 5},
    {StatusCode::kResourceExhausted, kj::Exception::Type::OVERLOADED, "resource_exhausted", 6},
    {StatusCode::kInternal, kj::Exception::Type::FAILED, "internal", 1},
}};

const CodeRow& rowFor(StatusCode code) {
  for (const auto& row : kCodes) {
    if (row.code == code) return row;
  }
  return kCodes.back();
}

constexpr std::string_view kRemotePrefix = "remote exception: ";

// The code a "Code: message" description names, or kOk when it names none.
StatusCode codeNamedBy(std::string_view description, std::string_view& message) {
  for (const auto& row : kCodes) {
    const std::string_view name = statusCodeName(row.code);
    if (row.code != StatusCode::kOk && description.size() > name.size() + 1 &&
        description.substr(0, name.size()) == name && description[name.size()] == ':') {
      message = description.substr(name.size() + 1);
      if (!message.empty() && message.front() == ' ') message.remove_prefix(1);
      return row.code;
    }
  }
  return StatusCode::kOk;
}

}  // namespace

kj::Exception toRpcException(const Status& status) {
  const CodeRow& row = rowFor(status.code());
  const std::string text = std::string(statusCodeName(row.code)) + ": " + status.message();
  return kj::Exception(row.rpcType, __FILE__, __LINE__, kj::str(text.c_str()));
}

void throwStatus(const Status& status) {
  kj::throwFatalException(toRpcException(status));
}

Status statusFromException(const kj::Exception& e) {
  std::string_view d(e.getDescription().cStr());
  while (d.substr(0, kRemotePrefix.size()) == kRemotePrefix) d.remove_prefix(kRemotePrefix.size());
  std::string_view message;
  if (auto code = codeNamedBy(d, message); code != StatusCode::kOk) {
    return Status::error(code, std::string(message));
  }
  switch (e.getType()) {
    case kj::Exception::Type::DISCONNECTED:
      return Status::error(StatusCode::kUnavailable, std::string(d));
    case kj::Exception::Type::OVERLOADED:
      return Status::error(StatusCode::kResourceExhausted, std::string(d));
    default:
      return Status::error(StatusCode::kInternal, std::string(d));
  }
}

std::string_view metricCodeLabel(StatusCode code) {
  return rowFor(code).metricLabel;
}

int exitStatusFor(StatusCode code) {
  return rowFor(code).exitStatus;
}

}  // namespace moe
