// Text prompts through `switchyard generate`: the model directory's tokenizer.json encodes --prompt, the
// streamed text equals the decoded ids, and JSON output carries text next to ids.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/io/tokenizer.h"
#include "switchyard/model/builtin.h"
#include "test_util.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

// The built-in model's weights (vocab 512) with a 501-token fixture tokenizer beside them.
fs::path model_with_tokenizer(const test::TempDir& tmp) {
  fs::path dir = tmp.path() / "model";
  write_builtin_model(dir.string());
  fs::copy_file(test::fixtures_dir() + "/tokenizers/nfd_whitespace/tokenizer.json", dir / "tokenizer.json");
  return dir;
}

TEST(CliText, PromptTextGivesIdsAndText) {
  test::TempDir tmp;
  fs::path dir = model_with_tokenizer(tmp);
  auto r = test::run_cli("generate --model " + dir.string() + " --prompt 'the quick brown fox' --max-new-tokens 6 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  std::vector<int32_t> ids = j["ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(ids.size(), 6u);
  Tokenizer tok = Tokenizer::from_file((dir / "tokenizer.json").string());
  EXPECT_EQ(j["text"].get<std::string>(), tok.decode(ids, true));

  // Streaming text output prints the same text (plus a newline).
  auto s = test::run_cli("generate --model " + dir.string() + " --prompt 'the quick brown fox' --max-new-tokens 6");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_EQ(s.output, j["text"].get<std::string>() + "\n");
}

TEST(CliText, TextPromptWithoutTokenizerIsAClearError) {
  auto r = test::run_cli("generate --prompt hello --max-new-tokens 2", "SY_BUILTIN_MODEL=synthetic");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("has no tokenizer.json"), std::string::npos) << r.output;
  r = test::run_cli("generate --max-new-tokens 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--prompt-ids, --prompt or --chat"), std::string::npos) << r.output;
  r = test::run_cli("generate --prompt a --prompt-ids 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(CliText, ChatWithoutTemplateIsAClearError) {
  test::TempDir tmp;
  fs::path dir = model_with_tokenizer(tmp);
  auto r = test::run_cli("generate --model " + dir.string() + " --chat hi --max-new-tokens 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("tokenizer_config.json"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sy

namespace sy {
namespace {

TEST(CliText, ChatUsesTheTemplateFromTokenizerConfig) {
  test::TempDir tmp;
  fs::path dir = model_with_tokenizer(tmp);
  {
    std::ofstream cfg(dir / "tokenizer_config.json");
    cfg << R"({"chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"})";
  }
  auto chat = test::run_cli("generate --model " + dir.string() + " --chat 'hello there' --max-new-tokens 4 --format json");
  ASSERT_EQ(chat.exit_code, 0) << chat.output;
  // The same ids as the rendered ChatML text given directly (encoded without extra special tokens).
  std::string rendered = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n";
  Tokenizer tok = Tokenizer::from_file((dir / "tokenizer.json").string());
  std::vector<int32_t> ids = tok.encode(rendered, false);
  std::string id_list;
  for (size_t i = 0; i < ids.size(); ++i) id_list += (i ? "," : "") + std::to_string(ids[i]);
  auto direct = test::run_cli("generate --model " + dir.string() + " --prompt-ids " + id_list + " --max-new-tokens 4 --format json");
  ASSERT_EQ(direct.exit_code, 0) << direct.output;
  EXPECT_EQ(chat.output, direct.output);
}

}  // namespace
}  // namespace sy
