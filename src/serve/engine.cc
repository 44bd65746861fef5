// Engine: the continuous-batching loop (admission, chunked prefill, decode, preemption by recompute,
// cancellation) around Model::forward_batch and the BlockManager.
#include "switchyard/serve/engine.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "switchyard/core/log.h"

namespace sy::serve {

using Clock = std::chrono::steady_clock;

struct Engine::Sequence {
  std::shared_ptr<RequestStream> stream;
  GenerationParams params;
  Sampler sampler;
  std::vector<int64_t> tokens;  // prompt, then generated tokens
  int64_t computed = 0;         // leading tokens whose keys/values are in `table`
  std::vector<int32_t> table;
  int64_t committed = 0;        // leading blocks registered in the prefix cache
  uint64_t last_hash = 0;
  int64_t generated = 0;
  uint64_t admitted = 0;        // admission order (0: never admitted)
  bool preempted = false, done = false;
  int64_t chunk = 0;            // tokens planned for this step
  Clock::time_point last_token;

  Sequence(std::shared_ptr<RequestStream> s, GenerationParams p)
      : stream(std::move(s)), params(std::move(p)), sampler(params.sampling), tokens(params.prompt) {}
};

Engine::Engine(Model& model, EngineOptions options, std::shared_ptr<ServerMetrics> metrics)
    : model_(model), options_(options), metrics_(std::move(metrics)) {
  SY_REQUIRE(options_.max_seqs > 0 && options_.max_queue > 0, InvalidArgument, "serve",
             "--max-seqs and the queue size must be positive");
  SY_REQUIRE(options_.max_batch_tokens >= options_.max_seqs, InvalidArgument, "serve", "--max-batch-tokens (",
             options_.max_batch_tokens, ") must be at least --max-seqs (", options_.max_seqs,
             ") so every running sequence can decode each step");
  SY_REQUIRE(options_.block_size > 0 && options_.block_size <= 1024, InvalidArgument, "serve",
             "the KV block size must be in [1, 1024], got ", options_.block_size);
  if (options_.num_blocks <= 0) {
    const int64_t per_block = PagedKvPool::bytes_per_block(model.config(), options_.block_size, model.device());
    options_.num_blocks = options_.kv_cache_bytes / per_block;
    SY_REQUIRE(options_.num_blocks > 0, InvalidArgument, "serve", "--kv-cache-gib is smaller than one KV block (",
               per_block, " bytes)");
  }
  pool_ = std::make_unique<PagedKvPool>(model.new_pool(options_.num_blocks, options_.block_size));
  blocks_ = std::make_unique<BlockManager>(options_.num_blocks, options_.block_size);
  gauges_.kv_blocks_total = options_.num_blocks;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(true); }

int64_t Engine::context_length() const { return model_.config().max_position_embeddings; }

std::shared_ptr<RequestStream> Engine::submit(GenerationParams params) {
  const int64_t n = static_cast<int64_t>(params.prompt.size()), vocab = model_.config().vocab_size;
  SY_REQUIRE(n > 0, InvalidArgument, "serve", "the prompt is empty");
  for (int64_t id : params.prompt) {
    SY_REQUIRE(id >= 0 && id < vocab, InvalidArgument, "serve", "prompt token ", id,
               " is outside the vocabulary [0, ", vocab, ")");
  }
  SY_REQUIRE(params.max_tokens >= 1, InvalidArgument, "serve", "max_tokens must be at least 1, got ",
             params.max_tokens);
  const int64_t ctx = context_length();
  SY_REQUIRE(ctx <= 0 || n + params.max_tokens <= ctx, InvalidArgument, "serve", "the prompt (", n,
             " tokens) plus max_tokens (", params.max_tokens, ") exceeds the model's context of ", ctx, " tokens");
  const int64_t blocks = (n + params.max_tokens + options_.block_size - 1) / options_.block_size;
  SY_REQUIRE(blocks <= options_.num_blocks, InvalidArgument, "serve", "the request needs ", blocks,
             " KV blocks but the pool has ", options_.num_blocks, "; raise --kv-cache-gib");
  SY_REQUIRE(params.top_logprobs <= 20, InvalidArgument, "serve", "at most 20 top logprobs, got ",
             params.top_logprobs);
  auto stream = std::make_shared<RequestStream>(next_id_.fetch_add(1));
  auto seq = std::make_unique<Sequence>(stream, std::move(params));  // validates sampling
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw make_error<Overloaded>("serve", "the server is shutting down");
    if (queued_.load() >= options_.max_queue) {
      throw make_error<Overloaded>("serve", "the request queue is full (", options_.max_queue,
                                   " waiting); retry later");
    }
    ++queued_;
    incoming_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return stream;
}

void Engine::shutdown(bool cancel_running) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (cancel_running) cancel_all_ = true;
  }
  cv_.notify_all();
  std::lock_guard<std::mutex> lock(join_mu_);
  if (thread_.joinable()) thread_.join();
}

