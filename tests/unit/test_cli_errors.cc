// Bad input through the CLI: every case exits non-zero with "error: ..." and a useful message, never a
// crash (exit codes >= 128 would mean a signal). Checkpoints are built from the mixtral golden fixture.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "switchyard/io/safetensors.h"
#include "test_util.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

std::string golden_dir(const std::string& name) { return test::fixtures_dir() + "/golden/" + name; }

// A copy of a golden checkpoint that a test may damage.
fs::path copy_fixture(const test::TempDir& tmp, const std::string& name) {
  fs::path dst = tmp.path() / name;
  fs::copy(golden_dir(name), dst, fs::copy_options::recursive);
  return dst;
}

void expect_error(const std::string& args, const std::string& fragment, int code = 1) {
  test::CommandResult r = test::run_cli(args);
  EXPECT_EQ(r.exit_code, code) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos) << "expected \"" << fragment << "\" in:\n" << r.output;
  if (code == 1) {
    EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
  }
}

std::string logits_args(const fs::path& model, const test::TempDir& tmp, const std::string& ids = "1,2,3") {
  return "logits --model " + model.string() + " --prompt-ids " + ids + " --output " + tmp.file("out.npy");
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// A switch set to a value it does not take stops the run with the variable named, instead of a silent default.
TEST(CliErrors, BadEnvironmentSwitch) {
  test::TempDir tmp;
  test::CommandResult r =
      test::run_cli(logits_args(fs::path(golden_dir("mixtral")), tmp), "SY_GROUPED_EXPERTS=bogus");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("SY_GROUPED_EXPERTS='bogus'"), std::string::npos) << r.output;
}

TEST(CliErrors, MissingDirectory) {
  test::TempDir tmp;
  expect_error(logits_args(tmp.path() / "nope", tmp), "does not exist");
}

TEST(CliErrors, DirectoryWithoutConfig) {
  test::TempDir tmp;
  expect_error(logits_args(tmp.path(), tmp), "config.json");
}

TEST(CliErrors, MalformedConfigJson) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  write_file(m / "config.json", "{\"model_type\": \"mixtral\", \"hidden_size\": ");
  expect_error(logits_args(m, tmp), "not valid JSON");
}

TEST(CliErrors, UnknownModelType) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  write_file(m / "config.json", "{\"model_type\": \"transmogrifier\"}");
  expect_error(logits_args(m, tmp), "unknown model_type \"transmogrifier\"");
}

TEST(CliErrors, ConfigMissingKey) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  write_file(m / "config.json", "{\"model_type\": \"mixtral\", \"vocab_size\": 128}");
  expect_error(logits_args(m, tmp), "missing \"hidden_size\"");
}

TEST(CliErrors, MissingSafetensors) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  fs::remove(m / "model.safetensors");
  expect_error(logits_args(m, tmp), ".safetensors");
}

TEST(CliErrors, TruncatedSafetensors) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  fs::resize_file(m / "model.safetensors", fs::file_size(m / "model.safetensors") / 2);
  expect_error(logits_args(m, tmp), "model.safetensors");
}

TEST(CliErrors, HeaderLengthPastEndOfFile) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  std::string bytes(8, '\0');
  uint64_t n = 1u << 30;
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  write_file(m / "model.safetensors", bytes + "{}");
  expect_error(logits_args(m, tmp), "past the end");
}

TEST(CliErrors, WrongDtypeString) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  std::string header = R"({"x":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})";
  while (header.size() % 8) header += ' ';
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_file(m / "model.safetensors", bytes + header + std::string(4, '\0'));
  expect_error(logits_args(m, tmp), "F99");
}

// Rewrites the fixture's checkpoint with `edit` applied to its tensor list.
void rewrite_checkpoint(const fs::path& m, const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  {
    SafetensorsCheckpoint ck(m.string());
    for (const std::string& name : ck.names()) tensors.emplace_back(name, ck.tensor(name).clone());
  }
  edit(tensors);
  write_safetensors((m / "model.safetensors").string(), tensors);
}

TEST(CliErrors, MissingTensor) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  rewrite_checkpoint(m, [](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first == "model.layers.1.self_attn.k_proj.weight"; });
  });
  expect_error(logits_args(m, tmp), "has no tensor \"model.layers.1.self_attn.k_proj.weight\"");
}

TEST(CliErrors, WrongShape) {
  test::TempDir tmp;
  fs::path m = copy_fixture(tmp, "mixtral");
  rewrite_checkpoint(m, [](auto& t) {
    for (auto& [name, tensor] : t) {
      if (name == "model.norm.weight") tensor = Tensor::zeros({tensor.numel() + 1}, DType::kF32);
    }
  });
  expect_error(logits_args(m, tmp), "\"model.norm.weight\"");
}

TEST(CliErrors, PromptIdOutOfVocabulary) {
  test::TempDir tmp;
  expect_error(logits_args(golden_dir("mixtral"), tmp, "1,2,100000"), "outside the model's vocabulary");
  expect_error("generate --model " + golden_dir("mixtral") + " --prompt-ids -1 --max-new-tokens 2",
               "outside the model's vocabulary");
}

TEST(CliErrors, MalformedPromptIds) {
  test::TempDir tmp;
  expect_error(logits_args(golden_dir("mixtral"), tmp, "1,,2"), "empty entry");
  expect_error(logits_args(golden_dir("mixtral"), tmp, "1,two"), "not an integer");
}

TEST(CliErrors, BadSamplingFlags) {
  expect_error("generate --prompt-ids 1 --temperature -1", "--temperature");
  expect_error("generate --prompt-ids 1 --temperature 1 --top-p 0", "--top-p");
  expect_error("generate --prompt-ids 1 --max-new-tokens -3", "--max-new-tokens");
}

TEST(CliErrors, BadParallelFlags) {
  const std::string m = "generate --model " + golden_dir("mixtral") + " --prompt-ids 1 --max-new-tokens 1";
  expect_error(m + " --tp 0", "--tp must be >= 1");
  expect_error(m + " --tp 2 --ep 4", "must be equal");
  expect_error(m + " --tp 2", "needs exactly 2 ranks");  // one process, not under mpirun -np 2
  expect_error(m + " --int8-dispatch", "--int8-dispatch needs expert parallelism");
}

TEST(CliErrors, UnknownFlagAndCommandAreUsageErrors) {
  expect_error("generate --prompt-ids 1 --frobnicate 3", "frobnicate", 2);
  expect_error("transmogrify", "transmogrify", 2);
}

TEST(Cli, HelpOnEveryCommand) {
  for (const char* cmd : {"", "generate", "logits", "inspect"}) {
    test::CommandResult r = test::run_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd << r.output;
    EXPECT_NE(r.output.find("--"), std::string::npos) << cmd;
  }
}

TEST(Cli, GenerateWithoutModelUsesBuiltin) {
  test::CommandResult r = test::run_cli("generate --prompt-ids 1,2,3 --max-new-tokens 5 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"ids\""), std::string::npos) << r.output;
}

TEST(Cli, SamplingIsSeededAndReproducible) {
  std::string args = "generate --prompt-ids 1,2,3 --max-new-tokens 12 --temperature 0.8 --top-k 40 --top-p 0.9 --format json";
  test::CommandResult a = test::run_cli(args + " --seed 7"), b = test::run_cli(args + " --seed 7");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
}

TEST(Cli, InspectReportsArchitectureAndParameters) {
  test::CommandResult r = test::run_cli("inspect --model " + golden_dir("deepseek_v3") + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"architecture\": \"deepseek_v3\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"attention\": \"mla\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"f32\""), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sy
