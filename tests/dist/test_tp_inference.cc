// Tensor-parallel inference on every golden fixture: each rank keeps its heads and dense MLP columns
// (Model::set_tensor_parallel), the blocks' partial outputs are all-reduced, and the logits of the prompt and
// of three decode steps must equal the single-process run within 1e-5 relative (issue 6's bound; the sums
// are reassociated, so not bit for bit). Also with expert parallelism folded onto the same ranks. Fixtures
// whose head or width counts the world size does not divide (or whose key/value heads neither divide nor are
// divided by it) are refused with InvalidArgument and skipped; OLMoE's whole-projection q/k norm is refused
// with Unsupported. Fewer key/value heads than ranks are replicated.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dist_util.h"
#include "switchyard/model/model.h"
#include "switchyard/moe/token_dispatcher.h"
#include "test_util.h"

namespace sy {
namespace {

// Returns false when the fixture cannot be split over the world (and checks that it was refused cleanly).
bool check_fixture(const std::string& dir, bool with_ep) {
  auto world = test::dist_world();
  std::ifstream in(dir + "/golden.json");
  std::vector<int64_t> prompt = nlohmann::json::parse(in)["prompt_ids"].get<std::vector<int64_t>>();
  auto single = Model::load(dir);
  const ModelConfig full = single->config();
  const int experts = full.moe.num_experts;
  if (with_ep && (experts == 0 || experts % world->size() != 0)) return false;
  LoadOptions opt;
  if (with_ep) {
    auto [first, last] = Model::expert_range(experts, world->size(), world->rank());
    opt.load_expert = [first = first, last = last](int64_t e) { return e >= first && e < last; };
  }
  auto sharded = Model::load(dir, opt);
  if (with_ep) sharded->set_expert_parallel(world, {});
  try {
    sharded->set_tensor_parallel(world);
  } catch (const Unsupported&) {
    EXPECT_EQ(full.attention.qk_norm, QkNorm::kFull) << dir;
    return false;
  } catch (const InvalidArgument&) {
    const int w = world->size();
    const int kv = full.attention.num_kv_heads;
    EXPECT_TRUE(full.attention.num_heads % w != 0 || (!full.attention.mla && kv % w != 0 && w % kv != 0) ||
                full.intermediate_size % w != 0 || full.moe.shared_intermediate % w != 0)
        << dir << " was refused although its heads and widths divide by " << w;
    EXPECT_EQ(sharded->config().attention.num_heads, full.attention.num_heads) << "a refusal must change nothing";
    return false;
  }
  EXPECT_EQ(sharded->config().attention.num_heads * world->size(), full.attention.num_heads) << dir;
  test::expect_same_logits(*single, *sharded, prompt, dir);
  return true;
}

int expected_checks(int world_size) {
  // 16 fixtures: at 2 ranks all but OLMoE's two (whole-projection q/k norm) and the two with 3 heads; at 4
  // ranks also not Qwen3-MoE-native's 6 heads (2 key/value heads are replicated on 2 ranks each); the
  // fixtures have at most 6 heads, so 8 ranks split none.
  return world_size == 2 ? 12 : world_size == 4 ? 11 : 0;
}

TEST(TensorParallelInference, EveryDivisibleGoldenFixtureMatchesSingleProcess) {
  int checked = 0;
  for (const std::string& dir : test::golden_fixture_dirs(test::fixtures_dir())) {
    checked += check_fixture(dir, false);
  }
  if (test::dist_world()->rank() == 0) std::printf("tensor parallel: %d fixtures checked\n", checked);
  EXPECT_GE(checked, expected_checks(test::dist_world()->size()));
}

TEST(TensorParallelInference, FoldedWithExpertParallelismOnTheSameRanks) {
  int checked = 0;
  for (const std::string& dir : test::golden_fixture_dirs(test::fixtures_dir())) {
    checked += check_fixture(dir, true);
  }
  if (test::dist_world()->rank() == 0) std::printf("tensor + expert parallel: %d fixtures checked\n", checked);
  const int w = test::dist_world()->size();
  EXPECT_GE(checked, w == 2 ? 9 : w == 4 ? 7 : 0);  // fixtures whose experts the world also divides
}

}  // namespace
}  // namespace sy
