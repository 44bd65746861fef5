// RequestStream: a mutex + condition variable queue of token events with a terminal finish reason.
#include "switchyard/serve/request_stream.h"

namespace sy::serve {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

bool RequestStream::wait(std::vector<TokenEvent>& out, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_until(lock, deadline, [&] { return !pending_.empty() || finish_ != FinishReason::kNone; })) {
    return false;
  }
  for (TokenEvent& e : pending_) out.push_back(std::move(e));
  pending_.clear();
  return true;
}

FinishReason RequestStream::finish_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finish_;
}

std::string RequestStream::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void RequestStream::push(TokenEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(event));
  }
  cv_.notify_all();
}

void RequestStream::finish(FinishReason reason, std::string error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_ != FinishReason::kNone) return;
    finish_ = reason;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

}  // namespace sy::serve