bool Engine::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return incoming_.empty() && gauges_.running == 0 && gauges_.waiting == 0;
}

EngineGauges Engine::gauges() const {
  std::lock_guard<std::mutex> lock(mu_);
  return gauges_;
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (running_.empty() && waiting_.empty()) {
        cv_.wait(lock, [&] { return stopping_ || !incoming_.empty(); });
        if (stopping_ && incoming_.empty()) break;
      }
    }
    try {
      step();
    } catch (const std::exception& e) {  // never let one bad step take the server down
      log_error("[serve] engine step failed: ", e.what());
      for (auto& s : running_) finish(*s, FinishReason::kError, e.what());
      running_.clear();
    }
  }
  // Whatever is left (only on shutdown) is cancelled.
  for (auto& s : running_) finish(*s, FinishReason::kCancelled);
  for (auto& s : waiting_) finish(*s, FinishReason::kCancelled);
  running_.clear();
  waiting_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& s : incoming_) s->stream->finish(FinishReason::kCancelled);
  incoming_.clear();
  gauges_.running = gauges_.waiting = 0;
}

void Engine::finish(Sequence& seq, FinishReason reason, const std::string& error) {
  if (seq.done) return;
  seq.done = true;
  if (!seq.table.empty()) blocks_->release(seq.table);
  if (metrics_ && seq.generated > 0) {
    metrics_->request_latency().observe(std::chrono::duration<double>(Clock::now() - seq.stream->submitted()).count());
  }
  seq.stream->finish(reason, error);
}

void Engine::preempt(Sequence& seq) {
  if (!seq.table.empty()) blocks_->release(seq.table);
  seq.computed = seq.committed = 0;
  seq.last_hash = 0;
  seq.preempted = true;
  ++preemptions_;
}

void Engine::commit_blocks(Sequence& seq) {
  const int64_t bs = options_.block_size;
  while ((seq.committed + 1) * bs <= seq.computed) {
    seq.last_hash = blocks_->commit(seq.table, seq.committed, seq.tokens, seq.last_hash);
    ++seq.committed;
  }
}

// Makes sure seq's table covers computed + chunk tokens, preempting newer unplanned running sequences when
// blocks run short. Returns false when it cannot (the caller preempts seq itself).
bool Engine::plan_sequence(Sequence& seq, int64_t chunk, size_t index) {
  const int64_t bs = options_.block_size;
  const int64_t need = (seq.computed + chunk + bs - 1) / bs - static_cast<int64_t>(seq.table.size());
  while (!blocks_->allocate(seq.table, need)) {
    // Victim: the most recently admitted running sequence not yet planned this step.
    Sequence* victim = nullptr;
    for (size_t i = index + 1; i < running_.size(); ++i) {
      Sequence* s = running_[i].get();
      if (!s->preempted && !s->done && s->chunk == 0 && (!victim || s->admitted > victim->admitted)) victim = s;
    }
    if (!victim) return false;
    preempt(*victim);
  }
  return true;
}

