// TextStream: incremental detokenization with stop-string hold-back.
#include "text_stream.h"

#include <algorithm>

namespace sy::serve {

TextStream::TextStream(const Tokenizer* tokenizer, std::vector<std::string> stops)
    : tokenizer_(tokenizer), stops_(std::move(stops)) {
  if (tokenizer_) decoder_.emplace(*tokenizer_, true);
  for (const std::string& s : stops_) hold_ = std::max(hold_, s.size() - 1);
}

std::string TextStream::token_text(int64_t id) const {
  if (!tokenizer_) return std::to_string(id);
  const int32_t one = static_cast<int32_t>(id);
  return tokenizer_->decode(std::span<const int32_t>(&one, 1), false);
}

std::string TextStream::push(int64_t id, bool is_stop_id) {
  if (stopped_ || is_stop_id) return {};
  if (decoder_) {
    pending_ += decoder_->step(static_cast<int32_t>(id));
  } else {
    if (!first_) pending_ += ' ';
    pending_ += std::to_string(id);
  }
  first_ = false;
  return release(false);
}

std::string TextStream::finish() {
  if (stopped_) return {};
  if (decoder_) pending_ += decoder_->flush();
  return release(true);
}

std::string TextStream::release(bool final) {
  // A stop string may straddle released and pending text: search from hold_ bytes before the pending part.
  if (!stops_.empty()) {
    const size_t back = std::min(hold_, text_.size());
    const std::string window = text_.substr(text_.size() - back) + pending_;
    size_t cut = std::string::npos;
    for (const std::string& s : stops_) cut = std::min(cut, window.find(s));
    if (cut != std::string::npos) {
      stopped_ = true;
      // Released text never contains a whole stop string, so the cut lies in the pending part.
      std::string out = cut > back ? pending_.substr(0, cut - back) : std::string();
      pending_.clear();
      text_ += out;
      return out;
    }
  }
  size_t n = pending_.size();
  if (!final && hold_ > 0) {
    n = pending_.size() > hold_ ? pending_.size() - hold_ : 0;
    while (n > 0 && n < pending_.size() && (static_cast<unsigned char>(pending_[n]) & 0xC0) == 0x80) --n;
  }
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  text_ += out;
  return out;
}

}  // namespace sy::serve
