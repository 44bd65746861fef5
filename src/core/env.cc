// Parsing of the SY_... environment switches (env.h).
#include "switchyard/core/env.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include "switchyard/core/error.h"

namespace sy {

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}

bool env_flag(const char* name, bool fallback) {
  const char* raw = std::getenv(name);
  if (!raw || !*raw) return fallback;
  std::string v = raw;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (v == "1" || v == "true" || v == "on" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "off" || v == "no") return false;
  throw make_error<InvalidArgument>("env", name, "='", raw, "': expected 1/0 (or true/false, on/off, yes/no)");
}

int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* raw = std::getenv(name);
  if (!raw || !*raw) return fallback;
  const std::string v = raw;
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
  SY_REQUIRE(ec == std::errc() && end == v.data() + v.size() && value >= lo && value <= hi, InvalidArgument, "env",
             name, "='", v, "': expected a whole number from ", lo, " to ", hi);
  return value;
}

double env_double(const char* name, double fallback, double lo, double hi) {
  const char* raw = std::getenv(name);
  if (!raw || !*raw) return fallback;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(raw, &end);
  SY_REQUIRE(errno == 0 && end != raw && *end == '\0' && !std::isspace(static_cast<unsigned char>(raw[0])) &&
                 std::isfinite(value) && value >= lo && value <= hi,
             InvalidArgument, "env", name, "='", raw, "': expected a number from ", lo, " to ", hi);
  return value;
}

}  // namespace sy
