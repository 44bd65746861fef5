// Expert-parallel inference on GPUs (issue 10): one process and one GPU per rank, each holding only its
// experts, MoE tokens dispatched over NCCL. On every golden fixture that runs on the GPU and whose experts
// the world size divides, the sharded model's logits (a three-sequence batch with chunked prefill, then
// batched decode, then one-sequence decode steps where some ranks have no token share) must match the
// single-GPU model's within the bf16 tolerance (the single GPU is made to take the same bf16 cuBLAS expert
// path, SY_GROUPED_GEMV_MAX_TOKENS=0, so only GEMM shapes differ), both count the same expert load, and every
// rank must sample the same tokens. A wrong dispatch or combine gives errors of order 1. Skipped unless
// every rank has its own GPU and the build has NCCL (CPU-only CI skips it; bench/multi_gpu_suite.sh runs it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dist_util.h"
#include "switchyard/core/error.h"
#include "switchyard/kernels/device.h"
#include "switchyard/model/generate.h"
#include "switchyard/model/model.h"
#include "switchyard/moe/token_dispatcher.h"
#include "test_util.h"

namespace sy {
namespace {

constexpr double kBf16Tol = 2e-2;  // issue 4's bound for GPU logits


// True on every rank when every rank has a GPU of its own (a collective: all ranks must agree).
bool one_gpu_per_rank(parallel::Comm& world) {
  int enough = parallel::nccl_available() && static_cast<int>(cuda_devices().size()) >= world.size() ? 1 : 0;
  for (int32_t v : world.all_gather(std::vector<int32_t>{enough})) enough &= v;
  return enough != 0;
}

// Logits rows of a batch: three sequences prefilled in two chunks, then three batched decode steps, then
// three steps of the first sequence alone. Returns every pass's logits, concatenated row-wise on the host.
std::vector<Tensor> batch_logits(Model& model) {
  PagedKvPool pool = model.new_pool(12, 4);
  std::vector<std::vector<int64_t>> prompts = {{5, 9, 2, 7, 1, 3, 8}, {4, 4, 6}, {2, 11, 13, 1, 6}};
  std::vector<BatchSequence> seqs(3);
  for (int i = 0; i < 3; ++i) seqs[i].block_table = {4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3};
  std::vector<Tensor> out;
  for (int chunk = 0; chunk < 2; ++chunk) {
    std::vector<BatchSequence> step;
    for (int i = 0; i < 3; ++i) {
      const size_t half = prompts[i].size() / 2, lo = chunk ? half : 0, hi = chunk ? prompts[i].size() : half;
      if (hi == lo) continue;
      BatchSequence b = seqs[i];
      b.ids.assign(prompts[i].begin() + lo, prompts[i].begin() + hi);
      b.start = static_cast<int64_t>(lo);
      b.want_logits = chunk == 1;
      step.push_back(b);
    }
    Tensor l = model.forward_batch(step, pool);
    if (chunk == 1) out.push_back(l);
  }
  for (int s = 0; s < 6; ++s) {
    std::vector<BatchSequence> step;
    for (int i = 0; i < (s < 3 ? 3 : 1); ++i) {
      BatchSequence b = seqs[i];
      b.start = static_cast<int64_t>(prompts[i].size()) + s;
      b.ids = {static_cast<int64_t>(3 + s + i)};
      step.push_back(b);
    }
    out.push_back(model.forward_batch(step, pool));
  }
  return out;
}

TEST(GpuExpertParallel, GoldenFixturesMatchOneGpu) {
  parallel::Comm& world = *test::dist_world();
  if (!one_gpu_per_rank(world)) GTEST_SKIP() << "needs NCCL and one GPU per rank";
  int checked = 0;
  for (const std::string& dir : test::golden_fixture_dirs(test::fixtures_dir())) {
    auto single = Model::load(dir);
    const ModelConfig& cfg = single->config();
    if (cfg.moe.num_experts == 0 || cfg.moe.num_experts % world.size() != 0) continue;
    if (cfg.model_type == "gpt_oss") continue;  // expert biases: not under GPU expert parallelism yet
    auto [first, last] = Model::expert_range(cfg.moe.num_experts, world.size(), world.rank());
    LoadOptions opt;
    opt.load_expert = [first = first, last = last](int64_t e) { return e >= first && e < last; };
    auto sharded = Model::load(dir, opt);
    sharded->set_expert_parallel(test::dist_world(), {});
    sharded->to_device(Device::kCuda);  // this rank's GPU (local rank % GPUs), NCCL made here
    {
      test::ScopedEnv cublas_experts("SY_GROUPED_GEMV_MAX_TOKENS", "0");  // the expert path the sharded model runs
      single->to_device(Device::kCuda);                             // the whole model, on the same GPU
    }
    std::vector<Tensor> ref = batch_logits(*single), got = batch_logits(*sharded);
    ASSERT_EQ(ref.size(), got.size());
    for (size_t p = 0; p < ref.size(); ++p) {
      ASSERT_EQ(got[p].shape(), ref[p].shape()) << dir << " pass " << p;
      EXPECT_LE(test::max_relative_difference(got[p], ref[p]), kBf16Tol) << dir << " pass " << p;
    }
    EXPECT_EQ(sharded->expert_load().tokens, single->expert_load().tokens) << dir << ": routing differs";
    // Every rank samples the same tokens (identical logits after the all-gather, the same draws).
    std::ifstream in(dir + "/golden.json");
    const std::vector<int64_t> prompt = nlohmann::json::parse(in)["prompt_ids"].get<std::vector<int64_t>>();
    GenerateOptions o;
    o.max_new_tokens = 6;
    o.stop_at_eos = false;
    o.sampling = {0.8f, 20, 0.9f, 5};
    const std::vector<int64_t> mine = generate(*sharded, prompt, o);
    const std::vector<int64_t> all = world.all_gather(mine);
    for (int r = 0; r < world.size(); ++r) {
      EXPECT_EQ(std::vector<int64_t>(all.begin() + r * mine.size(), all.begin() + (r + 1) * mine.size()), mine)
          << dir << ": rank " << r << " sampled other tokens";
    }
    ++checked;
  }
  // 14 MoE fixtures less gpt_oss; at 4 ranks not the two with 6 experts; at 8 the four with 8.
  EXPECT_EQ(checked, world.size() == 2 ? 13 : world.size() == 4 ? 11 : world.size() == 8 ? 4 : checked);
}

TEST(GpuExpertParallel, RefusesDispatchOptionsTheDeviceDoesNotRun) {
  parallel::Comm& world = *test::dist_world();
  if (!one_gpu_per_rank(world)) GTEST_SKIP() << "needs NCCL and one GPU per rank";
  const std::string dir = test::fixtures_dir() + "/golden/qwen3_moe";
  auto [first, last] = Model::expert_range(8, world.size(), world.rank());
  LoadOptions opt;
  opt.load_expert = [first = first, last = last](int64_t e) { return e >= first && e < last; };
  auto sharded = Model::load(dir, opt);
  moe::DispatcherOptions gather;
  gather.strategy = moe::DispatchStrategy::kAllGather;
  sharded->set_expert_parallel(test::dist_world(), gather);
  EXPECT_THROW(sharded->to_device(Device::kCuda), Unsupported);
}

}  // namespace
}  // namespace sy
