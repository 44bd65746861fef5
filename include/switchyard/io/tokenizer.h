// Hugging Face tokenizer.json in C++: text -> token ids and back, exactly as the `tokenizers` library does it.
// Supports BPE models (byte-level as in GPT-2/Qwen/DeepSeek/gpt-oss, and byte_fallback + Metaspace as in
// Llama/Mistral), the common normalizers, pre-tokenizers, post-processors and decoders, and added/special tokens.
// Not here: training, offsets/alignments, padding/truncation, pair encodings, chat templates (see chat_template.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sy {

namespace tok {
struct TokenizerImpl;
}

class Tokenizer {
 public:
  // Loads a tokenizer.json. Throws IoError (unreadable), FormatError (malformed JSON or fields),
  // Unsupported (a model or component type this build does not implement).
  static Tokenizer from_file(const std::string& path);
  // Same from the JSON text itself; `what` names the source in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& what = "tokenizer.json");

  // Text -> ids. add_special_tokens applies the post-processor template (e.g. a leading <s>).
  // Throws InvalidArgument when `text` is not valid UTF-8. Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids -> text through the decoder. skip_special_tokens drops added tokens marked special.
  // Throws InvalidArgument for an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;  // added tokens first, then the model
  std::string id_to_token(int32_t id) const;                         // throws InvalidArgument if unknown
  bool is_special(int32_t id) const;                                 // an added token with special = true
  int32_t vocab_size() const;                                        // one past the largest id

 private:
  explicit Tokenizer(std::shared_ptr<const tok::TokenizerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const tok::TokenizerImpl> impl_;
};

// Incremental decoding for generation: feed ids one at a time and get only the text that is complete.
// Never returns part of a UTF-8 character: bytes of a character split over several byte-fallback or
// byte-level tokens are held back until the character is whole. Context-sensitive decoders (Metaspace's
// leading space, Strip) behave as if the whole sequence were decoded at once.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  // Adds one id; returns the newly completed text (often empty).
  std::string step(int32_t id);
  // Returns whatever is still held back (incomplete characters become U+FFFD) and resets the stream.
  std::string flush();

 private:
  Tokenizer tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // a window of recent ids: [0, prefix_index_) is context already emitted
  std::string prefix_;        // decode(ids_) at the time of the last emission
  size_t prefix_index_ = 0;
};

}  // namespace sy
