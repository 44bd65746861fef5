// The device forward pass against the CPU path on the golden fixtures (tiny Hugging Face checkpoints of every
// family that runs on the GPU): a batch of three sequences with chunked prefill, scattered paged block
// tables and batched decode must give the CPU's logits within the bf16 tolerance (weights and activations
// go through bf16 on the tensor cores), and greedy generation must agree wherever the CPU's top-2 gap is
// clear. Every family runs, DeepSeek's MLA included.
#include <algorithm>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "gpu_harness.h"
#include "model/gpu_forward.h"
#include "switchyard/model/generate.h"
#include "switchyard/model/model.h"
#include "switchyard/model/tensor_source.h"
#include "switchyard/train/trainable_model.h"

namespace sy {
namespace {

constexpr double kLogitTol = 2e-2;  // issue 4's bf16 tolerance for logits against the fp32 CPU path
std::string dir_of(const std::string& name) {
  return (std::filesystem::path(test::fixtures_dir()) / "golden" / name).string();
}

std::vector<float> row(const Tensor& t, int64_t r) {
  return std::vector<float>(t.f32() + r * t.size(1), t.f32() + (r + 1) * t.size(1));
}

class GpuForward : public ::testing::TestWithParam<std::string> {};

using test::ScopedEnv;

// Which expert path every pass takes. kGemv: the forward pass's own choice (the grouped GEMV for these small
// passes). kCublas: every pass runs the routed experts through the cuBLAS grouped GEMM (the prefill path, bf16
// activations; no step is a CUDA graph) and GQA layers through the separate q/k/v ops instead of the fused
// epilogue (SY_FUSED_QKV=0), so the fallbacks stay tested. kSm90: every pass through the Hopper grouped GEMM
// (SY_SM90_EXPERTS=1; biases and gpt-oss's clamp included; layers whose expert matrices have n or k not a
// multiple of 8 keep the cuBLAS path, and the test checks the kernel ran for the fixtures that fit).
enum class Experts { kGemv, kCublas, kSm90 };

// sm90_applies, when given, says whether the fixture has routed experts the sm90 kernel takes (kSm90 only; false
// otherwise), so a caller counting launches knows when none is expected: dense fixtures, and expert widths not
// a multiple of 8.
void check_batched_logits(const std::string& fixture, Experts experts, bool* sm90_applies = nullptr) {
  const bool cublas_experts = experts != Experts::kGemv;
  auto cpu = Model::load(dir_of(fixture));
  auto gpu = Model::load(dir_of(fixture));
  const ModelConfig& c = cpu->config();
  {
    std::unique_ptr<ScopedEnv> env, env_qkv, env_sm90;
    if (cublas_experts) env = std::make_unique<ScopedEnv>("SY_GROUPED_GEMV_MAX_TOKENS", "0");
    if (experts == Experts::kCublas) env_qkv = std::make_unique<ScopedEnv>("SY_FUSED_QKV", "0");
    // The sm90 path is the default on Hopper: kCublas turns it off to keep cuBLAS's grouped call tested.
    env_sm90 = std::make_unique<ScopedEnv>("SY_SM90_EXPERTS", experts == Experts::kSm90 ? "1" : "0");
    gpu->to_device(Device::kCuda);
  }
  ASSERT_EQ(gpu->device(), Device::kCuda);
  const std::string label = fixture + (experts == Experts::kCublas ? " (cuBLAS grouped experts)"
                                       : experts == Experts::kSm90  ? " (sm90 grouped experts)"
                                                                    : "");
  // The prefill expert path rounds the routed experts' inputs to bf16 as well (the GEMV reads them in f32).
  // gpt-oss's fixture, whose clamped experts see large pre-activations, lands at 2.25e-2 there with an f32 KV
  // pool and 2.53e-2 with the bf16 pool (measured on an H100 and an H200). DeepSeek's MLA chains more
  // projections: with transformers as the reference, the GPU's rounding emulated on the CPU
  // (tools/bf16_error_reference.py, docs/benchmarks.md) put one flip-free decode row of deepseek_v2_lite at
  // 2.55e-2 in the expanded form, the value the device gave, and 0.4-0.8% of random flip-free rows of the
  // three DeepSeek fixtures over 2e-2 (max 2.4-3.1e-2): bf16 itself, not a device error. The absorbed form
  // the GPU runs now (mode e there) keeps these cases under 1.6e-2 and random rows over 2e-2 at 0.3-1.0%.
  // Those get 3e-2; every other fixture and path stays under the 2e-2.
  const bool mla = c.arch == Architecture::kDeepseekV2 || c.arch == Architecture::kDeepseekV3;
  const double tol = (cublas_experts && c.arch == Architecture::kGptOss) || mla ? 3e-2 : kLogitTol;
  std::mt19937 rng(3);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t len : {13, 6, 1}) {
    std::vector<int64_t> p(len);
    for (auto& id : p) id = static_cast<int64_t>(rng() % c.vocab_size);
    prompts.push_back(p);
  }
  const int64_t bs = 4, blocks = 24;
  // solo: every pass holds one sequence (same schedule, same tables), so a routing flip excludes only the
  // sequence it happened in; batched passes attribute a flip to every sequence of the pass.
  auto run = [&](bool solo) -> int {
    PagedKvPool cpu_pool = cpu->new_pool(blocks, bs), gpu_pool = gpu->new_pool(blocks, bs);
    EXPECT_EQ(gpu_pool.keys(0).device(), Device::kCuda);
    std::vector<int32_t> free_blocks(blocks);
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::mt19937 table_rng(5);  // the same scattered tables in both runs
    std::shuffle(free_blocks.begin(), free_blocks.end(), table_rng);
    std::vector<BatchSequence> seqs(prompts.size());
    for (size_t s = 0; s < prompts.size(); ++s) {
      for (int64_t b = 0; b < (static_cast<int64_t>(prompts[s].size()) + 4 + bs - 1) / bs; ++b) {
        seqs[s].block_table.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
    }
    // bf16 rounding can flip a near-tie routing decision of a tiny random model, after which that sequence's
    // logits legitimately differ. A flip shows as different per-expert token counts between the two passes of a
    // step; the sequences of such a step are excluded from then on (their cached keys differ too).
    std::vector<bool> ambiguous(prompts.size(), false);
    int checked = 0, skipped = 0;
    double worst = 0, worst_skipped = 0;
    auto compare_pass = [&](std::vector<BatchSequence> step, std::vector<size_t> who, const char* what) {
      cpu->reset_expert_load();
      gpu->reset_expert_load();
      Tensor a = cpu->forward_batch(step, cpu_pool), b = gpu->forward_batch(step, gpu_pool);
      if (cpu->expert_load().tokens != gpu->expert_load().tokens) {
        for (size_t s : who) ambiguous[s] = true;
      }
      ASSERT_EQ(a.shape(), b.shape());
      ASSERT_EQ(b.device(), Device::kCpu);
      int64_t r = 0;
      for (size_t i = 0; i < step.size(); ++i) {
        if (!step[i].want_logits) continue;
        const double err = test::relative_error(row(b, r), row(a, r));
        ++r;
        if (ambiguous[who[i]]) {
          ++skipped;
          worst_skipped = std::max(worst_skipped, err);
          continue;
        }
        ++checked;
        worst = std::max(worst, err);
        EXPECT_LT(err, tol) << label << (solo ? " solo " : " batched ") << what << " sequence " << who[i];
      }
    };
    auto compare = [&](const std::vector<BatchSequence>& step, const std::vector<size_t>& who, const char* what) {
      if (!solo) return compare_pass(step, who, what);
      for (size_t i = 0; i < step.size(); ++i) compare_pass({step[i]}, {who[i]}, what);
    };
    // Prefill in two chunks (the second with logits), then three decode steps of all sequences together.
    std::vector<int64_t> done(prompts.size(), 0);
    for (int chunk = 0; chunk < 2; ++chunk) {
      std::vector<size_t> who;
      std::vector<BatchSequence> step = test::prefill_chunk(prompts, seqs, chunk, done, who);
      compare(step, who, chunk == 0 ? "prefill chunk 1" : "prefill chunk 2");
    }
    for (int t = 0; t < 3; ++t) {
      std::vector<BatchSequence> step;
      std::vector<size_t> who;
      for (size_t s = 0; s < prompts.size(); ++s) {
        BatchSequence b = seqs[s];
        b.start = static_cast<int64_t>(prompts[s].size()) + t;
        b.ids = {static_cast<int64_t>((7 * t + 3 * s + 1) % c.vocab_size)};
        step.push_back(b);
        who.push_back(s);
      }
      compare(step, who, "decode");
    }
    std::printf("%s%s: %d logit rows compared (max relative error %.2e), %d skipped after a routing flip (max %.2e)\n",
                label.c_str(), solo ? " solo" : "", checked, worst, skipped, worst_skipped);
    return checked;
  };
  const int64_t sm90_before = cuda::grouped_gemm_sm90_calls();
  const int batched = run(false), solo = run(true);
  EXPECT_GT(solo, 0) << "every sequence met a routing near tie; the comparison checked nothing";
  const bool sm90_fits = experts == Experts::kSm90 && c.moe.num_experts > 0 && c.moe.expert_intermediate % 8 == 0 &&
                         c.hidden_size % 8 == 0;
  if (sm90_applies) *sm90_applies = sm90_fits;
  if (sm90_fits) {
    EXPECT_GT(cuda::grouped_gemm_sm90_calls(), sm90_before) << label << ": the sm90 kernels never ran";
  } else {
    EXPECT_EQ(cuda::grouped_gemm_sm90_calls(), sm90_before) << label << ": an sm90 kernel ran on unfit shapes";
  }
  (void)batched;  // may be 0 when a flip in a shared pass excludes every sequence; solo attributes flips exactly
}

// Decode steps replayed from a captured CUDA graph equal the same steps run kernel by kernel, bit for bit,
// across batch sizes (one graph each), growing block tables and a second pool (graphs are recaptured).

TEST_P(GpuForward, BatchedPagedLogitsMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  check_batched_logits(GetParam(), Experts::kGemv);
}

// The same with the input RMSNorm computed on its own (SY_FUSED_NORM=0) instead of folded into the q|k|v
// GEMV (the default, covered above).
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithUnfusedNorms) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_FUSED_NORM", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And with the block-wide routing (SY_WARP_ROUTE=0; one warp per token is the default): the router tests compare
// the two forms exactly, this runs the block form through whole decode steps.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithBlockRouting) {
  SY_SKIP_WITHOUT_GPU();
  struct Restore {  // upload sets the process-wide switch; the tests after this one expect the default
    bool was = cuda::warp_routing();
    ~Restore() { cuda::set_warp_routing(was); }
  } restore;
  ScopedEnv env("SY_WARP_ROUTE", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And with the decode router finished by its last block instead of on a thread-block cluster
// (SY_CLUSTER_ROUTE=0; the cluster finish is the default).
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithoutClusterRouting) {
  SY_SKIP_WITHOUT_GPU();
  struct Restore {  // upload sets the process-wide switch; the tests after this one expect the default
    bool was = cuda::cluster_routing();
    ~Restore() { cuda::set_cluster_routing(was); }
  } restore;
  ScopedEnv env("SY_CLUSTER_ROUTE", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And with the fused combine waiting for gate|up before it reads its routing (SY_EARLY_COMBINE=0; by default it
// reads the routing first and gate|up releases it only after its own wait).
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithoutEarlyCombine) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_EARLY_COMBINE", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And with decode passes reading every key after the programmatic-launch wait (SY_PREFETCH_KEYS=0; by default
// they read their first cached keys before it; chunked-prefill passes never do: their keys are written in the
// pass).
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithoutPrefetchedKeys) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_PREFETCH_KEYS", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And with the o projection and the next layer's q|k|v weights pulled into L2 by the decode attention and router
// (SY_PREFETCH_O=1 SY_PREFETCH_QKV=1 or 2, off by default): a hint that must change nothing.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithPrefetchedWeights) {
  SY_SKIP_WITHOUT_GPU();
  for (const char* qkv_mode : {"1", "2"}) {
    SCOPED_TRACE(std::string("SY_PREFETCH_QKV=") + qkv_mode);
    ScopedEnv o("SY_PREFETCH_O", "1"), qkv("SY_PREFETCH_QKV", qkv_mode);
    check_batched_logits(GetParam(), Experts::kGemv);
  }
}

// And with decode passes folding the q|k|v epilogue into the attention (SY_FUSED_ATTENTION=1, off by
// default); chunked-prefill passes keep the two launches.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithFusedAttention) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_FUSED_ATTENTION", "1");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And the epilogue folded into the grouped decode attention (SY_FUSED_ATTENTION=1 SY_GROUPED_ATTENTION=1):
// each block forms its group's queries, the block holding the query's own key forms and stores it.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithFusedGroupedAttention) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv fused("SY_FUSED_ATTENTION", "1"), grouped("SY_GROUPED_ATTENTION", "1");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// With key splits of at least 8 keys (SY_ATTENTION_MIN_SPLIT_KEYS=8): the fixtures' short contexts leave most
// splits of a decode pass without a key.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithLongKeySplits) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_ATTENTION_MIN_SPLIT_KEYS", "8");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// With the grouped decode attention on every pass (SY_GROUPED_ATTENTION=1: a cluster per query and key head;
// by default only passes of 4 rows or more) through whole batched decode and chunked-prefill passes; models it
// does not fit take the per-head kernel.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithGroupedAttention) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_GROUPED_ATTENTION", "1");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And the per-head decode attention (SY_GROUPED_ATTENTION=0; by default decode passes run the grouped kernel,
// which reads each block's first two steps of cached keys and values before the programmatic-launch wait).
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithPerHeadAttention) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv grouped("SY_GROUPED_ATTENTION", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

// And with down and the combine as two launches (SY_FUSED_COMBINE=0; one launch is the default for passes of
// up to 4 tokens).
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuWithUnfusedCombine) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_FUSED_COMBINE", "0");
  check_batched_logits(GetParam(), Experts::kGemv);
}

