// The SY_... environment switches (core/env.h): accepted spellings and numbers, defaults when unset or empty,
// and a clear InvalidArgument naming the variable for any other value.
#include <gtest/gtest.h>

#include <cstdlib>
#include <initializer_list>
#include <string>

#include "switchyard/core/env.h"
#include "switchyard/core/error.h"

namespace sy {
namespace {

constexpr const char* kVar = "SY_TEST_ENV_SWITCH";

struct EnvGuard {  // unsets the test variable however a test ends
  ~EnvGuard() { unsetenv(kVar); }
};

// Sets the variable to `value`, calls parse() and expects an InvalidArgument whose message holds each fragment.
template <typename Parse>
void expect_refused(const char* value, Parse parse, std::initializer_list<std::string> fragments) {
  setenv(kVar, value, 1);
  try {
    parse();
    ADD_FAILURE() << "'" << value << "' was accepted";
  } catch (const InvalidArgument& e) {
    for (const std::string& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(Env, FlagSpellings) {
  EnvGuard guard;
  unsetenv(kVar);
  EXPECT_TRUE(env_flag(kVar, true));
  EXPECT_FALSE(env_flag(kVar, false));
  EXPECT_FALSE(env_set(kVar));
  setenv(kVar, "", 1);
  EXPECT_TRUE(env_flag(kVar, true)) << "empty is unset";
  EXPECT_FALSE(env_set(kVar));
  for (const char* on : {"1", "true", "TRUE", "On", "yes"}) {
    setenv(kVar, on, 1);
    EXPECT_TRUE(env_flag(kVar, false)) << on;
    EXPECT_TRUE(env_set(kVar));
  }
  for (const char* off : {"0", "false", "OFF", "No"}) {
    setenv(kVar, off, 1);
    EXPECT_FALSE(env_flag(kVar, true)) << off;
  }
}

TEST(Env, FlagRejectsOtherValues) {
  EnvGuard guard;
  for (const char* bad : {"2", "enable", " 1", "1 ", "-1", "truee"}) {
    expect_refused(bad, [] { env_flag(kVar, false); }, {kVar, bad});
  }
}

TEST(Env, IntRangeAndErrors) {
  EnvGuard guard;
  unsetenv(kVar);
  EXPECT_EQ(env_int(kVar, 7, 0, 10), 7);
  setenv(kVar, "0", 1);
  EXPECT_EQ(env_int(kVar, 7, 0, 10), 0);
  setenv(kVar, "10", 1);
  EXPECT_EQ(env_int(kVar, 7, 0, 10), 10);
  setenv(kVar, "-3", 1);
  EXPECT_EQ(env_int(kVar, 7, -5, 10), -3);
  for (const char* bad : {"11", "-1", "abc", "3x", "1.5", " 4", "99999999999999999999999"}) {
    setenv(kVar, bad, 1);
    EXPECT_THROW(env_int(kVar, 7, 0, 10), InvalidArgument) << bad;
  }
  expect_refused("12", [] { env_int(kVar, 7, 0, 10); }, {kVar, "from 0 to 10"});
}

TEST(Env, DoubleRangeAndErrors) {
  EnvGuard guard;
  unsetenv(kVar);
  EXPECT_EQ(env_double(kVar, 2.5, 0, 10), 2.5);
  setenv(kVar, "0.25", 1);
  EXPECT_EQ(env_double(kVar, 2.5, 0, 10), 0.25);
  setenv(kVar, "1e1", 1);
  EXPECT_EQ(env_double(kVar, 2.5, 0, 10), 10.0);
  for (const char* bad : {"abc", "1.5s", " 1", "nan", "inf", "-0.5", "11", "1e999"}) {
    setenv(kVar, bad, 1);
    EXPECT_THROW(env_double(kVar, 2.5, 0, 10), InvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace sy