void Engine::emit(Sequence& seq, const float* logits, int64_t token) {
  const int64_t vocab = model_.config().vocab_size;
  TokenEvent ev;
  ev.id = logits ? seq.sampler.sample(logits, vocab) : token;
  if (logits && seq.params.top_logprobs >= 0) {
    double mx = *std::max_element(logits, logits + vocab), sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
    const double lse = mx + std::log(sum);
    ev.logprob = static_cast<float>(logits[ev.id] - lse);
    const int64_t k = std::min<int64_t>(seq.params.top_logprobs, vocab);
    std::vector<int64_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < k; ++i) ev.top.push_back({order[i], static_cast<float>(logits[order[i]] - lse)});
  }
  const int64_t id = ev.id;
  seq.tokens.push_back(id);
  ++seq.generated;
  const Clock::time_point now = Clock::now();
  if (metrics_) {
    if (seq.generated == 1) {
      metrics_->time_to_first_token().observe(std::chrono::duration<double>(now - seq.stream->submitted()).count());
    } else {
      metrics_->inter_token_latency().observe(std::chrono::duration<double>(now - seq.last_token).count());
    }
    metrics_->add_tokens(0, 1);
  }
  seq.last_token = now;
  seq.stream->push(std::move(ev));
  const auto& stop = seq.params.stop_ids;
  if (std::find(stop.begin(), stop.end(), id) != stop.end()) {
    finish(seq, FinishReason::kStop);
  } else if (seq.generated >= seq.params.max_tokens) {
    finish(seq, FinishReason::kLength);
  }
}