TEST_P(GpuForward, BatchedPagedLogitsMatchCpuThroughCublasGroupedExperts) {
  SY_SKIP_WITHOUT_GPU();
  check_batched_logits(GetParam(), Experts::kCublas);
}

// Puts the sm90 GEMM's process-wide schedule switches back as they were on the way out of a test (upload sets them
// from the environment; the tests after a test that sets one expect the defaults).
struct Sm90SwitchesRestored {
  bool ws = cuda::grouped_gemm_sm90_warp_specialized(), pingpong = cuda::grouped_gemm_sm90_pingpong(),
       cluster = cuda::grouped_gemm_sm90_cluster();
  ~Sm90SwitchesRestored() {
    cuda::set_grouped_gemm_sm90_warp_specialized(ws);
    cuda::set_grouped_gemm_sm90_pingpong(pingpong);
    cuda::set_grouped_gemm_sm90_cluster(cluster);
  }
};

// check_batched_logits through the sm90 path with the switches in `env` set (and the process-wide ones put back
// afterwards); skips without a GPU that runs the sm90 kernels. Where the fixture has experts the kernel takes, at
// least one sm90 GEMM must have run, and `expect` gets their count and how much each launch counter grew meanwhile.
using Sm90Expectation = std::function<void(int64_t, const cuda::GroupedGemmSm90Launches&)>;
void check_sm90_forward(const std::string& fixture, const std::vector<std::pair<const char*, const char*>>& env,
                        const Sm90Expectation& expect) {
  if (!cuda::grouped_gemm_sm90_supported()) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  Sm90SwitchesRestored restore;
  std::list<ScopedEnv> set;
  for (const auto& [name, value] : env) set.emplace_back(name, value);
  const int64_t calls_before = cuda::grouped_gemm_sm90_calls();
  const cuda::GroupedGemmSm90Launches before = cuda::grouped_gemm_sm90_launches();
  bool applies = false;
  check_batched_logits(fixture, Experts::kSm90, &applies);
  if (!applies) return;  // no experts the kernel takes (checked there)
  const int64_t calls = cuda::grouped_gemm_sm90_calls() - calls_before;
  const cuda::GroupedGemmSm90Launches after = cuda::grouped_gemm_sm90_launches();
  EXPECT_GT(calls, 0) << "no sm90 GEMM ran";
  expect(calls, {after.one_tile - before.one_tile, after.warp_specialized - before.warp_specialized,
                 after.tma - before.tma, after.pingpong - before.pingpong, after.pairs - before.pairs});
}

