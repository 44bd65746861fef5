// Batched paged forward (the server's path) against the single-sequence forward on every golden fixture:
// three sequences of different lengths, prefilled in two chunks and then decoded together, with scattered
// block tables, must give the logits of running each sequence alone through a contiguous KvCache.
// Tolerance 1e-5 relative: batching only changes the row count of the GEMMs (summation order per row is the
// same on the CPU path, so the measured difference is 0 or float-rounding level).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>

#include "switchyard/core/error.h"
#include "switchyard/model/model.h"
#include "test_util.h"

namespace sy {
namespace {

constexpr double kTolerance = 1e-5;

std::vector<float> row(const Tensor& logits, int64_t r) {
  const int64_t v = logits.size(1);
  return std::vector<float>(logits.f32() + r * v, logits.f32() + (r + 1) * v);
}

int64_t argmax(const std::vector<float>& x) { return std::max_element(x.begin(), x.end()) - x.begin(); }

class BatchedForward : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchedForward, PagedBatchMatchesSequentialForward) {
  auto model = Model::load((std::filesystem::path(test::fixtures_dir()) / "golden" / GetParam()).string());
  const int64_t vocab = model->config().vocab_size;
  std::mt19937 rng(7);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t len : {11, 5, 1}) {
    std::vector<int64_t> p(len);
    for (auto& id : p) id = static_cast<int64_t>(rng() % vocab);
    prompts.push_back(p);
  }
  const int64_t block_size = 4, decode_steps = 4;
  PagedKvPool pool(model->config(), 32, block_size);
  std::vector<int32_t> free_blocks(32);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);  // scattered tables

  std::vector<BatchSequence> batch(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) {
    const int64_t blocks = (static_cast<int64_t>(prompts[s].size()) + decode_steps + block_size - 1) / block_size;
    for (int64_t b = 0; b < blocks; ++b) {
      batch[s].block_table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
  }
  // Reference: each sequence alone, greedy.
  std::vector<std::vector<std::vector<float>>> expected(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) {
    KvCache cache = model->new_cache(16);
    Tensor logits = model->forward(prompts[s], cache, false);
    expected[s].push_back(row(logits, 0));
    for (int64_t step = 0; step < decode_steps; ++step) {
      logits = model->forward({argmax(expected[s].back())}, cache, false);
      expected[s].push_back(row(logits, 0));
    }
  }
  // Chunked prefill: first half of every prompt (rounded up), then the rest.
  std::vector<int64_t> done(prompts.size(), 0);
  for (int chunk = 0; chunk < 2; ++chunk) {
    std::vector<size_t> who;
    std::vector<BatchSequence> step = test::prefill_chunk(prompts, batch, chunk, done, who);
    Tensor logits = model->forward_batch(step, pool);
    int64_t r = 0;
    for (size_t i = 0; i < step.size(); ++i) {
      if (!step[i].want_logits) continue;
      double err = test::relative_error(row(logits, r++), expected[who[i]][0]);
      EXPECT_LT(err, kTolerance) << GetParam() << " prefill of sequence " << who[i];
    }
  }
  // Decode together.
  for (int64_t t = 0; t < decode_steps; ++t) {
    std::vector<BatchSequence> step;
    for (size_t s = 0; s < prompts.size(); ++s) {
      BatchSequence b = batch[s];
      b.start = static_cast<int64_t>(prompts[s].size()) + t;
      b.ids = {argmax(expected[s][t])};
      step.push_back(b);
    }
    Tensor logits = model->forward_batch(step, pool);
    ASSERT_EQ(logits.size(0), static_cast<int64_t>(prompts.size()));
    for (size_t s = 0; s < prompts.size(); ++s) {
      double err = test::relative_error(row(logits, static_cast<int64_t>(s)), expected[s][t + 1]);
      EXPECT_LT(err, kTolerance) << GetParam() << " decode step " << t << " of sequence " << s;
    }
  }
}

TEST(BatchedForwardErrors, RejectsBadBatches) {
  auto model = Model::load((std::filesystem::path(test::fixtures_dir()) / "golden" / "mixtral").string());
  PagedKvPool pool(model->config(), 4, 4);
  BatchSequence ok;
  ok.ids = {1, 2, 3};
  ok.block_table = {0};
  EXPECT_THROW(model->forward_batch({}, pool), InvalidArgument);
  BatchSequence empty = ok;
  empty.ids.clear();
  EXPECT_THROW(model->forward_batch({empty}, pool), InvalidArgument);
  BatchSequence too_long = ok;
  too_long.ids = {1, 2, 3, 4, 5};
  EXPECT_THROW(model->forward_batch({too_long}, pool), InvalidArgument);
  BatchSequence bad_block = ok;
  bad_block.block_table = {9};
  EXPECT_THROW(model->forward_batch({bad_block}, pool), InvalidArgument);
  BatchSequence bad_id = ok;
  bad_id.ids = {model->config().vocab_size};
  EXPECT_THROW(model->forward_batch({bad_id}, pool), InvalidArgument);
  EXPECT_THROW(PagedKvPool(model->config(), 0, 4), InvalidArgument);
  EXPECT_EQ(model->forward_batch({ok}, pool).size(0), 1);
  EXPECT_THROW(model->reconfigure_device(), InvalidArgument);  // a CPU model has no GPU switches to read
}

