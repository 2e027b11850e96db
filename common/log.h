// Logging: one line per event on stderr, "<time> <level> <component>: message". Thread-safe.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace moe {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void setLogComponent(std::string_view component);  // e.g. "router", "expert[shard-0]"
void setLogLevel(LogLevel level);
void logLine(LogLevel level, std::string_view message);

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

template <typename... Args>
void logInfo(Args&&... args) {
  logLine(LogLevel::kInfo, detail::concat(std::forward<Args>(args)...));
}
template <typename... Args>
void logWarn(Args&&... args) {
  logLine(LogLevel::kWarn, detail::concat(std::forward<Args>(args)...));
}
template <typename... Args>
void logError(Args&&... args) {
  logLine(LogLevel::kError, detail::concat(std::forward<Args>(args)...));
}
template <typename... Args>
void logDebug(Args&&... args) {
  logLine(LogLevel::kDebug, detail::concat(std::forward<Args>(args)...));
}

}  // namespace moe
