// Test helpers; see test_util.h.
#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>

namespace sy::test {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("sy-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult run_cli(const std::string& args, const std::string& env) {
  CommandResult r;
  std::string cmd = (env.empty() ? "" : env + " ") + cli_path() + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return r;
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(a[i] - b[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(b[i])));
  }
  if (a.size() != b.size()) return INFINITY;
  return max_ref == 0 ? max_diff : max_diff / max_ref;
}

std::vector<std::string> golden_fixture_names() {
  std::vector<std::string> names;
  std::filesystem::path root = std::filesystem::path(fixtures_dir()) / "golden";
  if (!std::filesystem::exists(root)) return names;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    if (std::filesystem::exists(e.path() / "config.json")) names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<BatchSequence> prefill_chunk(const std::vector<std::vector<int64_t>>& prompts,
                                         const std::vector<BatchSequence>& tables, int chunk,
                                         std::vector<int64_t>& done, std::vector<size_t>& who) {
  std::vector<BatchSequence> step;
  who.clear();
  for (size_t s = 0; s < prompts.size(); ++s) {
    const int64_t len = static_cast<int64_t>(prompts[s].size());
    const int64_t end = chunk == 0 ? (len + 1) / 2 : len;
    if (end == done[s]) continue;
    BatchSequence b = tables[s];
    b.start = done[s];
    b.ids.assign(prompts[s].begin() + done[s], prompts[s].begin() + end);
    b.want_logits = end == len;
    step.push_back(b);
    who.push_back(s);
    done[s] = end;
  }
  return step;
}

}  // namespace sy::test
