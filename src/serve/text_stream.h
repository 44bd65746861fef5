// TextStream: turns a request's generated token ids into text deltas for the client. Decodes incrementally
// (never splitting a UTF-8 character), drops end-of-sequence ids from the text, and applies the request's stop
// strings: text that could still become a stop string is held back, and the text ends before the first stop
// string found. Without a tokenizer, tokens render as space-separated ids.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "switchyard/io/tokenizer.h"

namespace sy::serve {

class TextStream {
 public:
  TextStream(const Tokenizer* tokenizer, std::vector<std::string> stops);
  // Adds a token (`is_stop_id`: an end-of-sequence id, not rendered); returns text safe to send now.
  std::string push(int64_t id, bool is_stop_id);
  // The generation ended: returns whatever was held back (unless a stop string cut it).
  std::string finish();
  bool stopped() const { return stopped_; }   // a stop string was found
  const std::string& text() const { return text_; }  // everything released so far
  // Text of one token on its own (logprobs).
  std::string token_text(int64_t id) const;

 private:
  std::string release(bool final);

  const Tokenizer* tokenizer_;
  std::optional<StreamDecoder> decoder_;
  std::vector<std::string> stops_;
  size_t hold_ = 0;        // longest stop string minus one
  std::string pending_;    // decoded, not yet released
  std::string text_;
  bool stopped_ = false, first_ = true;
};

}  // namespace sy::serve
