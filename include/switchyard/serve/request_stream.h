// RequestStream: the channel between the engine loop (producer of tokens) and the HTTP handler that waits on
// one request (consumer). Thread-safe. The consumer may cancel at any time (client gone, stop string seen,
// timeout); the engine frees the request's KV blocks at its next step.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace sy::serve {

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct TokenEvent {
  int64_t id = 0;
  float logprob = 0.f;                          // log p(id) under the model (temperature 1)
  std::vector<std::pair<int64_t, float>> top;   // top logprobs, most likely first (when asked for)
};

class RequestStream {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RequestStream(uint64_t id) : id_(id), submitted_(Clock::now()) {}
  uint64_t id() const { return id_; }
  Clock::time_point submitted() const { return submitted_; }

  // Consumer: moves new events into `out`; returns true when something arrived or the request finished,
  // false when `deadline` passed first.
  bool wait(std::vector<TokenEvent>& out, Clock::time_point deadline);
  FinishReason finish_reason() const;
  std::string error() const;
  int64_t cached_prompt_tokens() const { return cached_prompt_tokens_.load(); }
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

  // Producer (engine loop).
  void push(TokenEvent event);
  void finish(FinishReason reason, std::string error = {});
  void set_cached_prompt_tokens(int64_t n) { cached_prompt_tokens_.store(n); }

 private:
  const uint64_t id_;
  const Clock::time_point submitted_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<TokenEvent> pending_;
  FinishReason finish_ = FinishReason::kNone;
  std::string error_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> cached_prompt_tokens_{0};
};

}  // namespace sy::serve
