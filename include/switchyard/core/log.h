// Minimal leveled logging to stderr. Level from SY_LOG_LEVEL (debug, info, warn, error; default warn)
// or set_log_level(). Not a structured-logging framework: the server and trainer format their own records.
#pragma once

#include "switchyard/core/error.h"

namespace sy {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_write(LogLevel level, const std::string& message);

template <typename... Args>
void log_debug(const Args&... args) { if (log_level() <= LogLevel::kDebug) log_write(LogLevel::kDebug, detail::concat(args...)); }
template <typename... Args>
void log_info(const Args&... args) { if (log_level() <= LogLevel::kInfo) log_write(LogLevel::kInfo, detail::concat(args...)); }
template <typename... Args>
void log_warn(const Args&... args) { if (log_level() <= LogLevel::kWarn) log_write(LogLevel::kWarn, detail::concat(args...)); }
template <typename... Args>
void log_error(const Args&... args) { if (log_level() <= LogLevel::kError) log_write(LogLevel::kError, detail::concat(args...)); }

}  // namespace sy