// By default every sm90 GEMM of these prefill passes (all under kGroupedSm90WideRows rows) runs the
// warp-specialised kernel with TMA weight loads, each tile split between the consumer warpgroups.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuThroughSm90GroupedExperts) {
  SY_SKIP_WITHOUT_GPU();
  check_sm90_forward(GetParam(), {}, [](int64_t calls, const cuda::GroupedGemmSm90Launches& ran) {
    EXPECT_EQ(ran.warp_specialized, calls) << "an sm90 GEMM ran on another kernel";
    EXPECT_EQ(ran.tma, calls) << "an sm90 GEMM loaded its weights without TMA";
    EXPECT_EQ(ran.pingpong, 0) << "an sm90 GEMM ran ping-pong tiles";
    EXPECT_EQ(ran.pairs, 0) << "an sm90 GEMM ran in block pairs";
  });
}

// And through ping-pong tiles (SY_SM90_PINGPONG=1): every sm90 GEMM of the prefill passes ran on them.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuThroughSm90PingPongTiles) {
  SY_SKIP_WITHOUT_GPU();
  const Sm90Expectation expect = [](int64_t calls, const cuda::GroupedGemmSm90Launches& ran) {
    EXPECT_EQ(ran.pingpong, calls) << "an sm90 GEMM ran on another kernel";
  };
  check_sm90_forward(GetParam(), {{"SY_SM90_PINGPONG", "1"}}, expect);
}

