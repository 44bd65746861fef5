// The serving engine against single-sequence generation on the built-in model: 32 concurrent greedy requests
// of random lengths, run with continuous batching, chunked prefill, a waiting queue and (in the second test)
// a KV pool so small that sequences are preempted and recomputed, must produce the tokens of running each
// request alone. Tolerance: batching changes GEMM row counts, so logits may differ by float rounding; a
// sequence may therefore diverge only at a step where the reference's top-2 logit gap is below 1e-3
// (a near tie); everything before that step must be identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "switchyard/model/builtin.h"
#include "switchyard/serve/engine.h"

namespace sy::serve {
namespace {

constexpr float kTieGap = 1e-3f;

struct Reference {
  std::vector<int64_t> ids;
  std::vector<float> gaps;  // top-2 logit gap before each generated token
};

Reference run_alone(Model& model, const std::vector<int64_t>& prompt, int64_t max_tokens) {
  Reference r;
  KvCache cache = model.new_cache(static_cast<int64_t>(prompt.size()) + max_tokens);
  Tensor logits = model.forward(prompt, cache, false);
  const auto& eos = model.config().eos_token_ids;
  for (int64_t step = 0; step < max_tokens; ++step) {
    const float* l = logits.f32();
    const int64_t vocab = logits.size(1);
    std::vector<float> sorted(l, l + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    r.gaps.push_back(sorted[0] - sorted[1]);
    const int64_t next = std::max_element(l, l + vocab) - l;
    r.ids.push_back(next);
    if (std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    if (step + 1 < max_tokens) logits = model.forward({next}, cache, false);
  }
  return r;
}

void expect_matches(const std::vector<int64_t>& got, const Reference& ref, size_t request) {
  for (size_t i = 0; i < ref.ids.size(); ++i) {
    if (i >= got.size() || got[i] != ref.ids[i]) {
      EXPECT_LT(ref.gaps[i], kTieGap) << "request " << request << " diverged at step " << i
                                      << " where the reference is not a near tie";
      return;
    }
  }
  EXPECT_EQ(got.size(), ref.ids.size()) << "request " << request;
}

void run_concurrent(const EngineOptions& options, int64_t* preemptions) {
  auto model = make_builtin_model();
  std::mt19937 rng(11);
  const int64_t vocab = model->config().vocab_size;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<int64_t> max_tokens;
  std::vector<int64_t> shared(40);  // a common prefix for half the requests (prefix caching in play)
  for (auto& id : shared) id = 3 + static_cast<int64_t>(rng() % (vocab - 3));
  for (int i = 0; i < 32; ++i) {
    std::vector<int64_t> p = i % 2 ? shared : std::vector<int64_t>{};
    const int64_t extra = 1 + static_cast<int64_t>(rng() % 60);
    for (int64_t k = 0; k < extra; ++k) p.push_back(3 + static_cast<int64_t>(rng() % (vocab - 3)));
    prompts.push_back(p);
    max_tokens.push_back(1 + static_cast<int64_t>(rng() % 24));
  }
  std::vector<Reference> refs;
  for (size_t i = 0; i < prompts.size(); ++i) refs.push_back(run_alone(*model, prompts[i], max_tokens[i]));

  Engine engine(*model, options);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationParams p;
    p.prompt = prompts[i];
    p.max_tokens = max_tokens[i];
    p.stop_ids = model->config().eos_token_ids;
    streams.push_back(engine.submit(p));
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    std::vector<TokenEvent> events;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (streams[i]->finish_reason() == FinishReason::kNone) {
      ASSERT_TRUE(streams[i]->wait(events, deadline)) << "request " << i << " timed out";
    }
    streams[i]->wait(events, std::chrono::steady_clock::now());
    std::vector<int64_t> ids;
    for (const TokenEvent& e : events) ids.push_back(e.id);
    expect_matches(ids, refs[i], i);
    const FinishReason want = ids.size() == static_cast<size_t>(max_tokens[i]) &&
                                      std::find(model->config().eos_token_ids.begin(),
                                                model->config().eos_token_ids.end(),
                                                ids.back()) == model->config().eos_token_ids.end()
                                  ? FinishReason::kLength
                                  : FinishReason::kStop;
    EXPECT_EQ(streams[i]->finish_reason(), want) << "request " << i;
  }
  // Every block is back: nothing is referenced once all requests are done.
  for (int tries = 0; tries < 100 && !engine.idle(); ++tries) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EngineGauges g = engine.gauges();
  EXPECT_EQ(g.kv_blocks_in_use, 0);
  EXPECT_GT(g.prefix_hit_tokens, 0);
  *preemptions = g.preemptions;
}

TEST(ServeEngine, ThirtyTwoConcurrentGreedyRequestsMatchGeneratingAlone) {
  EngineOptions o;
  o.max_batch_tokens = 64;  // long prompts are prefilled in chunks alongside decodes
  o.max_seqs = 12;          // the rest wait in the queue
  o.num_blocks = 4096;
  int64_t preemptions = 0;
  run_concurrent(o, &preemptions);
  EXPECT_EQ(preemptions, 0);
}

TEST(ServeEngine, PreemptionByRecomputeKeepsResults) {
  EngineOptions o;
  o.max_batch_tokens = 96;
  o.max_seqs = 32;
  o.block_size = 4;
  o.num_blocks = 40;  // 160 tokens of KV for up to 32 sequences of up to 124 tokens: must preempt
  int64_t preemptions = 0;
  run_concurrent(o, &preemptions);
  EXPECT_GT(preemptions, 0);
}

}  // namespace
}  // namespace sy::serve
