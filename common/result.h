// Result<T> and Status: errors as values for code paths that must not throw (kernels, decoding,
// planning). RPC handlers turn an error into a KJ exception with the same human message.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace moe {

struct Error {
  std::string message;
};

class Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(std::string message) { return Status(std::move(message)); }
  bool isOk() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  explicit Status(std::string message) : failed_(true), message_(std::move(message)) {}
  bool failed_ = false;
  std::string message_;
};

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like std::expected
  Result(Error error) : v_(std::move(error)) {}
  bool isOk() const { return v_.index() == 0; }
  explicit operator bool() const { return isOk(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const std::string& error() const { return std::get<1>(v_).message; }
  Status status() const { return isOk() ? Status::ok() : Status::error(error()); }

 private:
  std::variant<T, Error> v_;
};

inline Error makeError(std::string message) {
  return Error{std::move(message)};
}

}  // namespace moe