// And through the one-tile-per-block kernel (SY_SM90_WS=0): every sm90 GEMM of the prefill passes must have run
// on it.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuThroughOneTileSm90Experts) {
  SY_SKIP_WITHOUT_GPU();
  const Sm90Expectation expect = [](int64_t calls, const cuda::GroupedGemmSm90Launches& ran) {
    EXPECT_EQ(ran.one_tile, calls) << "an sm90 GEMM ran on another kernel";
  };
  check_sm90_forward(GetParam(), {{"SY_SM90_WS", "0"}}, expect);
}

// And through block pairs sharing weight tiles (SY_SM90_CLUSTER=1; SY_SM90_PINGPONG=0, the default, spelled out:
// pairs apply to the split form of the prefill passes' 128-column tiles): every sm90 GEMM ran in pairs.
TEST_P(GpuForward, BatchedPagedLogitsMatchCpuThroughSm90ExpertPairs) {
  SY_SKIP_WITHOUT_GPU();
  const Sm90Expectation expect = [](int64_t calls, const cuda::GroupedGemmSm90Launches& ran) {
    EXPECT_EQ(ran.pairs, calls) << "an sm90 GEMM ran without block pairs";
  };
  check_sm90_forward(GetParam(), {{"SY_SM90_CLUSTER", "1"}, {"SY_SM90_PINGPONG", "0"}}, expect);
}

