// Logging implementation: a mutex keeps lines whole when several threads log at once.
#include "common/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace moe {
namespace {
struct LogState {
  std::mutex mutex;
  std::string component = "moe";
  LogLevel level = LogLevel::kInfo;
};
LogState& state() {
  static LogState s;
  return s;
}
const char* levelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarn:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}
}  // namespace

void setLogComponent(std::string_view component) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().component = std::string(component);
}

void setLogLevel(LogLevel level) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().level = level;
}

void logLine(LogLevel level, std::string_view message) {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (level < s.level) return;
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%03lld %s %s: %.*s\n", stamp, static_cast<long long>(ms),
               levelName(level), s.component.c_str(), static_cast<int>(message.size()),
               message.data());
  std::fflush(stderr);
}

}  // namespace moe
