// Golden tests for the tokenizer: on every fixture under tests/fixtures/tokenizers/<name>/, our ids and decoded
// text must equal those the Hugging Face `tokenizers` library recorded (tools/make_tokenizer_goldens.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/io/tokenizer.h"

namespace {

namespace fs = std::filesystem;

std::string fixtures_dir() { return std::string(SY_FIXTURES_DIR) + "/tokenizers"; }

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(fixtures_dir()))
    if (fs::exists(e.path() / "expected.json")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, IdsAndTextMatchTheLibrary) {
  const std::string dir = fixtures_dir() + "/" + GetParam();
  sy::Tokenizer tok = sy::Tokenizer::from_file(dir + "/tokenizer.json");
  std::ifstream in(dir + "/expected.json");
  nlohmann::json expected = nlohmann::json::parse(in);
  ASSERT_GT(expected["cases"].size(), 0u);
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    SCOPED_TRACE("text: \"" + text + "\"");
    auto ids = tok.encode(text, true);
    auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids, want) << "got " << show(ids) << "\nwant " << show(want);
    auto plain = tok.encode(text, false);
    EXPECT_EQ(plain, c["ids_no_special"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok.decode(want, false), c["decoded"].get<std::string>());
    EXPECT_EQ(tok.decode(want, true), c["decoded_skip_special"].get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerGolden, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