// Runs the same prefills and decode steps (batch sizes 3, 2, 1, 3, ...; a second round on fresh pools, whose
// new addresses graphs must follow) through two GPU models and expects equal logits and expert loads, bit for
// bit. before_first / before_second run before each call of that model (to set a process-wide switch). The
// expert loads count from zero here (a model may have decoded before, as a reconfigured one has).
void expect_same_decode(Model& first, Model& second, const std::function<void()>& before_first,
                        const std::function<void()>& before_second, const std::string& label) {
  const ModelConfig& c = first.config();
  first.reset_expert_load();
  second.reset_expert_load();
  for (int round = 0; round < 2; ++round) {
    const int64_t bs = 4, blocks = 64;
    PagedKvPool gp = first.new_pool(blocks, bs), ep = second.new_pool(blocks, bs);
    std::vector<BatchSequence> seqs(3);
    for (size_t s = 0; s < seqs.size(); ++s) {
      for (int64_t b = 0; b < 5; ++b) seqs[s].block_table.push_back(static_cast<int32_t>(5 * s + b + round));
      seqs[s].ids = {static_cast<int64_t>((11 * s + 2) % c.vocab_size), 3, 1};
      seqs[s].start = 0;
    }
    auto run = [&](const std::vector<BatchSequence>& step, Tensor& x, Tensor& y) {
      before_first();
      x = first.forward_batch(step, gp);
      before_second();
      y = second.forward_batch(step, ep);
    };
    Tensor a, b;
    run(seqs, a, b);  // prefill (not graphed)
    EXPECT_EQ(a.to_f32_vector(), b.to_f32_vector()) << label << " prefill";
    std::vector<int64_t> length(seqs.size(), 3);
    for (int t = 0; t < 10; ++t) {
      // Batch sizes 3, 2, 1, 3, ...: each size gets its own graph; positions cross block boundaries.
      const size_t live = 3 - static_cast<size_t>(t % 3);
      std::vector<BatchSequence> step;
      for (size_t s = 0; s < live; ++s) {
        BatchSequence b1 = seqs[s];
        b1.start = length[s]++;
        b1.ids = {static_cast<int64_t>((5 * t + s) % c.vocab_size)};
        b1.block_table.resize(static_cast<size_t>((b1.start + 1 + bs - 1) / bs));
        step.push_back(b1);
      }
      Tensor x, y;
      run(step, x, y);
      ASSERT_EQ(x.shape(), y.shape());
      EXPECT_EQ(x.to_f32_vector(), y.to_f32_vector()) << label << " decode step " << t;
      EXPECT_EQ(first.expert_load().tokens, second.expert_load().tokens) << label << " step " << t;
    }
  }
}

// Two device copies of a fixture, one replaying decode graphs and one running eagerly, through
// expect_same_decode.
void expect_graphed_equals_eager(const std::string& fixture, const std::string& label) {
  auto graphed = Model::load(dir_of(fixture));
  auto eager = Model::load(dir_of(fixture));
  graphed->to_device(Device::kCuda);
  eager->to_device(Device::kCuda);
  graphed->set_cuda_graphs(true);
  eager->set_cuda_graphs(false);
  expect_same_decode(*graphed, *eager, [] {}, [] {}, fixture + label);
}

TEST_P(GpuForward, GraphDecodeEqualsEagerDecode) {
  SY_SKIP_WITHOUT_GPU();
  expect_graphed_equals_eager(GetParam(), " graphed vs eager");
}

// The same with a lone sequence's grouped attention limited to 4 keys (SY_GROUPED_ATTENTION_MAX_KEYS=4): the
// batch-1 steps run the per-head kernel, in graphs keyed apart from the grouped ones, the batch-2 and -3 steps
// the grouped kernel; graphed and eager passes must choose alike.
TEST_P(GpuForward, GraphDecodeEqualsEagerDecodeWithLoneLongSequences) {
  SY_SKIP_WITHOUT_GPU();
  ScopedEnv env("SY_GROUPED_ATTENTION_MAX_KEYS", "4");
  expect_graphed_equals_eager(GetParam(), " graphed vs eager, lone sequences per head");
}

// Which passes take the grouped decode attention (model_detail::grouped_decode_attention): forced on or off by
// the setting; by default decode passes, but a lone sequence with more keys than the limit.
TEST(GpuForwardChoices, GroupedDecodeAttentionByPassAndContext) {
  using model_detail::grouped_decode_attention;
  using model_detail::kGroupedAttentionMaxKeysAlone;
  EXPECT_TRUE(grouped_decode_attention(-1, true, 1, 128));
  EXPECT_TRUE(grouped_decode_attention(-1, true, 1, kGroupedAttentionMaxKeysAlone));
  EXPECT_FALSE(grouped_decode_attention(-1, true, 1, kGroupedAttentionMaxKeysAlone + 16));
  EXPECT_TRUE(grouped_decode_attention(-1, true, 2, 1 << 20)) << "two sequences fill twice the clusters";
  EXPECT_TRUE(grouped_decode_attention(-1, true, 64, 4096));
  EXPECT_FALSE(grouped_decode_attention(-1, false, 64, 128)) << "prefill chunks keep the per-head kernel";
  EXPECT_FALSE(grouped_decode_attention(-1, true, 0, 0));
  EXPECT_TRUE(grouped_decode_attention(1, false, 1, 1 << 20)) << "SY_GROUPED_ATTENTION=1 takes every pass";
  EXPECT_FALSE(grouped_decode_attention(0, true, 8, 16)) << "SY_GROUPED_ATTENTION=0 takes none";
  EXPECT_FALSE(grouped_decode_attention(-1, true, 1, 8, 4)) << "a lower limit (SY_GROUPED_ATTENTION_MAX_KEYS)";
  EXPECT_TRUE(grouped_decode_attention(-1, true, 1, 4, 4));
}

