// Generation: token events -> text deltas, logprobs and the finish reason of one HTTP request.
#include "generation.h"

#include <algorithm>

namespace sy::serve {

Generation::Generation(CompletionRequest request, std::shared_ptr<RequestStream> stream, const Tokenizer* tokenizer,
                       std::vector<int64_t> stop_ids, int64_t prompt_tokens, std::string id,
                       Clock::time_point deadline)
    : request_(std::move(request)),
      stream_(std::move(stream)),
      text_(tokenizer, request_.stop),
      stop_ids_(std::move(stop_ids)),
      prompt_tokens_(prompt_tokens),
      id_(std::move(id)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()),
      deadline_(deadline) {}

Usage Generation::usage() const {
  return {prompt_tokens_, completion_tokens_, stream_->cached_prompt_tokens()};
}

void Generation::absorb(const std::vector<TokenEvent>& events, std::string& text, std::vector<RenderedToken>& tokens) {
  for (const TokenEvent& ev : events) {
    if (text_.stopped()) break;  // tokens after a stop string are dropped
    ++completion_tokens_;
    const bool is_stop = std::find(stop_ids_.begin(), stop_ids_.end(), ev.id) != stop_ids_.end();
    text += text_.push(ev.id, is_stop);
    if (request_.logprobs >= 0 || request_.return_token_ids) {
      RenderedToken t{ev.id, request_.logprobs >= 0 ? text_.token_text(ev.id) : std::string(), ev.logprob, {}};
      for (const auto& [id, lp] : ev.top) t.top.push_back({text_.token_text(id), lp});
      tokens.push_back(std::move(t));
    }
  }
}

bool Generation::next(std::string& text, std::vector<RenderedToken>& tokens, Clock::time_point until) {
  if (over_) return true;
  std::vector<TokenEvent> events;
  const bool arrived = stream_->wait(events, std::min(until, deadline_));
  absorb(events, text, tokens);
  if (text_.stopped()) {
    stream_->cancel();
    finish_ = "stop";
    over_ = true;
    return true;
  }
  if (!arrived && Clock::now() >= deadline_) {
    stream_->cancel();
    error_ = std::make_unique<ApiError>(504, "timeout", "the request did not finish within the server's timeout",
                                        "", "timeout");
    over_ = true;
    return true;
  }
  // Finished only once every event is drained (wait returns all pending events at once).
  const FinishReason reason = stream_->finish_reason();
  if (reason == FinishReason::kNone) return false;
  std::vector<TokenEvent> rest;
  stream_->wait(rest, Clock::now());
  absorb(rest, text, tokens);  // events pushed between the wait and the finish check
  over_ = true;
  if (text_.stopped()) {
    finish_ = "stop";
    return true;
  }
  text += text_.finish();
  switch (reason) {
    case FinishReason::kStop: finish_ = "stop"; break;
    case FinishReason::kLength: finish_ = "length"; break;
    case FinishReason::kCancelled:
      error_ = std::make_unique<ApiError>(503, "server_error", "the request was cancelled (server shutting down)",
                                          "", "cancelled");
      break;
    default:
      error_ = std::make_unique<ApiError>(500, "server_error", "generation failed: " + stream_->error());
  }
  return true;
}

}  // namespace sy::serve
