// Bad input to `switchyard prune` and `generate --premoe-store`: each case exits 1 with "error: [prune] ..."
// saying what to do, never a crash. Built on the qwen3_moe golden fixture (8 experts, top-2).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

std::string golden(const std::string& name) { return test::fixtures_dir() + "/golden/" + name; }

void expect_error(const std::string& args, const std::string& fragment) {
  test::CommandResult r = test::run_cli(args);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
  EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos) << "expected \"" << fragment << "\" in:\n" << r.output;
}

// A store with task "t" profiled on qwen3_moe.
class PremoeErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(tmp_.file("ids.txt")) << "1 2 3 4 5 6 7 8\n";
    store_ = tmp_.file("store");
    test::CommandResult r = test::run_cli("prune profile --model " + golden("qwen3_moe") + " --task t --data " +
                                          tmp_.file("ids.txt") + " --store " + store_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  std::string build(const std::string& extra) {
    return "prune build --model " + golden("qwen3_moe") + " --store " + store_ + " --output " +
           tmp_.file("out") + " " + extra;
  }
  test::TempDir tmp_;
  std::string store_;
};

TEST_F(PremoeErrors, KeepLargerThanExperts) { expect_error(build("--task t --keep 9"), "larger than the model's 8"); }

TEST_F(PremoeErrors, KeepSmallerThanTopK) { expect_error(build("--task t --keep 1"), "smaller than the 2 experts"); }

TEST_F(PremoeErrors, ExpertsPerTokenAboveModel) {
  expect_error(build("--task t --keep 4 --experts-per-token 3"), "must be in [1, 2]");
}

TEST_F(PremoeErrors, UnknownTask) { expect_error(build("--task nope --keep 4"), "task \"nope\" is not in"); }

TEST_F(PremoeErrors, StoreFromAnotherModel) {
  expect_error("prune build --model " + golden("qwen3_moe_native") + " --store " + store_ + " --task t --keep 2 --output " +
                   tmp_.file("o2"),
               "profiled on a different model");
  expect_error("generate --model " + golden("olmoe") + " --premoe-store " + store_ + " --keep 2 --prompt-ids 1,2",
               "profiled on a different model");
  expect_error("prune profile --model " + golden("olmoe") + " --task u --data " + tmp_.file("ids.txt") + " --store " +
                   store_,
               "different model");
}

TEST_F(PremoeErrors, CorruptStore) {
  const std::string file = store_ + "/premoe_store.json";
  const auto size = fs::file_size(file);
  fs::resize_file(file, size / 3);
  expect_error(build("--task t --keep 4"), "is damaged");
  expect_error("generate --model " + golden("qwen3_moe") + " --premoe-store " + store_ + " --keep 4 --prompt-ids 1,2",
               "is damaged");
}

TEST_F(PremoeErrors, MissingStore) {
  expect_error("prune build --model " + golden("qwen3_moe") + " --store " + tmp_.file("none") +
                   " --task t --keep 4 --output " + tmp_.file("o3"),
               "no pattern store");
}

TEST_F(PremoeErrors, OutputExists) {
  fs::create_directories(tmp_.file("out"));
  std::ofstream(tmp_.file("out") + "/x") << "x";
  expect_error(build("--task t --keep 4"), "already exists");
}

TEST_F(PremoeErrors, ProfileWithOtherOptions) {
  expect_error("prune profile --model " + golden("qwen3_moe") + " --task u --top-k 2 --data " + tmp_.file("ids.txt") +
                   " --store " + store_,
               "profiled with --top-k 1");
}

TEST_F(PremoeErrors, BadDataAndIds) {
  std::ofstream(tmp_.file("bad.txt")) << "1 2 three\n";
  expect_error("prune profile --model " + golden("qwen3_moe") + " --task u --data " + tmp_.file("bad.txt") +
                   " --store " + store_,
               "is not a token id");
  std::ofstream(tmp_.file("big.txt")) << "1 2 100000\n";
  expect_error("prune profile --model " + golden("qwen3_moe") + " --task u --data " + tmp_.file("big.txt") +
                   " --store " + store_,
               "outside the model's vocabulary");
  expect_error("prune scores --model " + golden("qwen3_moe") + " --prompt-ids 1,2 --top-k 9", "--top-k 9");
  expect_error("prune scores --model " + golden("llama") + " --prompt-ids 1,2", "has no MoE layer");
}

TEST_F(PremoeErrors, UnknownKeyLayers) {
  expect_error("prune match --model " + golden("qwen3_moe") + " --store " + store_ +
                   " --key-layers middle --prompt-ids 1,2",
               "key layers \"middle\" is not one of: first");
  expect_error("generate --model " + golden("qwen3_moe") + " --premoe-store " + store_ +
                   " --keep 4 --premoe-key-layers 2 --prompt-ids 1,2",
               "key layers \"2\" is not one of: first");
}

TEST_F(PremoeErrors, GenerateFlagsGoTogether) {
  expect_error("generate --model " + golden("qwen3_moe") + " --premoe-store " + store_ + " --prompt-ids 1,2",
               "go together");
  expect_error("generate --model " + golden("qwen3_moe") + " --premoe-store " + store_ + " --keep 9 --prompt-ids 1,2",
               "larger than the model's 8");
}

}  // namespace
}  // namespace sy