// The decode graphs' inputs and expert counts through pinned memory (SY_PINNED_IO, on by default) against the
// pageable copies with a synchronisation for the counts (SY_PINNED_IO=0): the same logits and expert loads bit
// for bit, and the same tokens (greedy and sampled) and loads through forward_batch_sample, whose graph samples
// too with pinned inputs (one synchronisation for tokens and counts) and samples after the graph without.
TEST_P(GpuForward, PinnedIoDecodeEqualsPageableDecode) {
  SY_SKIP_WITHOUT_GPU();
  auto pinned = Model::load(dir_of(GetParam()));
  pinned->to_device(Device::kCuda);
  {
    const char* name = "SY_PINNED_IO=0";
    std::unique_ptr<Model> other;
    {
      ScopedEnv env("SY_PINNED_IO", "0");
      other = Model::load(dir_of(GetParam()));
      other->to_device(Device::kCuda);
    }
    expect_same_decode(*pinned, *other, [] {}, [] {}, GetParam() + " default vs " + name);
    PagedKvPool pa = pinned->new_pool(16, 4), pb = other->new_pool(16, 4);
    std::vector<BatchSequence> seqs(2);
    for (size_t i = 0; i < seqs.size(); ++i) {
      seqs[i].block_table = {static_cast<int32_t>(2 * i), static_cast<int32_t>(2 * i + 1)};
      seqs[i].ids = {1, static_cast<int64_t>(i + 2)};
      seqs[i].start = 0;
    }
    pinned->forward_batch(seqs, pa);
    other->forward_batch(seqs, pb);
    pinned->reset_expert_load();
    other->reset_expert_load();
    for (int step = 0; step < 3; ++step) {
      for (BatchSequence& q : seqs) {
        q.start = 2 + step;
        q.ids = {static_cast<int64_t>(3 + step)};
      }
      // Greedy rows, then a step with a sampled row (temperature, top-p, a draw) next to a greedy one.
      std::vector<RowSampling> rows(seqs.size());
      if (step == 2) rows[0] = RowSampling{0.8f, 0, 0.9f, 0.37};
      EXPECT_EQ(pinned->forward_batch_sample(seqs, pa, rows), other->forward_batch_sample(seqs, pb, rows))
          << name << " step " << step;
      EXPECT_EQ(pinned->expert_load().tokens, other->expert_load().tokens) << name << " step " << step;
    }
  }
}

// Programmatic dependent launch of the decode chain (cuda::set_programmatic_launch) changes when kernels are
// scheduled, never what they compute: both models replay graphs, one captured and run with it, one without.
TEST_P(GpuForward, ProgrammaticLaunchDecodeEqualsPlainDecode) {
  SY_SKIP_WITHOUT_GPU();
  struct Restore {  // the process-wide default (on where it exists) for the tests after this one
    bool was = cuda::programmatic_launch_enabled();
    ~Restore() { cuda::set_programmatic_launch(was); }
  } restore;
  if (!cuda::set_programmatic_launch(true)) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  cuda::set_programmatic_launch(false);
  auto chained = Model::load(dir_of(GetParam()));
  auto plain = Model::load(dir_of(GetParam()));
  chained->to_device(Device::kCuda);
  plain->to_device(Device::kCuda);
  expect_same_decode(*chained, *plain, [] { cuda::set_programmatic_launch(true); },
                     [] { cuda::set_programmatic_launch(false); }, GetParam() + " programmatic vs plain launches");
}

// Model::reconfigure_device reads the switches again (bench_gpu_decode --ab): a model uploaded with the defaults
// and reconfigured under SY_CLUSTER_ROUTE=0 SY_FUSED_ATTENTION=1 decodes exactly as one uploaded under them
// (its graphs captured again), the process-wide setting follows the environment both ways, and a bad value
// throws and leaves the model usable once the environment is fixed.
TEST_P(GpuForward, ReconfiguredModelDecodesAsOneUploadedWithTheSameSwitches) {
  SY_SKIP_WITHOUT_GPU();
  struct Restore {
    bool was = cuda::cluster_routing();
    ~Restore() { cuda::set_cluster_routing(was); }
  } restore;
  auto reconfigured = Model::load(dir_of(GetParam()));
  reconfigured->to_device(Device::kCuda);
  EXPECT_TRUE(cuda::cluster_routing());
  {
    ScopedEnv cluster("SY_CLUSTER_ROUTE", "0"), fused("SY_FUSED_ATTENTION", "1");
    auto uploaded = Model::load(dir_of(GetParam()));
    uploaded->to_device(Device::kCuda);
    reconfigured->reconfigure_device();
    EXPECT_FALSE(cuda::cluster_routing());
    expect_same_decode(*uploaded, *reconfigured, [] {}, [] {}, GetParam() + " reconfigured vs uploaded");
  }
  reconfigured->reconfigure_device();
  EXPECT_TRUE(cuda::cluster_routing()) << "an unset process-wide switch returns to its value before upload";
  {
    ScopedEnv bad("SY_SM90_TILE_N", "7");
    EXPECT_THROW(reconfigured->reconfigure_device(), InvalidArgument);
  }
  reconfigured->reconfigure_device();
  auto plain = Model::load(dir_of(GetParam()));
  plain->to_device(Device::kCuda);
  expect_same_decode(*plain, *reconfigured, [] {}, [] {}, GetParam() + " reconfigured back vs default");
}