// forward_batch_sample draws each sequence's token from the logits forward_batch gives, with its own row
// settings (the CPU path; tests/gpu checks the device draw against this).
TEST(BatchedForwardSample, DrawsFromTheBatchLogits) {
  auto model = Model::load((std::filesystem::path(test::fixtures_dir()) / "golden" / "qwen3_moe").string());
  const int64_t vocab = model->config().vocab_size;
  std::vector<BatchSequence> batch(3);
  for (int i = 0; i < 3; ++i) {
    batch[i].ids = {3 + i, 17, 5 * i + 1, 9};
    batch[i].block_table = {i};
  }
  batch[1].want_logits = false;
  const std::vector<RowSampling> rows = {{0.f, 0, 1.f, 0.0}, {1.3f, 5, 0.9f, 0.61}};
  PagedKvPool a(model->config(), 3, 4), b(model->config(), 3, 4);
  Tensor logits = model->forward_batch(batch, a);
  ASSERT_EQ(logits.size(0), 2);
  std::vector<int64_t> want;
  for (int r = 0; r < 2; ++r) {
    want.push_back(ops::sample_row(logits.f32() + r * vocab, vocab, rows[r].temperature, rows[r].top_k,
                                   rows[r].top_p, rows[r].uniform));
  }
  EXPECT_EQ(model->forward_batch_sample(batch, b, rows), want);
  EXPECT_EQ(want[0], argmax(row(logits, 0)));
  // One settings row per sequence that wants logits, no more, no fewer.
  EXPECT_THROW(model->forward_batch_sample(batch, b, {rows[0]}), InvalidArgument);
  EXPECT_THROW(model->forward_batch_sample(batch, b, {rows[0], rows[1], rows[1]}), InvalidArgument);
}

// MLA caches the absorbed row on the CPU: one shared [latent | rotary key] row per token and layer, the values
// a view of its latent columns (also after the cache grows); the GPU pool holds the same rows in bf16.
TEST(BatchedForwardMla, CachesTheAbsorbedLatentRow) {
  auto model = Model::load((std::filesystem::path(test::fixtures_dir()) / "golden" / "deepseek_v3").string());
  const ModelConfig& c = model->config();
  const AttentionConfig& a = c.attention;
  KvCache cache = model->new_cache(2);
  const std::vector<int64_t> prompt = {1, 5, 9, 2, 7, 3, 8};
  model->forward(prompt, cache, false);  // grows the cache past its capacity of 2
  for (int l = 0; l < c.num_layers; ++l) {
    EXPECT_EQ(cache.keys(l).shape(), (Shape{cache.capacity(), 1, int64_t{a.kv_lora_rank} + a.qk_rope_head_dim}));
    EXPECT_EQ(cache.values(l).size(2), a.kv_lora_rank);
    EXPECT_EQ(cache.values(l).raw(), cache.keys(l).raw()) << "values must alias the keys' latent columns";
  }
  const int64_t bs = 16;
  EXPECT_EQ(PagedKvPool::bytes_per_block(c, bs, Device::kCpu),
            int64_t{c.num_layers} * bs * (a.kv_lora_rank + a.qk_rope_head_dim) * 4);
  // The GPU caches the same absorbed rows, in bf16.
  EXPECT_EQ(PagedKvPool::bytes_per_block(c, bs, Device::kCuda),
            int64_t{c.num_layers} * bs * (a.kv_lora_rank + a.qk_rope_head_dim) * 2);
  // A pool shaped for another model is refused.
  auto mixtral = Model::load((std::filesystem::path(test::fixtures_dir()) / "golden" / "mixtral").string());
  PagedKvPool wrong = mixtral->new_pool(4, 4);
  BatchSequence seq;
  seq.ids = {1, 2};
  seq.block_table = {0};
  EXPECT_ANY_THROW(model->forward_batch({seq}, wrong));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchedForward, ::testing::ValuesIn(test::golden_fixture_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace sy
