// Logging sink: one line per record on stderr, serialised by a mutex.
#include "switchyard/core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace sy {

namespace {
LogLevel level_from_environment() {
  const char* env = std::getenv("SY_LOG_LEVEL");
  if (!env) return LogLevel::kWarn;
  std::string s(env);
  if (s == "debug") return LogLevel::kDebug;
  if (s == "info") return LogLevel::kInfo;
  if (s == "warn") return LogLevel::kWarn;
  if (s == "error") return LogLevel::kError;
  if (s == "off") return LogLevel::kOff;
  return LogLevel::kWarn;
}
std::atomic<int> g_level{static_cast<int>(level_from_environment())};
std::mutex g_log_mutex;
}  // namespace

LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

void log_write(LogLevel level, const std::string& message) {
  static const char* names[] = {"debug", "info", "warn", "error", "off"};
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::fprintf(stderr, "[switchyard %s] %s\n", names[static_cast<int>(level)], message.c_str());
}

}  // namespace sy