// Whole fresh prompts (>= 64 tokens, head dim 64 or 128) run the tensor-core prefill attention inside the
// batched pass, next to a continuing chunk and a decode token that take the paged kernel: logits match the CPU
// path within the bf16 tolerance, and the paged-only GPU pass too. Dense Qwen3-shaped random models (the
// golden fixtures' heads are smaller), so that no bf16 routing flip can excuse a row from the comparison.
// tol: the logits tolerance; init_std: the random weights' scale (larger makes peaked attention, so that a
// mistake in the scores cannot hide in a near-uniform softmax). sm90: the GPU model runs the Hopper kernel
// (SY_FLASH_SM90=1) for head dims 128/128, else the FlashAttention-2 kernel (SY_FLASH_SM90=0); cudnn: cuDNN's
// fused attention (SY_CUDNN_ATTENTION=1).
void check_flash_prefill(const nlohmann::json& j, double tol = kLogitTol, float init_std = 0.02f, bool sm90 = false,
                         bool cudnn = false) {
  const ModelConfig cfg = ModelConfig::from_json(j);
  auto params =
      std::make_shared<std::map<std::string, Tensor>>(train::TrainableModel::from_config(cfg, 7, init_std)->params());
  auto make = [&] { return std::make_unique<Model>(cfg, load_model_weights(cfg, MapSource(*params)), params); };
  auto cpu = make();
  std::unique_ptr<Model> gpu, paged_only;
  gpu = make();
  {
    ScopedEnv env("SY_FLASH_SM90", sm90 ? "1" : "0"), env_cudnn("SY_CUDNN_ATTENTION", cudnn ? "1" : "0");
    gpu->to_device(Device::kCuda);
  }
  {
    setenv("SY_FLASH_PREFILL", "0", 1);
    paged_only = make();
    paged_only->to_device(Device::kCuda);
    unsetenv("SY_FLASH_PREFILL");
  }
  std::mt19937 rng(5);
  auto prompt = [&](int64_t len) {
    std::vector<int64_t> p(len);
    for (auto& id : p) id = static_cast<int64_t>(rng() % cfg.vocab_size);
    return p;
  };
  const int64_t bs = 16;
  PagedKvPool pc = cpu->new_pool(64, bs), pg = gpu->new_pool(64, bs), pp = paged_only->new_pool(64, bs);
  // Step 1: a 150-token fresh prompt, and the first 20 tokens of another. Step 2: the second prompt's next
  // 70 tokens (a continuing chunk: paged) with the first sequence's first decode token.
  std::vector<BatchSequence> seqs(2);
  for (int32_t b = 0; b < 12; ++b) seqs[0].block_table.push_back(b), seqs[1].block_table.push_back(20 + b);
  const std::vector<int64_t> p0 = prompt(150), p1 = prompt(90);
  seqs[0].ids = p0;
  seqs[1].ids.assign(p1.begin(), p1.begin() + 20);
  auto run = [&](const std::vector<BatchSequence>& step, const char* what) {
    Tensor a = cpu->forward_batch(step, pc), g = gpu->forward_batch(step, pg), q = paged_only->forward_batch(step, pp);
    ASSERT_EQ(a.size(0), 2) << what;
    ASSERT_EQ(g.shape(), a.shape());
    ASSERT_EQ(q.shape(), a.shape());
    for (int64_t r = 0; r < a.size(0); ++r) {
      EXPECT_LT(test::relative_error(row(g, r), row(a, r)), tol) << what << " row " << r;
      EXPECT_LT(test::relative_error(row(q, r), row(a, r)), tol) << what << " (paged only) row " << r;
    }
  };
  const int64_t flash_before = cuda::flash_attention_calls(), sm90_before = cuda::flash_attention_sm90_calls();
  const int64_t cudnn_before = cuda::flash_attention_cudnn_calls();
  run(seqs, "fresh prompts");
  EXPECT_EQ(cuda::flash_attention_calls() - flash_before, cfg.num_layers) << "one fresh prompt, once per layer";
  if (sm90) {
    EXPECT_EQ(cuda::flash_attention_sm90_calls() - sm90_before, cfg.num_layers) << "through the wgmma kernel";
  }
  EXPECT_EQ(cuda::flash_attention_cudnn_calls() - cudnn_before, cudnn ? cfg.num_layers : 0) << "through cuDNN";
  std::vector<BatchSequence> step2 = seqs;
  step2[0].start = 150;
  step2[0].ids = {3};
  step2[1].start = 20;
  step2[1].ids.assign(p1.begin() + 20, p1.end());
  const int64_t flash_mid = cuda::flash_attention_calls();
  run(step2, "continuing chunk + decode");
  EXPECT_EQ(cuda::flash_attention_calls(), flash_mid) << "no fresh prompt in the second step";
}

