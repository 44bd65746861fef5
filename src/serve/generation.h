// Generation: one HTTP request's view of its engine request. Pulls token events from the RequestStream,
// turns them into text (TextStream, stop strings) and rendered logprobs, and knows how the request ended.
// Used by both the whole-response and the server-sent-events paths.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/serve/openai_protocol.h"
#include "switchyard/serve/request_stream.h"
#include "text_stream.h"

namespace sy::serve {

class Generation {
 public:
  using Clock = std::chrono::steady_clock;
  Generation(CompletionRequest request, std::shared_ptr<RequestStream> stream, const Tokenizer* tokenizer,
             std::vector<int64_t> stop_ids, int64_t prompt_tokens, std::string id, Clock::time_point deadline);
  ~Generation() { stream_->cancel(); }  // a handler that goes away (client gone) frees the engine's blocks

  // New text and tokens since the last call, waiting at most until `until`. Returns true once the request
  // is over (then finish_reason() / error() say how).
  bool next(std::string& text, std::vector<RenderedToken>& tokens, Clock::time_point until);
  const std::string& finish_reason() const { return finish_; }   // "stop" or "length" when it ended well
  const ApiError* error() const { return error_.get(); }         // set when it ended badly
  Usage usage() const;
  const CompletionRequest& request() const { return request_; }
  const std::string& id() const { return id_; }
  int64_t created() const { return created_; }
  void cancel() { stream_->cancel(); }

 private:
  void absorb(const std::vector<TokenEvent>& events, std::string& text, std::vector<RenderedToken>& tokens);

  CompletionRequest request_;
  std::shared_ptr<RequestStream> stream_;
  TextStream text_;
  std::vector<int64_t> stop_ids_;
  int64_t prompt_tokens_, completion_tokens_ = 0;
  std::string id_;
  int64_t created_;
  Clock::time_point deadline_;
  bool over_ = false;
  std::string finish_;
  std::unique_ptr<ApiError> error_;
};

}  // namespace sy::serve
