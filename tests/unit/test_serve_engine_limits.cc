// Serving engine limits and lifecycle on a tiny golden model: request validation, the bounded queue,
// cancellation freeing KV blocks, and shutdown cancelling what is in flight.
#include <gtest/gtest.h>

#include <filesystem>

#include "switchyard/serve/engine.h"
#include "test_util.h"

namespace sy::serve {
namespace {

std::unique_ptr<Model> tiny_model() {
  return Model::load((std::filesystem::path(test::fixtures_dir()) / "golden" / "mixtral").string());
}

GenerationParams params(std::vector<int64_t> prompt, int64_t max_tokens) {
  GenerationParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  return p;
}

FinishReason wait_done(RequestStream& s, std::vector<TokenEvent>& events) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (s.finish_reason() == FinishReason::kNone) {
    if (!s.wait(events, deadline)) return FinishReason::kNone;
  }
  s.wait(events, std::chrono::steady_clock::now());
  return s.finish_reason();
}

TEST(ServeEngineLimits, RejectsBadRequestsAndOptions) {
  auto model = tiny_model();
  EngineOptions o;
  o.num_blocks = 8;
  o.block_size = 4;
  Engine engine(*model, o);
  EXPECT_THROW(engine.submit(params({}, 4)), InvalidArgument);
  EXPECT_THROW(engine.submit(params({model->config().vocab_size}, 4)), InvalidArgument);
  EXPECT_THROW(engine.submit(params({1, 2}, 0)), InvalidArgument);
  EXPECT_THROW(engine.submit(params({1, 2}, 40)), InvalidArgument);  // needs 11 blocks, the pool has 8
  GenerationParams bad = params({1, 2}, 2);
  bad.sampling.temperature = -1.f;
  EXPECT_THROW(engine.submit(bad), InvalidArgument);
  EngineOptions tiny_budget;
  tiny_budget.max_seqs = 8;
  tiny_budget.max_batch_tokens = 4;
  EXPECT_THROW(Engine(*model, tiny_budget), InvalidArgument);
}

TEST(ServeEngineLimits, FullQueueAnswersOverloadedAndShutdownCancels) {
  auto model = tiny_model();
  EngineOptions o;
  o.num_blocks = 64;
  o.max_seqs = 1;
  o.max_batch_tokens = 1;
  o.max_queue = 2;
  Engine engine(*model, o);
  std::vector<std::shared_ptr<RequestStream>> streams;
  int overloaded = 0;
  for (int i = 0; i < 6; ++i) {
    try {
      streams.push_back(engine.submit(params({1, 2, 3}, 200)));
    } catch (const Overloaded&) {
      ++overloaded;
    }
  }
  EXPECT_GE(overloaded, 3);  // at most one running and two waiting
  engine.shutdown(true);
  for (auto& s : streams) {
    std::vector<TokenEvent> ev;
    EXPECT_EQ(wait_done(*s, ev), FinishReason::kCancelled);
  }
  EXPECT_THROW(engine.submit(params({1}, 1)), Overloaded);
}

TEST(ServeEngineLimits, CancellationFreesBlocks) {
  auto model = tiny_model();
  EngineOptions o;
  o.num_blocks = 64;
  o.block_size = 4;
  Engine engine(*model, o);
  // Cancel right after the first token. A tiny model may still finish its 250 tokens first on a fast
  // machine, so try a few times; every outcome must leave no block referenced.
  int cancelled = 0;
  std::vector<TokenEvent> ev;
  for (int attempt = 0; attempt < 5 && cancelled == 0; ++attempt) {
    auto s = engine.submit(params({1, 2, 3, 4, 5}, 250));
    ev.clear();
    ASSERT_TRUE(s->wait(ev, std::chrono::steady_clock::now() + std::chrono::seconds(30)));
    s->cancel();
    const FinishReason r = wait_done(*s, ev);
    EXPECT_TRUE(r == FinishReason::kCancelled || r == FinishReason::kLength || r == FinishReason::kStop);
    cancelled += r == FinishReason::kCancelled;
    for (int i = 0; i < 200 && engine.gauges().kv_blocks_in_use > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(engine.gauges().kv_blocks_in_use, 0);
  }
  EXPECT_GT(cancelled, 0) << "no attempt was cancelled before finishing";
  // Length-limited requests finish with kLength and exactly max_tokens tokens unless eos comes first.
  auto t = engine.submit(params({1, 2, 3}, 5));
  ev.clear();
  FinishReason r = wait_done(*t, ev);
  EXPECT_TRUE(r == FinishReason::kLength || r == FinishReason::kStop);
  EXPECT_LE(ev.size(), 5u);
}

}  // namespace
}  // namespace sy::serve