void Engine::step() {
  bool cancel_all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : incoming_) waiting_.push_back(std::move(s));
    incoming_.clear();
    cancel_all = cancel_all_;
  }
  // Cancelled requests leave first (client gone, stop string, timeout, shutdown).
  for (auto& s : running_) {
    if (cancel_all || s->stream->cancelled()) finish(*s, FinishReason::kCancelled);
  }
  for (auto& s : waiting_) {
    if (cancel_all || s->stream->cancelled()) {
      if (s->admitted == 0) --queued_;
      finish(*s, FinishReason::kCancelled);
    }
  }
  std::erase_if(running_, [](const auto& s) { return s->done; });
  std::erase_if(waiting_, [](const auto& s) { return s->done; });

  // Plan: decodes first (oldest first), then unfinished prefills, then admissions, within the token budget.
  std::stable_sort(running_.begin(), running_.end(), [](const auto& a, const auto& b) {
    const bool da = a->computed + 1 == static_cast<int64_t>(a->tokens.size());
    const bool db = b->computed + 1 == static_cast<int64_t>(b->tokens.size());
    return da != db ? da : a->admitted < b->admitted;
  });
  int64_t budget = options_.max_batch_tokens;
  std::vector<Sequence*> planned;
  for (auto& s : running_) s->chunk = 0;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& s = *running_[i];
    if (s.preempted) continue;
    const int64_t chunk = std::min<int64_t>(static_cast<int64_t>(s.tokens.size()) - s.computed, budget);
    if (!plan_sequence(s, chunk, i)) {
      preempt(s);
      continue;
    }
    s.chunk = chunk;
    budget -= chunk;
    planned.push_back(&s);
  }
  // Preempted sequences go back to the front of the queue, oldest first.
  std::vector<std::unique_ptr<Sequence>> back;
  for (auto& s : running_) {
    if (s->preempted) back.push_back(std::move(s));
  }
  std::erase_if(running_, [](const auto& s) { return s == nullptr; });
  std::sort(back.begin(), back.end(), [](const auto& a, const auto& b) { return a->admitted < b->admitted; });
  for (auto it = back.rbegin(); it != back.rend(); ++it) {
    (*it)->preempted = false;
    waiting_.push_front(std::move(*it));
  }
  // Admit waiting requests in FIFO order while they fit.
  const int64_t bs = options_.block_size;
  while (budget > 0 && static_cast<int64_t>(running_.size()) < options_.max_seqs && !waiting_.empty()) {
    Sequence& s = *waiting_.front();
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    uint64_t hash = 0;
    s.table = blocks_->match_prefix(s.tokens, len - 1, &hash);  // at least one token is recomputed for logits
    s.computed = static_cast<int64_t>(s.table.size()) * bs;
    s.committed = static_cast<int64_t>(s.table.size());
    s.last_hash = hash;
    const int64_t chunk = std::min<int64_t>(len - s.computed, budget);
    const int64_t need = (s.computed + chunk + bs - 1) / bs - static_cast<int64_t>(s.table.size());
    if (!blocks_->allocate(s.table, need)) {
      blocks_->release(s.table);
      s.computed = s.committed = 0;
      break;  // FIFO: nobody overtakes the head of the queue
    }
    blocks_->record_lookup(len - 1, s.computed);
    if (s.admitted == 0) {
      --queued_;
      s.stream->set_cached_prompt_tokens(s.computed);
      if (metrics_) metrics_->add_tokens(static_cast<int64_t>(s.params.prompt.size()), 0);
    }
    s.admitted = ++admit_counter_;
    s.chunk = chunk;
    budget -= chunk;
    planned.push_back(&s);
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }

  if (!planned.empty()) {
    std::vector<BatchSequence> batch(planned.size());
    int64_t tokens = 0;
    for (size_t i = 0; i < planned.size(); ++i) {
      Sequence& s = *planned[i];
      BatchSequence& b = batch[i];
      b.ids.assign(s.tokens.begin() + s.computed, s.tokens.begin() + s.computed + s.chunk);
      b.start = s.computed;
      b.block_table = s.table;
      b.want_logits = s.computed + s.chunk == static_cast<int64_t>(s.tokens.size());
      tokens += s.chunk;
    }
    // Tokens are sampled with the pass (on the GPU the logits then never leave the device) unless a request
    // wants logprobs, which need the logits here.
    bool want_logprobs = false;
    for (size_t i = 0; i < planned.size(); ++i) {
      want_logprobs |= batch[i].want_logits && planned[i]->params.top_logprobs >= 0;
    }
    Tensor logits;
    std::vector<int64_t> sampled;
    try {
      if (want_logprobs) {
        logits = model_.forward_batch(batch, *pool_);
      } else {
        std::vector<RowSampling> rows;
        for (size_t i = 0; i < planned.size(); ++i) {
          if (batch[i].want_logits) rows.push_back(planned[i]->sampler.next_row());
        }
        sampled = model_.forward_batch_sample(batch, *pool_, rows);
      }
    } catch (const std::exception& e) {
      log_error("[serve] batched forward failed: ", e.what());
      for (Sequence* s : planned) finish(*s, FinishReason::kError, e.what());
      planned.clear();
    }
    int64_t row = 0;
    for (size_t i = 0; i < planned.size(); ++i) {
      Sequence& s = *planned[i];
      s.computed += s.chunk;
      s.chunk = 0;
      commit_blocks(s);
      if (!batch[i].want_logits) continue;
      if (want_logprobs) {
        emit(s, logits.f32() + row++ * logits.size(1), -1);
      } else {
        emit(s, nullptr, sampled[row++]);
      }
    }
    ++steps_;
    batch_tokens_ += tokens;
  }
  std::erase_if(running_, [](const auto& s) { return s->done; });

  BlockStats bstats = blocks_->stats();
  std::lock_guard<std::mutex> lock(mu_);
  gauges_.running = static_cast<int64_t>(running_.size());
  gauges_.waiting = static_cast<int64_t>(waiting_.size() + incoming_.size());
  gauges_.kv_blocks_in_use = bstats.in_use;
  gauges_.kv_blocks_cached = bstats.cached_idle;
  gauges_.prefix_queried_tokens = bstats.prefix_queried_tokens;
  gauges_.prefix_hit_tokens = bstats.prefix_hit_tokens;
  gauges_.evictions = bstats.evictions;
  gauges_.preemptions = preemptions_;
  gauges_.steps = steps_;
  gauges_.batch_tokens = batch_tokens_;
  gauges_.expert_tokens = model_.expert_load().tokens;
}

}  // namespace sy::serve
