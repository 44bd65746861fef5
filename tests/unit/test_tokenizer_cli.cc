// `switchyard tokenize` end to end: the printed ids and text equal the library API's, and errors exit non-zero.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "switchyard/io/tokenizer.h"

namespace {

// Runs a shell command; returns (exit code, stdout + stderr).
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

const std::string kTok = std::string(SY_FIXTURES_DIR) + "/tokenizers/qwen2_split/tokenizer.json";

TEST(TokenizeCli, EncodeAndDecodeJson) {
  sy::Tokenizer tok = sy::Tokenizer::from_file(kTok);
  const std::string text = "Hello <|im_start|>world 123 東京";
  auto [rc, out] = run(std::string(SY_CLI_PATH) + " tokenize --tokenizer " + kTok + " --text '" + text + "'");
  ASSERT_EQ(rc, 0) << out;
  auto ids = nlohmann::json::parse(out)["ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(ids, tok.encode(text));
  std::string list;
  for (int32_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  auto [rc2, out2] = run(std::string(SY_CLI_PATH) + " tokenize --tokenizer " + kTok + " --decode " + list);
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_EQ(nlohmann::json::parse(out2)["text"].get<std::string>(), text);
}

TEST(TokenizeCli, ErrorsExitNonZero) {
  auto [rc, out] = run(std::string(SY_CLI_PATH) + " tokenize --tokenizer /nonexistent.json --text x");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("error: [tokenizer] cannot open"), std::string::npos) << out;
  auto [rc2, out2] = run(std::string(SY_CLI_PATH) + " tokenize --tokenizer " + kTok);
  EXPECT_EQ(rc2, 2) << out2;
}

}  // namespace
