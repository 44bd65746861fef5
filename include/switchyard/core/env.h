// Engine switches read from the environment (the SY_... variables of docs/design.md): a value that is not one
// the switch takes is an InvalidArgument naming the variable and the value, never a silent default.
#pragma once

#include <cstdint>

namespace sy {

// A boolean switch: "1", "true", "on" or "yes" turn it on; "0", "false", "off" or "no" off (any case); unset
// or empty: fallback.
bool env_flag(const char* name, bool fallback);
// Whether the variable is set to a non-empty value.
bool env_set(const char* name);
// A decimal integer in [lo, hi]; unset or empty: fallback.
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi);
// A finite decimal number in [lo, hi]; unset or empty: fallback.
double env_double(const char* name, double fallback, double lo, double hi);

}  // namespace sy
