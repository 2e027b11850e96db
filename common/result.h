// Status and Result<T>: errors as values, each with a code and a human message, for code paths
// that must not throw (kernels, decoding, planning, routing). The code says what kind of failure
// it is; the message says what to fix. common/rpc_status.h maps codes, in one place, to the RPC
// exception, the metrics' `code` label and the command-line programs' exit status.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace moe {

// The kinds of failure a caller can act on differently (gRPC / Triton's codes, a subset).
enum class StatusCode {
  kOk,
  kInvalidArgument,     // the request or input is wrong; retrying it will not help
  kFailedPrecondition,  // the system is not in a state to serve it (config, model, placement)
  kUnavailable,         // a peer cannot be reached, or is draining; another replica may serve
  kDeadlineExceeded,    // the call's deadline passed first
  kResourceExhausted,   // a limit or a queue is full; retry later or send less
  kInternal,            // a bug or a failure inside the service
};

// "InvalidArgument", … : the stable spelling on the wire (the `CODE: message` form).
std::string_view statusCodeName(StatusCode code);

struct Error {
  StatusCode code = StatusCode::kInvalidArgument;
  std::string message;
};

class Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  // Input validation is by far the common case, so a bare message means kInvalidArgument.
  static Status error(std::string message) {
    return Status(StatusCode::kInvalidArgument, std::move(message));
  }
  static Status error(StatusCode code, std::string message) {
    return Status(code, std::move(message));
  }
  bool isOk() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return isOk(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like std::expected
  Result(Error error) : v_(std::move(error)) {}
  Result(const Status& failed) : v_(Error{failed.code(), failed.message()}) {}  // NOLINT
  bool isOk() const { return v_.index() == 0; }
  explicit operator bool() const { return isOk(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const std::string& error() const { return std::get<1>(v_).message; }
  StatusCode code() const { return isOk() ? StatusCode::kOk : std::get<1>(v_).code; }
  Status status() const { return isOk() ? Status::ok() : Status::error(code(), error()); }

 private:
  std::variant<T, Error> v_;
};

// A bare message means kInvalidArgument (see Status::error).
inline Error makeError(std::string message) {
  return Error{StatusCode::kInvalidArgument, std::move(message)};
}
inline Error makeError(StatusCode code, std::string message) {
  return Error{code, std::move(message)};
}
// Carries a failed status (its code and message) into a Result of another type.
inline Error makeError(const Status& failed) {
  return Error{failed.code(), failed.message()};
}

inline std::string_view statusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kFailedPrecondition:
      return "FailedPrecondition";
    case StatusCode::kUnavailable:
      return "Unavailable";
    case StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case StatusCode::kResourceExhausted:
      return "ResourceExhausted";
    case StatusCode::kInternal:
      return "Internal";
  }
  return "Internal";
}

}  // namespace moe
