// `switchyard convert`: a bf16 copy of a checkpoint loads and gives logits within bf16 rounding of the f32 one.
// A dense fixture: in the tiny random MoE fixtures bf16 rounding can flip expert choices.
#include <gtest/gtest.h>

#include "switchyard/io/npy.h"
#include "test_util.h"

namespace sy {
namespace {

TEST(CliConvert, Bf16CopyKeepsLogitsWithinBf16Rounding) {
  test::TempDir tmp;
  const std::string src = test::fixtures_dir() + "/golden/llama";
  auto r = test::run_cli("convert --model " + src + " --dtype bf16 --output " + tmp.file("bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto a = test::run_cli("logits --model " + src + " --prompt-ids 1,2,3,4 --output " + tmp.file("f32.npy"));
  auto b = test::run_cli("logits --model " + tmp.file("bf16") + " --prompt-ids 1,2,3,4 --output " + tmp.file("bf16.npy"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  double err = test::relative_error(read_npy(tmp.file("bf16.npy")).to_f32_vector(), read_npy(tmp.file("f32.npy")).to_f32_vector());
  EXPECT_LT(err, 2e-2);
  EXPECT_GT(err, 0.0);
  auto again = test::run_cli("convert --model " + src + " --dtype bf16 --output " + tmp.file("bf16"));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("not empty"), std::string::npos) << again.output;
}

}  // namespace
}  // namespace sy
