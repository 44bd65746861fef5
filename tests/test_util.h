// Helpers shared by the test suites: fixture paths, temporary directories, running the CLI.
#pragma once

#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <string>
#include <vector>

#include "switchyard/model/paged_kv_pool.h"

namespace sy::test {

// The fixtures folder: $SY_FIXTURES_DIR when set (binaries run from another checkout, e.g. on a GPU machine),
// else the source tree's tests/fixtures.
inline std::string fixtures_dir() {
  const char* env = std::getenv("SY_FIXTURES_DIR");
  return env && *env ? std::string(env) : std::string(SY_FIXTURES_DIR);
}
inline std::string cli_path() { return SY_CLI_PATH; }
// Names of the golden fixture folders (tests/fixtures/golden/NAME with a config.json), sorted.
std::vector<std::string> golden_fixture_names();

// Sets an environment variable for one scope (e.g. the device forward's path switches, read at upload), then
// restores its previous value (or absence).
struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs the switchyard binary with `args` (already shell-quoted where needed), after `env` assignments
// such as "SY_BUILTIN_MODEL=synthetic" when given.
CommandResult run_cli(const std::string& args, const std::string& env = "");

// Max |a - b| / max |b|: the relative error used by the golden tests.
double relative_error(const std::vector<float>& a, const std::vector<float>& b);

// One pass of the two-chunk prefill the batched-forward tests run: chunk 0 takes the first half of every
// prompt (rounded up), chunk 1 the rest with logits; a prompt with nothing left is left out. `tables[s]`
// carries prompt s's block table; `done[s]` counts its tokens already cached (advanced here); `who` gets
// the prompt index of every sequence of the returned step.
std::vector<BatchSequence> prefill_chunk(const std::vector<std::vector<int64_t>>& prompts,
                                         const std::vector<BatchSequence>& tables, int chunk,
                                         std::vector<int64_t>& done, std::vector<size_t>& who);

}  // namespace sy::test
