// Engine: continuous batching over one Model. A loop thread runs one batched forward per step: every running
// sequence contributes its next token (decode) or its next prompt chunk (chunked prefill) within a token
// budget; waiting requests join FIFO between steps; KV blocks come from a BlockManager with prefix caching;
// when blocks run out the newest running sequence is preempted and later recomputed (its prefix blocks are
// usually still cached). Requests are cancelled through their RequestStream.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "switchyard/core/error.h"
#include "switchyard/model/generate.h"
#include "switchyard/model/model.h"
#include "switchyard/serve/block_manager.h"
#include "switchyard/serve/metrics.h"
#include "switchyard/serve/request_stream.h"

namespace sy::serve {

// The waiting queue is full or the engine is shutting down (HTTP 503).
class Overloaded : public Error { public: using Error::Error; };

struct EngineOptions {
  int64_t max_batch_tokens = 256;  // tokens per forward step (decodes first, then prefill chunks)
  int64_t max_seqs = 64;           // running sequences
  int64_t max_queue = 256;         // waiting requests; more are refused with Overloaded
  int64_t block_size = 16;         // tokens per KV block
  int64_t num_blocks = 0;          // KV pool size; 0 = derive from kv_cache_bytes
  int64_t kv_cache_bytes = int64_t{1} << 30;
};

struct GenerationParams {
  std::vector<int64_t> prompt;
  int64_t max_tokens = 16;
  SamplingOptions sampling;
  std::vector<int64_t> stop_ids;  // end-of-sequence ids (the model's eos by default)
  int top_logprobs = -1;          // -1: no logprobs; 0..20: sampled token's logprob and this many alternatives
};

class Engine {
 public:
  // Validates options (InvalidArgument) and starts the loop thread. `metrics` may be null.
  Engine(Model& model, EngineOptions options, std::shared_ptr<ServerMetrics> metrics = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. Throws InvalidArgument (empty prompt, ids outside the vocabulary, prompt + max_tokens
  // beyond the context or the KV pool) or Overloaded (queue full, shutting down).
  std::shared_ptr<RequestStream> submit(GenerationParams params);
  // Stops admitting; with `cancel_running` cancels everything in flight, else lets it finish. Joins the loop
  // once nothing is in flight. Idempotent.
  void shutdown(bool cancel_running);
  bool idle() const;  // nothing running or waiting
  EngineGauges gauges() const;
  const EngineOptions& options() const { return options_; }
  int64_t context_length() const;
  const ModelConfig& config() const { return model_.config(); }
  // Tokens the KV pool can hold for one sequence.
  int64_t kv_capacity_tokens() const { return options_.num_blocks * options_.block_size; }

 private:
  struct Sequence;
  void loop();
  void step();
  bool plan_sequence(Sequence& seq, int64_t chunk, size_t index);
  void preempt(Sequence& seq);
  void finish(Sequence& seq, FinishReason reason, const std::string& error = {});
  // Streams the sequence's next token: `token` as sampled with the pass, or, when the request wants logprobs,
  // sampled here from `logits` (vocab,) with them.
  void emit(Sequence& seq, const float* logits, int64_t token);
  void commit_blocks(Sequence& seq);

  Model& model_;
  EngineOptions options_;
  std::shared_ptr<ServerMetrics> metrics_;
  std::unique_ptr<PagedKvPool> pool_;
  std::unique_ptr<BlockManager> blocks_;

  mutable std::mutex mu_;  // guards incoming_, stopping_, gauges_
  std::mutex join_mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> incoming_;
  bool stopping_ = false, cancel_all_ = false, joined_ = false;
  EngineGauges gauges_;
  std::atomic<int64_t> queued_{0};  // incoming + waiting
  std::atomic<uint64_t> next_id_{1};

  // Loop-thread state.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  uint64_t admit_counter_ = 0;
  int64_t preemptions_ = 0, steps_ = 0, batch_tokens_ = 0;
  std::thread thread_;
};

}  // namespace sy::serve