nlohmann::json dense_qwen3(int64_t head_dim) {
  return {{"model_type", "qwen3"}, {"vocab_size", 256}, {"hidden_size", 256}, {"intermediate_size", 256},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
          {"head_dim", head_dim}, {"max_position_embeddings", 1024}, {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0}};
}

TEST(GpuForwardFlash, FreshPromptsThroughTheTensorCoreKernelMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  check_flash_prefill(dense_qwen3(128));
}

TEST(GpuForwardFlash, FreshPromptsThroughTheHopperKernelMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  if (!cuda::flash_attention_sm90_supported()) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  check_flash_prefill(dense_qwen3(128), kLogitTol, 0.02f, /*sm90=*/true);
  check_flash_prefill(dense_qwen3(128), kLogitTol, 0.05f, /*sm90=*/true);  // peaked attention
}

TEST(GpuForwardFlash, FreshPromptsThroughCudnnMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  std::string why;
  if (!cuda::flash_attention_cudnn_available(&why)) GTEST_SKIP() << "cuDNN not used here: " << why;
  check_flash_prefill(dense_qwen3(128), kLogitTol, 0.02f, /*sm90=*/false, /*cudnn=*/true);
  check_flash_prefill(dense_qwen3(64), kLogitTol, 0.05f, /*sm90=*/false, /*cudnn=*/true);  // peaked attention
}

// Head dim 64 with a 48-token sliding window on the first layer (the 150-token prompt spans three windows
// and three key tiles), full attention on the second.
TEST(GpuForwardFlash, HeadDim64WithSlidingWindowMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  nlohmann::json j = dense_qwen3(64);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 48;
  j["layer_types"] = {"sliding_attention", "full_attention"};
  ASSERT_EQ(ModelConfig::from_json(j).layer_sliding_window, (std::vector<int>{48, 0}));
  check_flash_prefill(j);
}

// DeepSeek's MLA with its real head dims (q.k 128 + 64, v 128): whole fresh prompts take the expanded form on
// the tensor-core kernel (keys and values from kv_b on the chunk's latent rows), the continuing chunk and the
// decode token the absorbed form over the cached latent rows; both against the CPU's absorbed path. Dense
// layers only (first_k_dense_replace = layers), so no routing flip excuses a row.
TEST(GpuForwardFlash, MlaFreshPromptsExpandedOthersAbsorbedMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  nlohmann::json j = {{"model_type", "deepseek_v3"}, {"vocab_size", 256}, {"hidden_size", 256},
                      {"intermediate_size", 256}, {"moe_intermediate_size", 64}, {"num_hidden_layers", 2},
                      {"first_k_dense_replace", 2}, {"n_routed_experts", 4}, {"num_experts_per_tok", 2},
                      {"n_shared_experts", 1}, {"n_group", 1}, {"topk_group", 1}, {"num_attention_heads", 2},
                      {"num_key_value_heads", 2}, {"kv_lora_rank", 64}, {"q_lora_rank", nullptr},
                      {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64}, {"v_head_dim", 128},
                      {"max_position_embeddings", 1024}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
                      {"scoring_func", "sigmoid"}, {"topk_method", "noaux_tc"}};
  // MLA's bf16 tolerance (see check_batched_logits), weights at 0.05 so the attention is peaked (at 0.02 a
  // dropped rotary part of the scores moved the logits by about the tolerance in a numpy model of this test).
  check_flash_prefill(j, 3e-2, 0.05f);
}

TEST_P(GpuForward, GreedyGenerationAgreesWithCpu) {
  SY_SKIP_WITHOUT_GPU();
  auto cpu = Model::load(dir_of(GetParam()));
  auto gpu = Model::load(dir_of(GetParam()));
  gpu->to_device(Device::kCuda);
  const std::vector<int64_t> prompt = {1, 5, 9, 2, 7};
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.stop_at_eos = false;
  std::vector<int64_t> a = generate(*cpu, prompt, o), b = generate(*gpu, prompt, o);
  // Compare up to the first step whose CPU top-2 gap is small (bf16 may flip a near tie).
  KvCache cache = cpu->new_cache(32);
  Tensor logits = cpu->forward(prompt, cache, false);
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<float> l = row(logits, 0);
    std::partial_sort(l.begin(), l.begin() + 2, l.end(), std::greater<float>());
    if (l[0] - l[1] < 0.05f * std::max(1.f, std::abs(l[0]))) return;
    ASSERT_LT(i, b.size());
    EXPECT_EQ(a[i], b[i]) << GetParam() << " step " << i;
    if (a[i] != b[i]) return;
    logits = cpu->forward({a[i]}, cache, false);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuForward, ::testing::ValuesIn(test::golden_fixture_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace sy
